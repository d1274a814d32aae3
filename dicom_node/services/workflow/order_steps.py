"""An order's steps over HTTP after it is booked: cancel (with a reason), start
and complete the exam; each a trigger of the ORDER table
(``domain/transitions.py``) taken through ``orders.take_trigger`` (audited).
A step the order's state does not allow is a Conflict naming that state."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingRequest
from dicom_node.domain.enums import RequestStatus, Role
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.workflow.orders import (
    OrderInfo,
    load_order,
    order_info,
    require_own_order,
    take_trigger,
)


def cancel_order(
    session: Session,
    order_id: int,
    *,
    reason: str,
    principal: Principal,
    source_address: str | None = None,
) -> OrderInfo:
    """requested/scheduled -> cancelled, with the reason stored and audited.

    A referring physician cancels only an order they placed (one they only
    receive: Forbidden; one they cannot see: NotFound) and only while it is
    requested (scheduled: Forbidden, ask the scheduler).
    """
    text_reason = (reason or "").strip()
    if not text_reason:
        raise InvalidValue("a cancellation needs a reason", field="reason")
    order = load_order(session, order_id, principal=principal)
    referrer = principal.role is Role.REFERRING_PHYSICIAN
    if referrer:
        require_own_order(order, principal, "cancel")
        if order.status == RequestStatus.SCHEDULED.value:
            raise Forbidden("a referring physician may cancel an order only while it is requested")
    # the status read above was not locked: take_trigger re-checks under the row
    # lock, so a scheduling that commits in between still stops a referrer's cancel
    if not take_trigger(
        session,
        order,
        "cancel_unbooked" if referrer else "cancel",
        actor=user_actor(principal, source_address),
        reason=text_reason,
    ):
        raise Conflict(f"an order that is {order.status} cannot be cancelled", current=order.status)
    order.cancel_reason = text_reason
    session.flush()
    return order_info(order)


def start_order(
    session: Session,
    order_id: int,
    *,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """scheduled -> in_progress (the technologist starts the exam)."""
    order = _exam_step(session, order_id, "start", "started", principal, source_address)
    order.exam_started_at = order.exam_started_at or now or datetime.now(UTC)
    session.flush()
    return order_info(order)


def complete_order(
    session: Session,
    order_id: int,
    *,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """in_progress -> performed (the technologist ends the exam)."""
    order = _exam_step(session, order_id, "complete", "completed", principal, source_address)
    order.exam_completed_at = order.exam_completed_at or now or datetime.now(UTC)
    session.flush()
    return order_info(order)


def _exam_step(
    session: Session,
    order_id: int,
    trigger: str,
    verb: str,
    principal: Principal,
    source_address: str | None,
) -> ImagingRequest:
    order = load_order(session, order_id, principal=principal)
    if not take_trigger(
        session,
        order,
        trigger,
        actor=user_actor(principal, source_address),
        reason=f"exam {verb}",
    ):
        raise Conflict(f"an order that is {order.status} cannot be {verb}", current=order.status)
    return order
