"""ImagingRequest (order) state changes: every one audited with before and after.

DOMAIN.md: requested -> scheduled -> in_progress -> performed; in_progress ->
discontinued; requested/scheduled -> cancelled. Each caller names the states it
may move the order from, so a step that does not apply is a no-op, not an error
(a late image for a performed order changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingRequest
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import RequestStatus
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
    """Move ``order`` to ``to`` if it is in one of ``allowed_from``; True if moved."""
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
