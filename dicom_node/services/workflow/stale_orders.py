"""Stale orders (docs/domain.md#stale-orders): a scheduled order whose slot
passed long ago with no images and no MPPS.

The order state machine has no "no-show" transition, and cancelling
automatically would lose the order for images that come late (a cancelled
order matches no images). So a scheduled order whose slot is more than
``stale_hours`` past, with no study and no MPPS, stays scheduled and gets an
open item in the ``acquisition`` queue for a scheduler to reschedule or cancel
it, an Order Record audit event (``order_stale``) and an order entry in the
change feed (payload ``stale: true``). Once per slot: an order already flagged
after its current slot is not flagged again; rescheduled and missed again, it
is. Follow-up items whose order moved on (started, performed, cancelled,
rescheduled after the flag, or images or an MPPS arrived) are completed,
audited.

Work is done in batches (``batch_size`` rows per unit of work, in id order),
so no run holds SQLite's one write lock for long. Rows are taken FOR UPDATE
SKIP LOCKED on PostgreSQL (SQLite serialises writers), and the selection
excludes what is already handled, so two nodes running it never handle a row
twice and a second run does nothing new. Run by the ``stale-orders`` job
(``jobs/maintenance.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.changes import record_change
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, ImagingRequest, PerformedProcedureStep, WorklistItem
from dicom_node.domain.audit import Actor, order_event
from dicom_node.domain.enums import AuditOutcome, QueueType, RequestStatus
from dicom_node.domain.transitions import WORK_ITEM
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject
from dicom_node.services.workflow.work_items import complete_follow_up, new_follow_up_item

# rows per unit of work
BATCH_SIZE = 200
# the one state in which a missed slot is followed up: booked, nothing happened
_STALE_STATE = RequestStatus.SCHEDULED.value
FOLLOW_UP_NOTE = "scheduled slot passed with no images and no MPPS: reschedule or cancel"


@dataclass(frozen=True)
class StaleOrdersResult:
    orders_flagged: int
    follow_ups_closed: int

    def __str__(self) -> str:
        return (
            f"{self.orders_flagged} stale scheduled orders flagged, "
            f"{self.follow_ups_closed} follow-up items closed"
        )


def _flagged(order_id: Any, scheduled_at: Any) -> ColumnElement[bool]:
    """An acquisition follow-up item made for this order after its current slot."""
    return exists().where(
        WorklistItem.imaging_request_id == order_id,
        WorklistItem.queue_type == QueueType.ACQUISITION.value,
        WorklistItem.created_at > scheduled_at,
    )


def _performed_somehow(order_id: Any, study_uid: Any) -> ColumnElement[bool]:
    """Images or an MPPS for the order, linked or carrying its StudyInstanceUID."""
    return or_(
        exists().where(DicomStudy.imaging_request_id == order_id),
        exists().where(DicomStudy.study_instance_uid == study_uid),
        exists().where(PerformedProcedureStep.imaging_request_id == order_id),
        exists().where(PerformedProcedureStep.study_instance_uid == study_uid),
    )


def flag_stale_orders(
    db: Database,
    *,
    stale_hours: float,
    actor: Actor,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> StaleOrdersResult:
    """Close the follow-ups of orders that moved on, then flag the newly stale
    orders: ``batch_size`` rows per unit of work (in id order), so a backlog of
    thousands never holds the SQLite write lock (or PostgreSQL row locks) for
    long. The counts are the run's totals."""
    at = now or datetime.now(UTC)
    cutoff = at - timedelta(hours=stale_hours)
    closed = flagged = 0
    after_id = 0
    while True:
        with db.unit_of_work() as session:
            seen, after_id, done = _close_follow_ups(
                session, now=at, after_id=after_id, limit=batch_size, actor=actor
            )
        closed += done
        if seen < batch_size:
            break
    after_id = 0
    while True:
        with db.unit_of_work() as session:
            seen, after_id, done = _flag_stale_orders(
                session, cutoff=cutoff, now=at, after_id=after_id, limit=batch_size, actor=actor
            )
        flagged += done
        if seen < batch_size:
            break
    return StaleOrdersResult(flagged, closed)


def _flag_stale_orders(
    session: Session, *, cutoff: datetime, now: datetime, after_id: int, limit: int, actor: Actor
) -> tuple[int, int, int]:
    """Flag one batch of stale orders with ids above ``after_id``; (orders
    looked at, the last one's id, orders flagged)."""
    orders = session.scalars(
        select(ImagingRequest)
        .where(
            ImagingRequest.id > after_id,
            ImagingRequest.status == _STALE_STATE,
            ImagingRequest.scheduled_at.is_not(None),
            ImagingRequest.scheduled_at < cutoff,
            ~_performed_somehow(ImagingRequest.id, ImagingRequest.study_instance_uid),
            ~_flagged(ImagingRequest.id, ImagingRequest.scheduled_at),
        )
        .order_by(ImagingRequest.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not orders:
        return 0, after_id, 0
    # Looked at again now that the rows are ours, in a fresh statement: the
    # flag is an insert, not a change to the order row, so a node that flagged
    # one and committed just before our lock is only seen this way.
    already = set(
        session.scalars(
            select(ImagingRequest.id).where(
                ImagingRequest.id.in_([order.id for order in orders]),
                _flagged(ImagingRequest.id, ImagingRequest.scheduled_at),
            )
        )
    )
    todo = [order for order in orders if order.id not in already]
    items = [new_follow_up_item(order, now=now, notes=FOLLOW_UP_NOTE) for order in todo]
    session.add_all(items)
    session.flush()  # one flush for the batch: the audit events name the item ids
    for order, item in zip(todo, items, strict=True):
        scheduled = order.scheduled_at.isoformat() if order.scheduled_at else None
        record_audit_event(
            session,
            order_event(
                "order_stale",
                actor,
                order.id,
                order_subject(order),
                outcome=AuditOutcome.MINOR_FAILURE,
                reason="scheduled slot passed with no images and no MPPS",
                details={
                    "before": {"follow_up_item_id": None},
                    "after": {"follow_up_item_id": item.id},
                    "status": order.status,
                    "scheduled_at": scheduled,
                },
            ),
        )
        record_change(
            session,
            entity="order",
            entity_id=order.id,
            action="updated",
            payload={
                "status": order.status,
                "priority": order.priority,
                "scheduled_at": scheduled,
                "stale": True,
            },
            order_id=order.id,
        )
    return len(orders), orders[-1].id, len(todo)


def _close_follow_ups(
    session: Session, *, now: datetime, after_id: int, limit: int, actor: Actor
) -> tuple[int, int, int]:
    """Complete one batch of follow-up items (ids above ``after_id``) whose
    order moved on; (items looked at, the last one's id, items completed)."""
    moved_on = or_(
        ImagingRequest.status != _STALE_STATE,
        ImagingRequest.scheduled_at > WorklistItem.created_at,
        _performed_somehow(ImagingRequest.id, ImagingRequest.study_instance_uid),
    )
    rows = session.execute(
        select(WorklistItem, ImagingRequest)
        .join(ImagingRequest, ImagingRequest.id == WorklistItem.imaging_request_id)
        .where(
            WorklistItem.id > after_id,
            WorklistItem.queue_type == QueueType.ACQUISITION.value,
            WorklistItem.status.in_(sorted(s.value for s in WORK_ITEM.sources("complete"))),
            moved_on,
        )
        .order_by(WorklistItem.id)
        .limit(limit)
        .with_for_update(of=WorklistItem, skip_locked=True)
    ).all()
    for item, order in rows:
        complete_follow_up(session, item, order, now=now, actor=actor)
    return len(rows), (rows[-1][0].id if rows else after_id), len(rows)
