"""Audit events (PS3.15 A.5): what the node records, independent of storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dicom_node.domain.enums import AuditOutcome


class AuditEventCode(StrEnum):
    """PS3.15 A.5.3 / CID 400 event IDs used by the node."""

    APPLICATION_ACTIVITY = "110100"
    AUDIT_LOG_USED = "110101"
    INSTANCES_ACCESSED = "110103"
    INSTANCES_TRANSFERRED = "110104"
    # DICOM Study Deleted: retention removed a study's instances
    STUDY_DELETED = "110105"
    EXPORT = "110106"
    ORDER_RECORD = "110109"
    PATIENT_RECORD = "110110"
    PROCEDURE_RECORD = "110111"
    QUERY = "110112"
    SECURITY_ALERT = "110113"
    USER_AUTHENTICATION = "110114"


class SecurityAlertType(StrEnum):
    """PS3.15 A.5.3.11 / CID 401 event type codes of a Security Alert (110113), kept
    in the event's ``details["event_type"]``."""

    # an association or request refused: the calling AE is not one the node knows
    NODE_AUTHENTICATION = "110126"
    # a known AE asked for what only another may do (an MPPS step it did not create)
    USE_OF_RESTRICTED_FUNCTION = "110132"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit event as the services describe it; the db layer persists it."""

    event_code: AuditEventCode
    action: str
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    actor: str | None = None
    actor_user_id: int | None = None
    actor_role: str | None = None
    source_address: str | None = None
    target_class: str | None = None
    target_id: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- vocabulary
# Every audit event names who acted (an Actor) and what it was about (a target
# kind and id, and the patient/study it concerns). Services build events with
# the functions below instead of filling AuditRecord by hand, so the same kind
# of target is always named the same way and an actor is always one of three
# shapes: a signed-in user, a DICOM peer, or the node itself.


class SystemActor(StrEnum):
    """The node acting on its own: the ``actor`` value of events no person or
    peer caused. Fixed names, so an auditor can filter on them."""

    # a scheduled job (stability, escalation, stale orders, rematch, retention...)
    SCHEDULER = "scheduler"
    # an operator's command on the node's host (dicom-node user/demo/restore...)
    CLI = "cli"
    IMPORT = "import"
    REINDEX = "reindex"
    VERIFY_REPAIR = "verify-repair"
    # the DICOM receiver: what an arriving image sets off in the workflow (an
    # order matched, its exam started); the peer's own events name its AE title
    DICOM = "dicom"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: the actor fields of an AuditRecord.

    ``role`` is the user's role for people, ``None`` for peers and the node.
    ``name`` is ``None`` only for a peer whose AE title is not known (a failed
    TLS handshake, several peers counted in one event)."""

    name: str | None
    user_id: int | None = None
    role: str | None = None
    address: str | None = None

    @classmethod
    def user(cls, user_id: int, username: str, role: str, address: str | None = None) -> Actor:
        return cls(name=username, user_id=user_id, role=role, address=address)

    @classmethod
    def peer(cls, ae_title: str | None, address: str | None = None) -> Actor:
        """A DICOM peer, named by its calling AE title (already sanitised by the
        SCP layer: printable, at most 16 characters); ``address`` is
        ``host:port``, or the host alone for refusals counted per host. No AE
        title (``None`` or empty): the peer is known by its address only."""
        return cls(name=ae_title or None, address=address)

    @classmethod
    def claimant(
        cls, username: str, user_id: int | None = None, address: str | None = None
    ) -> Actor:
        """Someone not signed in who claims to be ``username`` (a failed
        sign-in, the lock it causes): no role, since nothing was proven;
        ``user_id`` when the name is an account's."""
        return cls(name=username, user_id=user_id, address=address)

    @classmethod
    def system(cls, which: SystemActor) -> Actor:
        """The node itself; ``which`` is checked (a name outside SystemActor is
        a ValueError, so no free-text actor slips in through a plain string)."""
        return cls(name=SystemActor(which).value)


class TargetKind(StrEnum):
    """The ``target_class`` of an event: the kind of record it is about."""

    ORDER = "ImagingRequest"
    STUDY = "DicomStudy"
    INSTANCE = "DicomInstance"
    WORK_ITEM = "WorklistItem"
    REPORT = "Report"
    CRITICAL_COMMUNICATION = "CriticalResultCommunication"
    PROCEDURE_STEP = "PerformedProcedureStep"
    STORAGE_COMMITMENT = "StorageCommitment"
    USER = "User"
    AE = "AE"
    AUDIT_TRAIL = "AuditEvent"
    BACKUP = "backup"
    IMAGING_CENTER = "ImagingCenter"
    MODALITY = "Modality"
    # a DICOM service refused to a peer (target_id: the service, e.g. "storage")
    DICOM_SERVICE = "DICOM service"
    # the level of a C-FIND, C-MOVE or C-GET, or of a search over the index
    PATIENT_LEVEL = "PATIENT"
    STUDY_LEVEL = "STUDY"
    SERIES_LEVEL = "SERIES"
    IMAGE_LEVEL = "IMAGE"
    # a Modality Worklist query
    MODALITY_WORKLIST = "WORKLIST"


@dataclass(frozen=True, slots=True)
class Subject:
    """The patient and study an event concerns (PHI: kept in the trail, never
    in a log line)."""

    patient_id: str | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None


NO_SUBJECT = Subject()


def audit_event(
    code: AuditEventCode,
    action: str,
    actor: Actor,
    target: TargetKind | None,
    target_id: object,
    subject: Subject = NO_SUBJECT,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """The one way an event is put together; the per-kind builders below fix
    the code that kind of target is filed under. ``target`` ``None``: the event
    is about no one record (an import of many files, a query refused before
    its level was known)."""
    return AuditRecord(
        event_code=code,
        action=action,
        outcome=outcome,
        actor=actor.name,
        actor_user_id=actor.user_id,
        actor_role=actor.role,
        source_address=actor.address,
        target_class=None if target is None else target.value,
        target_id=None if target_id is None else str(target_id),
        patient_id=subject.patient_id,
        study_instance_uid=subject.study_instance_uid,
        accession_number=subject.accession_number,
        reason=reason,
        details=details or {},
    )


def order_event(
    action: str,
    actor: Actor,
    order_id: int,
    subject: Subject,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """An order changed (110109 Order Record)."""
    return audit_event(
        AuditEventCode.ORDER_RECORD,
        action,
        actor,
        TargetKind.ORDER,
        order_id,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def procedure_event(
    action: str,
    actor: Actor,
    target: TargetKind,
    target_id: object,
    subject: Subject,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A study's procedure moved on: its states, its work items, its MPPS
    (110111 Procedure Record)."""
    return audit_event(
        AuditEventCode.PROCEDURE_RECORD,
        action,
        actor,
        target,
        target_id,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def patient_record_event(
    action: str,
    actor: Actor,
    target: TargetKind,
    target_id: object,
    subject: Subject,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A report, its versions or its critical-result record was written or read
    (110110 Patient Record)."""
    return audit_event(
        AuditEventCode.PATIENT_RECORD,
        action,
        actor,
        target,
        target_id,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def security_event(
    action: str,
    actor: Actor,
    target: TargetKind,
    target_id: object,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A change to who may do what, or a refusal (110113 Security Alert)."""
    return audit_event(
        AuditEventCode.SECURITY_ALERT,
        action,
        actor,
        target,
        target_id,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def application_activity_event(
    action: str,
    actor: Actor,
    target: TargetKind | None,
    target_id: object = None,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """The node's own data changed as a whole: a restore (target: the
    backup), a repair of the store (no target) (110100 Application Activity)."""
    return audit_event(
        AuditEventCode.APPLICATION_ACTIVITY,
        action,
        actor,
        target,
        target_id,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def audit_log_used_event(
    actor: Actor, filters: dict[str, Any], target_id: object = None
) -> AuditRecord:
    """Someone read the trail, with these filters (110101 Audit Log Used);
    ``target_id``: the one event read, if one."""
    return audit_event(
        AuditEventCode.AUDIT_LOG_USED,
        "audit_log_read",
        actor,
        TargetKind.AUDIT_TRAIL,
        target_id,
        details={"filters": filters},
    )


def instances_accessed_event(
    action: str,
    actor: Actor,
    study_pk: int,
    subject: Subject,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A study was read, corrected or rejected (110103 Instances Accessed)."""
    return audit_event(
        AuditEventCode.INSTANCES_ACCESSED,
        action,
        actor,
        TargetKind.STUDY,
        study_pk,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def transfer_event(
    action: str,
    actor: Actor,
    target: TargetKind | None,
    target_id: object = None,
    subject: Subject = NO_SUBJECT,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Instances came in: an association's C-STOREs, an import, a resend with
    other content, a storage commitment (110104 Instances Transferred)."""
    return audit_event(
        AuditEventCode.INSTANCES_TRANSFERRED,
        action,
        actor,
        target,
        target_id,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def study_deleted_event(
    action: str,
    actor: Actor,
    study_pk: int,
    subject: Subject,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A study's instances were removed (110105 DICOM Study Deleted)."""
    return audit_event(
        AuditEventCode.STUDY_DELETED,
        action,
        actor,
        TargetKind.STUDY,
        study_pk,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def export_event(
    action: str,
    actor: Actor,
    target: TargetKind | None,
    target_id: object = None,
    subject: Subject = NO_SUBJECT,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Instances left the node: a C-MOVE or C-GET (target: the level asked),
    a backup (110106 Export)."""
    return audit_event(
        AuditEventCode.EXPORT,
        action,
        actor,
        target,
        target_id,
        subject,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def query_event(
    action: str,
    actor: Actor,
    target: TargetKind | None,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Someone searched: a C-FIND or MWL query (target: its level), a search
    or listing over HTTP (target: the kind listed). The keys or filters, never
    the results (110112 Query)."""
    return audit_event(
        AuditEventCode.QUERY,
        action,
        actor,
        target,
        None,
        outcome=outcome,
        reason=reason,
        details=details,
    )


def authentication_event(
    action: str,
    actor: Actor,
    user_id: int | None,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """A sign-in, a sign-out or an account change, about the account
    ``user_id`` (``None``: a sign-in with a name no account has) (110114 User
    Authentication)."""
    return audit_event(
        AuditEventCode.USER_AUTHENTICATION,
        action,
        actor,
        TargetKind.USER,
        user_id,
        outcome=outcome,
        reason=reason,
        details=details,
    )
