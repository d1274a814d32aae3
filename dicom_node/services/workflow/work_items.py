"""Work items: the one place they are made and closed
(docs/domain.md#worklist-item-states, #reconciliation-item-states).

Every queue (reading, review, critical_comm, acquisition, reconciliation) keeps
its items in ``worklist_items``. Items are opened here (at most one open item
per study and queue), and closed here, completed or cancelled, each audited
(``worklist_item_created``, ``_updated``, ``_completed``, ``_cancelled``) with
the actor that caused it. People work items through ``reading_worklist.py``
(claim, release, reassign) and ``reconciliation.py``; every state change is a
trigger of the WORK_ITEM table (``domain/transitions.py``).

Cancelling a study's reading item also moves the study back from ``reading``
to ``acquired`` when nobody has started a report on it (the same rule as a
release), so a conflict or a rejection never leaves a study "being read" by
nobody.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    DicomStudy,
    ImagingRequest,
    PerformedProcedureStep,
    WorklistItem,
)
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import Actor, Subject, TargetKind, procedure_event
from dicom_node.domain.enums import Priority, QueueType, WorklistStatus
from dicom_node.domain.matching import PRIORITY_RANK
from dicom_node.domain.transitions import WORK_ITEM
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, step_subject, study_subject
from dicom_node.services.workflow.study_reading import advance_study_reading, has_report

# the WORK_ITEM trigger that closes an item into each final status
_CLOSING = {WorklistStatus.COMPLETED: "complete", WorklistStatus.CANCELLED: "cancel"}


def as_actor(actor: Actor | str, source_address: str | None = None) -> Actor:
    """An Actor from the older ``actor: str`` (+ address) arguments some callers
    still pass (ingest passes the calling AE title or ``dicom``)."""
    if isinstance(actor, Actor):
        return actor
    return Actor(name=actor, address=source_address)


def _open(trigger: str) -> list[str]:
    """The stored statuses an item may be in for ``trigger``."""
    return sorted(status.value for status in WORK_ITEM.sources(trigger))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def open_items(session: Session, *, study_id: int, queue: QueueType) -> list[WorklistItem]:
    """The study's open items of ``queue``, locked, oldest first."""
    return list(
        session.scalars(
            select(WorklistItem)
            .where(
                WorklistItem.dicom_study_id == study_id,
                WorklistItem.queue_type == queue.value,
                WorklistItem.status.in_(_open("complete")),
            )
            .order_by(WorklistItem.id)
            .with_for_update()
        )
    )


def open_item_id(session: Session, *, study_id: int, queue: QueueType) -> int | None:
    """The id of the study's open item of ``queue`` (not locked)."""
    return session.scalar(
        select(WorklistItem.id)
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == queue.value,
            WorklistItem.status.in_(_open("complete")),
        )
        .order_by(WorklistItem.id)
        .limit(1)
    )


# --------------------------------------------------------------------------- opening


def ensure_worklist_item(
    session: Session,
    study: DicomStudy,
    order: ImagingRequest | None,
    *,
    queue: QueueType,
    priority: Priority,
    due_at: datetime | None,
    actor: Actor,
) -> WorklistItem:
    """The study's open item in ``queue``, made (and audited) if there is none.

    A re-opened study that completes again keeps its item; one made before the
    study had an order (an unmatched study released to reading) gets the order
    found since, and its priority and due time if more urgent
    (``worklist_item_updated``)."""
    already = session.scalar(
        select(WorklistItem)
        .where(
            WorklistItem.dicom_study_id == study.id,
            WorklistItem.queue_type == queue.value,
            WorklistItem.status.in_(_open("complete")),
        )
        .order_by(WorklistItem.id)
        .limit(1)
        .with_for_update()
    )
    if already is not None:
        if order is not None and already.imaging_request_id is None:
            before = {
                "order_id": None,
                "priority": already.priority,
                "due_at": _iso(already.due_at),
            }
            already.imaging_request_id = order.id
            if PRIORITY_RANK[priority] < already.priority_rank:
                already.priority = priority.value
                already.priority_rank = PRIORITY_RANK[priority]
                if due_at is not None and (already.due_at is None or due_at < already.due_at):
                    already.due_at = due_at
            already.version += 1
            record_audit_event(
                session,
                procedure_event(
                    "worklist_item_updated",
                    actor,
                    TargetKind.WORK_ITEM,
                    already.id,
                    study_subject(session, study),
                    details={
                        "before": before,
                        "after": {
                            "order_id": order.id,
                            "priority": already.priority,
                            "due_at": _iso(already.due_at),
                        },
                    },
                ),
            )
        return already
    item = WorklistItem(
        imaging_request_id=order.id if order else None,
        dicom_study_id=study.id,
        queue_type=queue.value,
        status=WORK_ITEM.initial.value,
        priority=priority.value,
        priority_rank=PRIORITY_RANK[priority],
        due_at=due_at,
    )
    return _created(session, item, actor, study_subject(session, study))


def ensure_review_item(
    session: Session,
    *,
    study_id: int,
    actor: Actor,
) -> WorklistItem:
    """The study's open review item; made (pending, with the reading item's
    priority and due time) if there is none."""
    existing = open_items(session, study_id=study_id, queue=QueueType.REVIEW)
    if existing:
        return existing[0]
    reading = session.scalar(
        select(WorklistItem)
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.READING.value,
        )
        .order_by(WorklistItem.id.desc())
        .limit(1)
    )
    study = session.get(DicomStudy, study_id)
    assert study is not None
    item = WorklistItem(
        imaging_request_id=reading.imaging_request_id if reading else study.imaging_request_id,
        dicom_study_id=study_id,
        queue_type=QueueType.REVIEW.value,
        status=WORK_ITEM.initial.value,
        priority=reading.priority if reading else Priority.ROUTINE.value,
        priority_rank=reading.priority_rank if reading else PRIORITY_RANK[Priority.ROUTINE],
        due_at=reading.due_at if reading else None,
    )
    return _created(session, item, actor, study_subject(session, study), brief=True)


def open_procedure_step_item(
    session: Session,
    step: PerformedProcedureStep,
    order: ImagingRequest | None,
    *,
    actor: Actor,
    reason: str,
) -> WorklistItem:
    """A reconciliation item for an MPPS no open order can take (an unscheduled
    exam, or one for a closed order): no study yet, routine, no due time."""
    item = WorklistItem(
        imaging_request_id=order.id if order else None,
        performed_procedure_step_id=step.id,
        queue_type=QueueType.RECONCILIATION.value,
        status=WORK_ITEM.initial.value,
        priority=Priority.ROUTINE.value,
        priority_rank=PRIORITY_RANK[Priority.ROUTINE],
    )
    return _created(
        session,
        item,
        actor,
        step_subject(step, order),
        reason=reason,
        extra={"performed_procedure_step": step.sop_instance_uid},
    )


def _created(
    session: Session,
    item: WorklistItem,
    actor: Actor,
    subject: Subject,
    *,
    brief: bool = False,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> WorklistItem:
    """Add ``item`` and audit ``worklist_item_created``: every item this module
    makes goes through here. ``brief``: a review item's event records queue and
    status only (it takes the reading item's priority and due time)."""
    session.add(item)
    session.flush()
    after: dict[str, Any] = {"queue_type": item.queue_type, "status": item.status}
    if not brief:
        after |= {
            "priority": item.priority,
            "due_at": _iso(item.due_at),
            "order_id": item.imaging_request_id,
        }
    record_audit_event(
        session,
        procedure_event(
            "worklist_item_created",
            actor,
            TargetKind.WORK_ITEM,
            item.id,
            subject,
            reason=reason,
            details={"before": None, "after": after} | (extra or {}),
        ),
    )
    return item


def new_follow_up_item(order: ImagingRequest, *, now: datetime, notes: str) -> WorklistItem:
    """An ``acquisition`` item for a scheduled order whose slot passed (not yet
    added: the stale-orders job adds a batch at once and audits each as
    ``order_stale``, the order being what changed)."""
    priority = Priority(order.priority)
    return WorklistItem(
        imaging_request_id=order.id,
        queue_type=QueueType.ACQUISITION.value,
        status=WORK_ITEM.initial.value,
        priority=priority.value,
        priority_rank=PRIORITY_RANK[priority],
        due_at=None,
        notes=notes,
        created_at=now,
        updated_at=now,
    )


# --------------------------------------------------------------------------- closing


def close_item(
    session: Session,
    item: WorklistItem,
    *,
    to: WorklistStatus,
    actor: Actor,
    subject: Subject,
    reason: str,
    now: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Complete or cancel one open item (the caller holds its row lock);
    audited ``worklist_item_<to>``. A completed item keeps its holder, or is
    put down to the person completing it."""
    trigger = _CLOSING[to]
    before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
    item.status = WORK_ITEM.require(trigger, item.status).value
    if to is WorklistStatus.COMPLETED:
        item.completed_at = now or utcnow()
        item.assigned_to_id = item.assigned_to_id or actor.user_id
    item.version += 1
    session.flush()
    record_audit_event(
        session,
        procedure_event(
            f"worklist_item_{item.status}",
            actor,
            TargetKind.WORK_ITEM,
            item.id,
            subject,
            reason=reason,
            details={
                "before": before,
                "after": {"status": item.status, "assigned_to_id": item.assigned_to_id},
                "queue_type": item.queue_type,
                **(details or {}),
            },
        ),
    )


def close_study_items(
    session: Session,
    *,
    study_id: int,
    queues: Collection[QueueType],
    to: WorklistStatus,
    actor: Actor,
    reason: str,
    now: datetime | None = None,
) -> list[WorklistItem]:
    """Complete (or cancel) the study's open items of ``queues``, audited each;
    the items closed. A cancelled reading item puts a study nobody has started
    a report on back to ``acquired``."""
    study = session.get(DicomStudy, study_id)
    if study is None:
        return []
    subject = study_subject(session, study)
    closed: list[WorklistItem] = []
    for queue in queues:
        for item in open_items(session, study_id=study_id, queue=queue):
            close_item(session, item, to=to, actor=actor, subject=subject, reason=reason, now=now)
            closed.append(item)
    reading_cancelled = any(item.queue_type == QueueType.READING.value for item in closed) and (
        to is WorklistStatus.CANCELLED
    )
    if reading_cancelled and not has_report(session, study_id):
        advance_study_reading(
            session, study_id=study_id, trigger="reading_cancelled", actor=actor, reason=reason
        )
    return closed


def close_items(
    session: Session,
    *,
    study_id: int,
    queue: QueueType | Collection[QueueType],
    to: WorklistStatus,
    reason: str,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """Complete (or cancel) the study's open items of one queue or several,
    in the name of ``actor``; audited each; how many."""
    queues = (queue,) if isinstance(queue, QueueType) else tuple(queue)
    return len(
        close_study_items(
            session,
            study_id=study_id,
            queues=queues,
            to=to,
            actor=actor,
            reason=reason,
            now=now,
        )
    )


def close_reconciliation_items(
    session: Session,
    study: DicomStudy,
    order: ImagingRequest,
    *,
    reason: str,
    now: datetime,
    actor: Actor,
) -> None:
    """The study now has its order (linked, an order made from it, or matched
    by the rematch job): its open reconciliation items, and those an MPPS of
    the same StudyInstanceUID opened (an unscheduled exam, or one for a closed
    order), are completed; those steps now perform this order
    (``procedure_step_linked``)."""
    subject = study_subject(session, study)
    steps = list(
        session.scalars(
            select(PerformedProcedureStep)
            .where(PerformedProcedureStep.study_instance_uid == study.study_instance_uid)
            .order_by(PerformedProcedureStep.id)
            .with_for_update()
        )
    )
    for step in steps:
        if step.imaging_request_id == order.id:
            continue
        before_order = step.imaging_request_id
        step.imaging_request_id = order.id
        record_audit_event(
            session,
            procedure_event(
                "procedure_step_linked",
                actor,
                TargetKind.PROCEDURE_STEP,
                step.sop_instance_uid,
                Subject(
                    patient_id=subject.patient_id,
                    study_instance_uid=step.study_instance_uid,
                    accession_number=step.accession_number,
                ),
                reason=reason,
                details={
                    "before": {"imaging_request_id": before_order},
                    "after": {"imaging_request_id": order.id},
                    "study_id": study.id,
                },
            ),
        )
    tied = [WorklistItem.dicom_study_id == study.id]
    if steps:
        tied.append(WorklistItem.performed_procedure_step_id.in_([step.id for step in steps]))
    for item in session.scalars(
        select(WorklistItem)
        .where(
            or_(*tied),
            WorklistItem.queue_type == QueueType.RECONCILIATION.value,
            WorklistItem.status.in_(_open("complete")),
        )
        .order_by(WorklistItem.id)
        .with_for_update()
    ):
        item_before = item.status
        item.status = WORK_ITEM.require("complete", item.status).value
        item.completed_at = now
        item.imaging_request_id = order.id
        item.version += 1
        record_audit_event(
            session,
            procedure_event(
                "worklist_item_completed",
                actor,
                TargetKind.WORK_ITEM,
                item.id,
                Subject(patient_id=subject.patient_id, study_instance_uid=study.study_instance_uid),
                reason=reason,
                details={
                    "before": {"status": item_before},
                    "after": {"status": item.status, "imaging_request_id": order.id},
                    "study_id": study.id,
                    "performed_procedure_step_id": item.performed_procedure_step_id,
                },
            ),
        )


def complete_follow_up(
    session: Session, item: WorklistItem, order: ImagingRequest, *, now: datetime, actor: Actor
) -> None:
    """An acquisition item whose order moved on (started, performed, cancelled,
    rescheduled, or images or an MPPS arrived): completed."""
    close_item(
        session,
        item,
        to=WorklistStatus.COMPLETED,
        actor=actor,
        subject=order_subject(order),
        reason=f"order {order.id} is no longer a missed slot ({order.status})",
        now=now,
        details={"order_id": order.id},
    )
