"""Study completeness: receiving -> quiet -> complete, with the evidence recorded.

The state lives in the database, so whichever node (or restarted process) runs
the job next carries on. Unlike a per-process inactivity timer, a study whose
order has an MPPS still IN PROGRESS stays quiet instead of being declared
complete on a pause between series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    PerformedProcedureStep,
    Report,
)
from dicom_node.domain.audit import Actor, Subject, TargetKind, procedure_event
from dicom_node.domain.enums import (
    AuditOutcome,
    Completeness,
    CompletenessEvidence,
    MetadataStatus,
    MppsStatus,
    Priority,
    QueueType,
    ReportStatus,
    WorklistStatus,
)
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.transitions import COMPLETENESS
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import study_subject
from dicom_node.services.workflow.orders import take_trigger
from dicom_node.services.workflow.work_items import (
    as_actor,
    close_study_items,
    ensure_worklist_item,
)

_READABLE = (MetadataStatus.MATCHED.value, MetadataStatus.CORRECTED.value)
_TO_RECONCILE = (MetadataStatus.UNMATCHED.value, MetadataStatus.CONFLICT.value)


@dataclass(frozen=True)
class SettleSummary:
    became_quiet: int
    completed: int
    waiting_for_mpps: int
    completed_by_mpps: int = 0

    def __str__(self) -> str:
        return (
            f"{self.became_quiet} quiet, {self.completed} complete "
            f"({self.completed_by_mpps} by MPPS), {self.waiting_for_mpps} waiting for MPPS"
        )


# A modality that never sends MPPS COMPLETED must not hold a study back forever.
DEFAULT_MPPS_WAIT_SECONDS = 7200


def settle_studies(
    session: Session,
    *,
    now: datetime,
    stable_seconds: int,
    sla: SlaPolicy,
    actor: Actor | str,
    mpps_wait_seconds: int = DEFAULT_MPPS_WAIT_SECONDS,
) -> SettleSummary:
    """One pass over the studies still acquiring.

    Evidence, strongest first: an MPPS COMPLETED whose every listed instance is
    indexed completes a study at once, even mid-quiet-period; otherwise a study
    with no new instance for ``stable_seconds`` goes quiet and completes on the
    timer, unless its order's MPPS is still IN PROGRESS (then it waits, at most
    ``mpps_wait_seconds`` after its last instance).
    """
    actor = as_actor(actor)
    by_mpps = 0
    for study in _acquiring_with_completed_mpps(session):
        if _mpps_satisfied(session, study):
            complete_study(
                session, study, evidence=CompletenessEvidence.MPPS, now=now, sla=sla, actor=actor
            )
            by_mpps += 1

    cutoff = now - timedelta(seconds=stable_seconds)
    newly_quiet = session.scalars(
        select(DicomStudy)
        .where(
            DicomStudy.completeness.in_(_stored(COMPLETENESS.sources("quiet"))),
            DicomStudy.last_received_at <= cutoff,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for study in newly_quiet:
        _transition(session, study, "quiet", actor=actor, evidence=None)

    quiet = session.scalars(
        select(DicomStudy)
        .where(DicomStudy.completeness.in_(_stored(COMPLETENESS.sources("stable"))))
        .with_for_update(skip_locked=True)
    ).all()
    completed = waiting = 0
    give_up = now - timedelta(seconds=mpps_wait_seconds)
    for study in quiet:
        last = study.last_received_at
        if _mpps_in_progress(session, study) and (last is None or last > give_up):
            waiting += 1
            continue
        complete_study(
            session,
            study,
            evidence=CompletenessEvidence.STABILITY_TIMER,
            now=now,
            sla=sla,
            actor=actor,
        )
        completed += 1
    return SettleSummary(len(newly_quiet), completed + by_mpps, waiting, by_mpps)


def _acquiring_with_completed_mpps(session: Session) -> list[DicomStudy]:
    # EXISTS, not a join with DISTINCT: PostgreSQL refuses FOR UPDATE with DISTINCT
    completed_mpps = exists().where(
        PerformedProcedureStep.imaging_request_id == DicomStudy.imaging_request_id,
        PerformedProcedureStep.status == MppsStatus.COMPLETED.value,
        PerformedProcedureStep.performed_series.is_not(None),
    )
    return list(
        session.scalars(
            select(DicomStudy)
            .where(
                DicomStudy.completeness.in_(_stored(COMPLETENESS.sources("evidence"))),
                completed_mpps,
            )
            .with_for_update(skip_locked=True)
        )
    )


def _mpps_satisfied(session: Session, study: DicomStudy) -> bool:
    """Every SOP instance the order's completed MPPS steps list is in this study."""
    listed: dict[str, set[str]] = {}
    for performed in session.scalars(
        select(PerformedProcedureStep.performed_series).where(
            PerformedProcedureStep.imaging_request_id == study.imaging_request_id,
            PerformedProcedureStep.status == MppsStatus.COMPLETED.value,
        )
    ):
        for series_uid, sop_uids in (performed or {}).items():
            listed.setdefault(series_uid, set()).update(sop_uids)
    if not listed:
        return False
    wanted = sum(len(uids) for uids in listed.values())
    present = 0
    for series_uid, uids in listed.items():
        present += int(
            session.scalar(
                select(func.count(DicomInstance.id))
                .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
                .where(
                    DicomSeries.study_pk == study.id,
                    DicomSeries.series_instance_uid == series_uid,
                    DicomInstance.sop_instance_uid.in_(uids),
                    DicomInstance.quarantined.is_(False),
                )
            )
            or 0
        )
    return present == wanted


def _mpps_in_progress(session: Session, study: DicomStudy) -> bool:
    if study.imaging_request_id is None:
        return False
    return bool(
        session.scalar(
            select(
                exists().where(
                    PerformedProcedureStep.imaging_request_id == study.imaging_request_id,
                    PerformedProcedureStep.status == MppsStatus.IN_PROGRESS.value,
                )
            )
        )
    )


def complete_study(
    session: Session,
    study: DicomStudy,
    *,
    evidence: CompletenessEvidence,
    now: datetime,
    sla: SlaPolicy,
    actor: Actor | str,
) -> None:
    """Declare the acquisition over; the order is performed and the study queued.

    A rejected study gets no work item at all. A study whose report is already
    past draft (in review, final, being amended) gets no second reading item
    nobody could work: the late instances are audited
    (``late_instance_after_report``) for the radiologist to decide on an addendum.
    """
    actor = as_actor(actor)
    trigger = "stable" if evidence is CompletenessEvidence.STABILITY_TIMER else "evidence"
    if COMPLETENESS.allows(trigger, study.completeness):
        _transition(session, study, trigger, actor=actor, evidence=evidence)
        study.completeness_evidence = evidence.value
        study.completed_at = now
    # else complete already (a caller completing it again): its items are made
    # sure of below, the completion itself is not repeated
    if study.metadata_status == MetadataStatus.REJECTED.value:
        return  # withdrawn (docs/domain.md#study-metadata-states): neither read nor reconciled
    order = (
        session.get(ImagingRequest, study.imaging_request_id) if study.imaging_request_id else None
    )
    readable = study.metadata_status in _READABLE or study.released_to_reading
    if order is not None and readable:
        perform_order(session, order, now=now, actor=actor)
    if order is not None:
        priority = Priority(order.priority)
    else:  # an unmatched study released to reading, at the priority it was released
        priority = Priority(study.release_priority or Priority.ROUTINE.value)
    due_at = sla.due(priority, now)
    if not readable or study.metadata_status in _TO_RECONCILE:
        # released to reading or not, an unmatched study still needs its order
        ensure_worklist_item(
            session,
            study,
            order,
            queue=QueueType.RECONCILIATION,
            priority=priority,
            due_at=due_at,
            actor=actor,
        )
    if not readable:
        return
    report = blocking_report(session, study.id)
    if report is not None:
        _record_late_instances(session, study, report, actor=actor)
        return
    ensure_worklist_item(
        session,
        study,
        order,
        queue=QueueType.READING,
        priority=priority,
        due_at=due_at,
        actor=actor,
    )


def blocking_report(session: Session, study_id: int) -> Report | None:
    """The study's report once it is past draft: reading it again is not a new
    reading item but an addendum to this report."""
    return session.scalar(
        select(Report)
        .where(Report.dicom_study_id == study_id, Report.status != ReportStatus.DRAFT.value)
        .order_by(Report.id)
        .limit(1)
    )


def _record_late_instances(
    session: Session, study: DicomStudy, report: Report, *, actor: Actor
) -> None:
    late = int(
        session.scalar(
            select(func.count(DicomInstance.id))
            .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
            .where(
                DicomSeries.study_pk == study.id,
                DicomInstance.quarantined.is_(False),
                DicomInstance.received_at > report.created_at,
            )
        )
        or 0
    )
    record_audit_event(
        session,
        procedure_event(
            "late_instance_after_report",
            actor,
            TargetKind.STUDY,
            study.id,
            study_subject(session, study),
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=f"instances arrived after report {report.id} was started; "
            "no new reading item (an addendum may be needed)",
            details={
                "report_id": report.id,
                "report_status": report.status,
                "instances_after_report": late,
                "instance_count": study.instance_count,
                "series_count": study.series_count,
            },
        ),
    )


def withdraw_from_reading(
    session: Session,
    study_id: int,
    *,
    actor: Actor,
    reason: str,
) -> None:
    """A study whose patient is now in doubt leaves the reading worklist: its
    open reading and review items are cancelled (audited each; a study nobody
    has started a report on goes back to ``acquired``) and an open
    reconciliation item is made sure of, carrying the cancelled reading item's
    priority and due time. Linking the study again re-creates the reading item."""
    study = session.get(DicomStudy, study_id, populate_existing=True)
    if study is None:
        return
    if study.released_to_reading:
        # a release to reading was for the patient the study seemed to be
        record_audit_event(
            session,
            procedure_event(
                "study_release_withdrawn",
                actor,
                TargetKind.STUDY,
                study.id,
                study_subject(session, study),
                reason=reason,
                details={
                    "before": {
                        "released_to_reading": True,
                        "release_priority": study.release_priority,
                    },
                    "after": {"released_to_reading": False, "release_priority": None},
                },
            ),
        )
        study.released_to_reading = False
        study.release_priority = None
    cancelled = close_study_items(
        session,
        study_id=study_id,
        queues=(QueueType.READING, QueueType.REVIEW),
        to=WorklistStatus.CANCELLED,
        actor=actor,
        reason=reason,
    )
    reading = next((i for i in cancelled if i.queue_type == QueueType.READING.value), None)
    order = (
        session.get(ImagingRequest, study.imaging_request_id) if study.imaging_request_id else None
    )
    priority = Priority(
        reading.priority if reading else (order.priority if order else Priority.ROUTINE.value)
    )
    ensure_worklist_item(
        session,
        study,
        order,
        queue=QueueType.RECONCILIATION,
        priority=priority,
        due_at=reading.due_at if reading else None,
        actor=actor,
    )
    session.flush()


def _stored(states: frozenset[Completeness]) -> list[str]:
    return sorted(state.value for state in states)


def _transition(
    session: Session,
    study: DicomStudy,
    trigger: str,
    *,
    actor: Actor,
    evidence: CompletenessEvidence | None,
) -> None:
    """COMPLETENESS ``trigger`` (the selections above only pick studies it
    allows: a refusal here is a bug, not a race)."""
    before = study.completeness
    study.completeness = COMPLETENESS.require(trigger, before).value
    record_audit_event(
        session,
        procedure_event(
            f"study_{study.completeness}",
            actor,
            TargetKind.STUDY,
            study.id,
            Subject(
                study_instance_uid=study.study_instance_uid,
                accession_number=study.accession_number,
            ),
            details={
                "before": {"completeness": before},
                "after": {"completeness": study.completeness},
                "evidence": evidence.value if evidence else None,
                "instance_count": study.instance_count,
                "series_count": study.series_count,
            },
        ),
    )


def perform_order(
    session: Session,
    order: ImagingRequest,
    *,
    now: datetime,
    actor: Actor,
    reason: str = "study complete",
) -> None:
    """The linked study's acquisition is over: the order is performed (ORDER
    ``acquisition_complete``); one already performed (MPPS said so) or
    discontinued is left as it is."""
    if take_trigger(session, order, "acquisition_complete", actor=actor, reason=reason):
        order.exam_completed_at = order.exam_completed_at or now
