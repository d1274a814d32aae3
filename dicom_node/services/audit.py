"""Recording audit events. There is deliberately no update or delete here."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import AuditRecord


def record_audit_event(session: Session, record: AuditRecord) -> None:
    """Add the event to the caller's unit of work: it commits with the change it audits."""
    session.add(
        AuditEvent(
            event_code=record.event_code.value,
            action=record.action,
            outcome=record.outcome.value,
            actor=record.actor,
            actor_user_id=record.actor_user_id,
            actor_role=record.actor_role,
            source_address=record.source_address,
            target_class=record.target_class,
            target_id=record.target_id,
            patient_id=record.patient_id,
            study_instance_uid=record.study_instance_uid,
            accession_number=record.accession_number,
            reason=record.reason,
            details=record.details,
        )
    )
