"""The audit vocabulary (``dicom_node/domain/audit.py``): one way to build an event.

- No module of ``dicom_node/`` or ``api/`` but the vocabulary itself constructs
  an ``AuditRecord`` (read from the source, AST, no imports run): every event is
  built by ``audit_event`` or a per-kind builder, so one kind of target is always
  named the same way and an actor is always a user, a peer or the node.
- Each builder files its kind under its PS3.15 event code and target class, and
  the actor shapes fill the actor fields as the trail stores them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dicom_node.domain.audit import (
    NO_SUBJECT,
    Actor,
    AuditEventCode,
    AuditRecord,
    Subject,
    SystemActor,
    TargetKind,
    application_activity_event,
    audit_event,
    audit_log_used_event,
    authentication_event,
    export_event,
    instances_accessed_event,
    order_event,
    patient_record_event,
    procedure_event,
    query_event,
    security_event,
    study_deleted_event,
    transfer_event,
)
from dicom_node.domain.enums import AuditOutcome
from tests.support import REPO

PACKAGES = ("dicom_node", "api")
VOCABULARY = Path("dicom_node/domain/audit.py")
# modules still allowed to build an AuditRecord by hand: none
ALLOWED: frozenset[Path] = frozenset()


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _constructions(tree: ast.AST) -> Iterator[ast.Call]:
    """Calls of ``AuditRecord(...)``, also as ``module.AuditRecord(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "AuditRecord":
                yield node


def hand_built_records() -> list[str]:
    offenders = []
    for path in _sources():
        relative = path.relative_to(REPO)
        if relative == VOCABULARY or relative in ALLOWED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{relative}:{call.lineno}" for call in _constructions(tree)]
    return offenders


def test_no_module_builds_an_audit_record_by_hand() -> None:
    offenders = hand_built_records()
    assert not offenders, (
        "build audit events with the vocabulary of dicom_node/domain/audit.py "
        "(audit_event or a per-kind builder), not AuditRecord(...):\n" + "\n".join(offenders)
    )


def test_the_check_sees_a_hand_built_record() -> None:
    """A check that cannot fail is no check: both spellings are found, a mere
    mention (an annotation, an import) is not."""
    planted = ast.parse(
        "from dicom_node.domain import audit\n"
        "from dicom_node.domain.audit import AuditRecord\n"
        "def f(r: AuditRecord) -> AuditRecord:\n"
        "    a = AuditRecord(event_code='110100', action='x')\n"
        "    return audit.AuditRecord(event_code='110100', action='y')\n"
    )
    assert [call.lineno for call in _constructions(planted)] == [4, 5]


# --------------------------------------------------------------------------- actors

USER = Actor.user(7, "ann", "radiologist", "10.0.0.1")
PEER = Actor.peer("CT_MAIN_1", "10.0.0.2:104")
NODE = Actor.system(SystemActor.SCHEDULER)
SUBJECT = Subject(patient_id="P1", study_instance_uid="1.2.3", accession_number="A1")


def _actor_fields(record: AuditRecord) -> tuple[object, ...]:
    return (record.actor, record.actor_user_id, record.actor_role, record.source_address)


@pytest.mark.parametrize(
    ("actor", "fields"),
    [
        (USER, ("ann", 7, "radiologist", "10.0.0.1")),
        (PEER, ("CT_MAIN_1", None, None, "10.0.0.2:104")),
        (NODE, ("scheduler", None, None, None)),
        (Actor.claimant("mallory", None, "10.0.0.3"), ("mallory", None, None, "10.0.0.3")),
        (Actor.claimant("ann", 7, "10.0.0.3"), ("ann", 7, None, "10.0.0.3")),
        # a failed TLS handshake: no AE title yet, the peer is its address
        (Actor.peer("", "10.0.0.4:2762"), (None, None, None, "10.0.0.4:2762")),
        (Actor.peer(None, "10.0.0.4"), (None, None, None, "10.0.0.4")),
    ],
    ids=["user", "peer", "system", "claimant", "claimant-known", "peer-no-ae", "peer-host"],
)
def test_actor_shapes_fill_the_actor_fields(actor: Actor, fields: tuple[object, ...]) -> None:
    record = audit_event(AuditEventCode.QUERY, "query", actor, None, None)
    assert _actor_fields(record) == fields


def test_the_node_acts_under_fixed_names_only() -> None:
    assert [Actor.system(which).name for which in SystemActor] == [
        "scheduler",
        "cli",
        "import",
        "reindex",
        "verify-repair",
        "dicom",
    ]
    # a plain string is checked, so no free text becomes a system actor
    assert Actor.system("reindex").name == "reindex"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interop-tests"):
        Actor.system("interop-tests")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- builders

Builder = Callable[[], AuditRecord]

# each builder: the code it files under and the target class it names
KINDS: list[tuple[str, Builder, AuditEventCode, str | None]] = [
    (
        "application-activity",
        lambda: application_activity_event("backup_restored", NODE, TargetKind.BACKUP),
        AuditEventCode.APPLICATION_ACTIVITY,
        "backup",
    ),
    (
        "application-activity-store",
        lambda: application_activity_event("integrity_repair", NODE, None),
        AuditEventCode.APPLICATION_ACTIVITY,
        None,
    ),
    (
        "audit-log-used",
        lambda: audit_log_used_event(USER, {"actor": "x"}, 5),
        AuditEventCode.AUDIT_LOG_USED,
        "AuditEvent",
    ),
    (
        "instances-accessed",
        lambda: instances_accessed_event("study_viewed", USER, 3, SUBJECT),
        AuditEventCode.INSTANCES_ACCESSED,
        "DicomStudy",
    ),
    (
        "instances-transferred",
        lambda: transfer_event("instances_received", PEER, TargetKind.STUDY, None, SUBJECT),
        AuditEventCode.INSTANCES_TRANSFERRED,
        "DicomStudy",
    ),
    (
        "instances-imported",
        lambda: transfer_event("instances_imported", Actor.system(SystemActor.IMPORT), None),
        AuditEventCode.INSTANCES_TRANSFERRED,
        None,
    ),
    (
        "study-deleted",
        lambda: study_deleted_event("study_images_purged", NODE, 3, SUBJECT),
        AuditEventCode.STUDY_DELETED,
        "DicomStudy",
    ),
    (
        "export",
        lambda: export_event("instances_exported", PEER, TargetKind.PATIENT_LEVEL),
        AuditEventCode.EXPORT,
        "PATIENT",
    ),
    (
        "order",
        lambda: order_event("order_created", USER, 17, SUBJECT),
        AuditEventCode.ORDER_RECORD,
        "ImagingRequest",
    ),
    (
        "patient-record",
        lambda: patient_record_event("report_read", USER, TargetKind.REPORT, 4, SUBJECT),
        AuditEventCode.PATIENT_RECORD,
        "Report",
    ),
    (
        "procedure",
        lambda: procedure_event("study_reopened", PEER, TargetKind.STUDY, 3, SUBJECT),
        AuditEventCode.PROCEDURE_RECORD,
        "DicomStudy",
    ),
    (
        "query",
        lambda: query_event("query", PEER, TargetKind.MODALITY_WORKLIST),
        AuditEventCode.QUERY,
        "WORKLIST",
    ),
    (
        "security-alert",
        lambda: security_event("request_refused", PEER, TargetKind.DICOM_SERVICE, "storage"),
        AuditEventCode.SECURITY_ALERT,
        "DICOM service",
    ),
    (
        "user-authentication",
        lambda: authentication_event("sign_in", USER, 7),
        AuditEventCode.USER_AUTHENTICATION,
        "User",
    ),
]


@pytest.mark.parametrize(
    ("build", "code", "target_class"),
    [kind[1:] for kind in KINDS],
    ids=[kind[0] for kind in KINDS],
)
def test_each_builder_files_its_kind_under_its_code(
    build: Builder, code: AuditEventCode, target_class: str | None
) -> None:
    record = build()
    assert (record.event_code, record.target_class) == (code, target_class)
    assert record.outcome == AuditOutcome.SUCCESS and record.details is not None


def test_every_event_code_has_a_builder() -> None:
    assert {kind[2] for kind in KINDS} == set(AuditEventCode)


def test_an_event_carries_its_subject_target_id_outcome_and_details() -> None:
    record = patient_record_event(
        "study_patient_conflict",
        PEER,
        TargetKind.STUDY,
        42,
        SUBJECT,
        outcome=AuditOutcome.MINOR_FAILURE,
        reason="other patient",
        details={"before": {"metadata_status": "ok"}},
    )
    assert record == AuditRecord(
        event_code=AuditEventCode.PATIENT_RECORD,
        action="study_patient_conflict",
        outcome=AuditOutcome.MINOR_FAILURE,
        actor="CT_MAIN_1",
        source_address="10.0.0.2:104",
        target_class="DicomStudy",
        target_id="42",
        patient_id="P1",
        study_instance_uid="1.2.3",
        accession_number="A1",
        reason="other patient",
        details={"before": {"metadata_status": "ok"}},
    )


def test_fixed_parts_of_a_kind() -> None:
    used = audit_log_used_event(USER, {"outcome": "success"})
    assert (used.action, used.target_id, used.details) == (
        "audit_log_read",
        None,
        {"filters": {"outcome": "success"}},
    )
    failed = authentication_event("sign_in_failed", Actor.claimant("nobody"), None)
    assert (failed.target_class, failed.target_id, failed.actor) == ("User", None, "nobody")
    # a query names the level or kind asked, never one record
    assert query_event("study_search", USER, TargetKind.STUDY_LEVEL).target_id is None
    no_subject = security_event("account_locked", USER, TargetKind.USER, 7)
    assert (no_subject.patient_id, no_subject.study_instance_uid) == (None, None)
    assert Subject() == NO_SUBJECT


def test_target_kinds_are_the_stored_target_classes() -> None:
    """The stored strings the trail's readers filter on (tests, docs/security.md)."""
    assert {kind.name: kind.value for kind in TargetKind} == {
        "ORDER": "ImagingRequest",
        "STUDY": "DicomStudy",
        "INSTANCE": "DicomInstance",
        "WORK_ITEM": "WorklistItem",
        "REPORT": "Report",
        "CRITICAL_COMMUNICATION": "CriticalResultCommunication",
        "PROCEDURE_STEP": "PerformedProcedureStep",
        "STORAGE_COMMITMENT": "StorageCommitment",
        "USER": "User",
        "AE": "AE",
        "AUDIT_TRAIL": "AuditEvent",
        "BACKUP": "backup",
        "IMAGING_CENTER": "ImagingCenter",
        "MODALITY": "Modality",
        "DICOM_SERVICE": "DICOM service",
        "PATIENT_LEVEL": "PATIENT",
        "STUDY_LEVEL": "STUDY",
        "SERIES_LEVEL": "SERIES",
        "IMAGE_LEVEL": "IMAGE",
        "MODALITY_WORKLIST": "WORKLIST",
    }
