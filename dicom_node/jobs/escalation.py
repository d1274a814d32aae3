"""The escalation job: flags overdue worklist items and escalates missed
critical-result deadlines, each once, audited, in one unit of work per run.

Rows are read FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite serialises writers),
so two nodes running the job at once never flag or escalate the same row twice:
the second one skips what the first holds and, after its commit, no longer
matches it (``overdue`` / ``escalated_at`` are set).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
    WorklistItem,
)
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import (
    OPEN_WORKLIST_STATUSES,
    AuditOutcome,
    Priority,
    QueueType,
    WorklistStatus,
)
from dicom_node.domain.matching import PRIORITY_RANK
from dicom_node.services.audit.record import record_audit_event

log = logging.getLogger("dicom_node.jobs.escalation")

ACTOR = "scheduler"


@dataclass(frozen=True)
class EscalationResult:
    items_flagged_overdue: int
    critical_escalated: int
    critical_items_opened: int

    def __str__(self) -> str:
        return (
            f"{self.items_flagged_overdue} worklist items overdue, "
            f"{self.critical_escalated} critical results escalated "
            f"({self.critical_items_opened} critical_comm items opened)"
        )


def run_escalation(db: Database, *, now: datetime | None = None) -> EscalationResult:
    at = now or datetime.now(UTC)
    with db.unit_of_work() as session:
        flagged = _flag_overdue_items(session, now=at)
        escalated, opened = _escalate_critical_results(session, now=at)
    result = EscalationResult(flagged, escalated, opened)
    # counts only: no identifiers, no PHI
    log.info("escalation: %s", result)
    return result


@dataclass(frozen=True)
class _Subject:
    patient_id: str | None
    study_instance_uid: str | None
    accession_number: str | None


def _subject(session: Session, *, study_id: int | None, order_id: int | None) -> _Subject:
    if study_id is not None:
        row = session.execute(
            select(DicomStudy.study_instance_uid, DicomStudy.accession_number, Patient.patient_id)
            .join(Patient, Patient.id == DicomStudy.patient_pk)
            .where(DicomStudy.id == study_id)
        ).first()
        if row is not None:
            return _Subject(row.patient_id, row.study_instance_uid, row.accession_number)
    if order_id is not None:
        order = session.execute(
            select(
                ImagingRequest.patient_id,
                ImagingRequest.study_instance_uid,
                ImagingRequest.accession_number,
            ).where(ImagingRequest.id == order_id)
        ).first()
        if order is not None:
            return _Subject(order.patient_id, order.study_instance_uid, order.accession_number)
    return _Subject(None, None, None)


def _flag_overdue_items(session: Session, *, now: datetime) -> int:
    items = session.scalars(
        select(WorklistItem)
        .where(
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
            WorklistItem.due_at.is_not(None),
            WorklistItem.due_at < now,
            WorklistItem.overdue.is_(False),
        )
        .order_by(WorklistItem.due_at, WorklistItem.id)
        .with_for_update(skip_locked=True)
    ).all()
    for item in items:
        # the ORM change is what puts the item in the change feed
        item.overdue = True
        subject = _subject(session, study_id=item.dicom_study_id, order_id=item.imaging_request_id)
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.PROCEDURE_RECORD,
                action="worklist_item_overdue",
                outcome=AuditOutcome.MINOR_FAILURE,
                actor=ACTOR,
                target_class="WorklistItem",
                target_id=str(item.id),
                patient_id=subject.patient_id,
                study_instance_uid=subject.study_instance_uid,
                accession_number=subject.accession_number,
                details={
                    "before": {"overdue": False},
                    "after": {"overdue": True},
                    "queue_type": item.queue_type,
                    "status": item.status,
                    "due_at": item.due_at.isoformat() if item.due_at else None,
                },
            ),
        )
    return len(items)


def _escalate_critical_results(session: Session, *, now: datetime) -> tuple[int, int]:
    # same selection as services.reports.overdue_critical_communications, minus
    # what was already escalated, and locked
    flagged_report = exists().where(
        Report.id == CriticalResultCommunication.report_id, Report.critical_flag.is_(True)
    )
    communications = session.scalars(
        select(CriticalResultCommunication)
        .where(
            flagged_report,
            CriticalResultCommunication.communicated_at.is_(None),
            CriticalResultCommunication.escalated_at.is_(None),
            CriticalResultCommunication.deadline_at < now,
        )
        .order_by(CriticalResultCommunication.deadline_at, CriticalResultCommunication.id)
        .with_for_update(skip_locked=True)
    ).all()
    studies = _lock_studies(session, [c.report_id for c in communications])
    opened = 0
    for communication in communications:
        communication.escalated_at = now
        study = studies.get(communication.report_id)
        order_id = study.imaging_request_id if study is not None else None
        item_id = _open_critical_item(session, study_id=study.id) if study else None
        if study is not None and item_id is None:
            item = WorklistItem(
                imaging_request_id=order_id,
                dicom_study_id=study.id,
                queue_type=QueueType.CRITICAL_COMM.value,
                status=WorklistStatus.PENDING.value,
                priority=Priority.STAT.value,
                priority_rank=PRIORITY_RANK[Priority.STAT],
                due_at=now,
                overdue=False,
            )
            session.add(item)
            # flushed now: its id goes in the audit event, and a second
            # escalation of the same study finds it open
            session.flush()
            item_id = item.id
            opened += 1
        subject = _subject(session, study_id=study.id if study else None, order_id=order_id)
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.PROCEDURE_RECORD,
                action="critical_result_escalated",
                outcome=AuditOutcome.MINOR_FAILURE,
                actor=ACTOR,
                target_class="CriticalResultCommunication",
                target_id=str(communication.id),
                patient_id=subject.patient_id,
                study_instance_uid=subject.study_instance_uid,
                accession_number=subject.accession_number,
                reason="critical result not communicated by its deadline",
                details={
                    "before": {"escalated_at": None},
                    "after": {"escalated_at": now.isoformat()},
                    "deadline_at": communication.deadline_at.isoformat(),
                    "report_id": communication.report_id,
                    "critical_comm_item_id": item_id,
                },
            ),
        )
    return len(communications), opened


def _lock_studies(session: Session, report_ids: list[int]) -> dict[int, DicomStudy]:
    """The study of each report, locked in id order: two nodes escalating
    results of one study open one critical_comm item, and never deadlock."""
    if not report_ids:
        return {}
    rows = session.execute(
        select(Report.id, DicomStudy)
        .join(DicomStudy, DicomStudy.id == Report.dicom_study_id)
        .where(Report.id.in_(set(report_ids)))
        .order_by(DicomStudy.id)
        .with_for_update(of=DicomStudy)
    ).all()
    return {report_id: study for report_id, study in rows}


def _open_critical_item(session: Session, *, study_id: int) -> int | None:
    return session.scalar(
        select(WorklistItem.id).where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.CRITICAL_COMM.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
        )
    )
