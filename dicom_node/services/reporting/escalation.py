"""Escalation (docs/domain.md#escalation): what is late is flagged, once,
audited, by the node itself (actor ``scheduler``).

- every open work item (any queue) whose ``due_at`` has passed is flagged
  ``overdue`` (``worklist_item_overdue``); nothing else happens to it;
- every critical-result record whose deadline passed with nothing
  communicated (``critical_results.missed_deadlines``) is escalated: it gets
  ``escalated_at`` (``critical_result_escalated``) and its study a STAT,
  due-now ``critical_comm`` item unless one is open (made, and audited
  ``worklist_item_created``, by ``workflow/work_items.py``). Recording the
  communication completes that item (``critical_results.record_communication``).

Rows are read FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite serialises writers),
so two nodes escalating at once never flag or escalate the same row twice: the
second skips what the first holds and, after its commit, no longer matches it
(``overdue`` / ``escalated_at`` are set). The job (``jobs/escalation.py``)
calls ``escalate`` in one unit of work per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingRequest,
    Report,
    WorklistItem,
)
from dicom_node.domain.audit import (
    NO_SUBJECT,
    Actor,
    Subject,
    SystemActor,
    TargetKind,
    procedure_event,
)
from dicom_node.domain.enums import (
    OPEN_WORKLIST_STATUSES,
    AuditOutcome,
    Priority,
    QueueType,
)
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, study_subject
from dicom_node.services.reporting.critical_results import missed_deadlines
from dicom_node.services.workflow.work_items import ensure_worklist_item, open_item_id

ESCALATOR = Actor.system(SystemActor.SCHEDULER)


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


def escalate(session: Session, *, now: datetime) -> EscalationResult:
    """Flag the overdue items and escalate the missed critical results, as at ``now``."""
    flagged = flag_overdue_items(session, now=now)
    escalated, opened = escalate_critical_results(session, now=now)
    return EscalationResult(flagged, escalated, opened)


def _subject(session: Session, *, study_id: int | None, order_id: int | None) -> Subject:
    """The study's patient, or the order's for an item without a study."""
    study = session.get(DicomStudy, study_id) if study_id is not None else None
    if study is not None:
        return study_subject(session, study)
    order = session.get(ImagingRequest, order_id) if order_id is not None else None
    return order_subject(order) if order is not None else NO_SUBJECT


def flag_overdue_items(session: Session, *, now: datetime) -> int:
    """Open items past due, flagged ``overdue`` once each; how many."""
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
        record_audit_event(
            session,
            procedure_event(
                "worklist_item_overdue",
                ESCALATOR,
                TargetKind.WORK_ITEM,
                item.id,
                _subject(session, study_id=item.dicom_study_id, order_id=item.imaging_request_id),
                outcome=AuditOutcome.MINOR_FAILURE,
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


def escalate_critical_results(session: Session, *, now: datetime) -> tuple[int, int]:
    """Missed critical-result deadlines escalated once each; (escalated, items opened)."""
    communications = session.scalars(
        missed_deadlines(now)
        .where(CriticalResultCommunication.escalated_at.is_(None))
        .with_for_update(skip_locked=True)
    ).all()
    studies = _lock_studies(session, [c.report_id for c in communications])
    opened = 0
    for communication in communications:
        communication.escalated_at = now
        study = studies.get(communication.report_id)
        order_id = study.imaging_request_id if study is not None else None
        item_id = None
        if study is not None:
            item_id = open_item_id(session, study_id=study.id, queue=QueueType.CRITICAL_COMM)
            if item_id is None:
                order = session.get(ImagingRequest, order_id) if order_id is not None else None
                # made and flushed now: its id goes in the audit event, and a
                # second escalation of the same study finds it open
                item_id = ensure_worklist_item(
                    session,
                    study,
                    order,
                    queue=QueueType.CRITICAL_COMM,
                    priority=Priority.STAT,
                    due_at=now,
                    actor=ESCALATOR,
                ).id
                opened += 1
        record_audit_event(
            session,
            procedure_event(
                "critical_result_escalated",
                ESCALATOR,
                TargetKind.CRITICAL_COMMUNICATION,
                communication.id,
                _subject(session, study_id=study.id if study else None, order_id=order_id),
                outcome=AuditOutcome.MINOR_FAILURE,
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
