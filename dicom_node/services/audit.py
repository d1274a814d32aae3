"""Recording audit events. There is deliberately no update or delete here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import AuditRecord
from dicom_node.domain.permissions import Principal


def acting(principal: Principal, source_address: str | None) -> dict[str, Any]:
    """The actor fields of an AuditRecord for what ``principal`` did."""
    return {
        "actor": principal.username,
        "actor_user_id": principal.user_id,
        "actor_role": principal.role.value,
        "source_address": source_address,
    }


def record_audit_event(session: Session, record: AuditRecord) -> None:
    """Insert the event in the caller's unit of work: it commits with the change
    it audits. A Core INSERT, at once: an event never waits for, nor depends on,
    the ORM's flush of other objects (ids it names were flushed to be known),
    and it costs a fraction of an ORM unit of work (a C-FIND's Query event spent
    ~0.6 ms in the ORM flush)."""
    session.execute(
        insert(AuditEvent).values(
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
