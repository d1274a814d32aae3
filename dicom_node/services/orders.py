"""ImagingRequest (order) state changes: every one audited with before and after.

DOMAIN.md: requested -> scheduled -> in_progress -> performed; in_progress ->
discontinued; requested/scheduled -> cancelled. Each caller names the states it
may move the order from, so a step that does not apply is a no-op, not an error
(a late image for a performed order changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingRequest, Modality
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import RequestStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.uids import new_uid
from dicom_node.services.audit import record_audit_event


def advance_order(
    session: Session,
    order: ImagingRequest,
    to: RequestStatus,
    *,
    allowed_from: Iterable[RequestStatus],
    actor: str,
    reason: str,
) -> bool:
    """Move ``order`` to ``to`` if it is in one of ``allowed_from``; True if moved.

    The status is re-read under a row lock (PostgreSQL; SQLite writers are
    serialised anyway), so two transitions racing on one order (MPPS on one
    association, the first image or the stability job on another) never both
    pass the check on the same old status.
    """
    session.flush()  # the caller's own pending changes first: refresh keeps them
    session.refresh(order, attribute_names=["status"], with_for_update=True)
    if order.status not in {status.value for status in allowed_from}:
        return False
    before = order.status
    order.status = to.value
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action=f"order_{to.value}",
            actor=actor,
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=order.patient_id,
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession_number,
            reason=reason,
            details={"before": {"status": before}, "after": {"status": order.status}},
        ),
    )
    return True


def schedule_order(
    session: Session,
    order: ImagingRequest,
    *,
    modality: Modality,
    scheduled_at: datetime,
    actor: str,
    now: datetime | None = None,
) -> ImagingRequest:
    """Schedule (or reschedule) an order on a modality at a time.

    The AccessionNumber and StudyInstanceUID (``2.25.<uuid as integer>``) are
    assigned the first time only: a reschedule keeps them, so images made with
    an earlier worklist answer still match. Requested/step IDs likewise. A
    first scheduling moves the order requested -> scheduled (audited); a
    reschedule of a scheduled order is audited with the old and new slot.
    """
    if order.status not in (RequestStatus.REQUESTED.value, RequestStatus.SCHEDULED.value):
        raise InvalidValue(f"an order that is {order.status} cannot be scheduled")
    if scheduled_at.tzinfo is None:
        raise InvalidValue("scheduled_at needs a time zone")
    moment = now or datetime.now(UTC)
    if order.id is None:
        session.flush()  # the id goes into the accession number
    before = {"scheduled_at": _iso(order.scheduled_at), "modality_id": order.scheduled_modality_id}
    order.accession_number = order.accession_number or f"A{moment:%y%m%d}{order.id:07d}"
    order.study_instance_uid = order.study_instance_uid or new_uid()
    order.requested_procedure_id = order.requested_procedure_id or f"RP{order.id}"
    order.scheduled_procedure_step_id = order.scheduled_procedure_step_id or f"SPS{order.id}"
    order.requested_modality = order.requested_modality or modality.type
    order.scheduled_modality_id = modality.id
    order.imaging_center_id = order.imaging_center_id or modality.imaging_center_id
    order.scheduled_at = scheduled_at
    order.scheduled_on = order.scheduled_on or moment
    after = {"scheduled_at": _iso(scheduled_at), "modality_id": modality.id}
    if not advance_order(
        session,
        order,
        RequestStatus.SCHEDULED,
        allowed_from=(RequestStatus.REQUESTED,),
        actor=actor,
        reason="scheduled",
    ):
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.ORDER_RECORD,
                action="order_rescheduled",
                actor=actor,
                target_class="ImagingRequest",
                target_id=str(order.id),
                patient_id=order.patient_id,
                study_instance_uid=order.study_instance_uid,
                accession_number=order.accession_number,
                details={"before": before, "after": after},
            ),
        )
    return order


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
