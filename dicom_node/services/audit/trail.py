"""Reading the audit trail. Read-only by design: nothing here (or anywhere) updates
or deletes an audit event, and the database refuses both (triggers, migration
0001). Reading the trail is itself audited: 110101 Audit Log Used (PS3.15 A.5.3.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import audit_log_used_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.errors import NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.vr import check_text
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """Every filter is an exact match; ``since`` is inclusive, ``until`` exclusive."""

    actor: str | None = None
    actor_user_id: int | None = None
    action: str | None = None
    event_code: str | None = None
    target_class: str | None = None
    target_id: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    until: datetime | None = None

    def asked(self) -> dict[str, Any]:
        """The filters given, JSON-ready: what the 110101 event records."""
        values: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value is None:
                continue
            values[name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return values


@dataclass(frozen=True, slots=True)
class AuditEventInfo:
    id: int
    timestamp: datetime
    event_code: str
    action: str
    outcome: str
    actor: str | None
    actor_user_id: int | None
    actor_role: str | None
    source_address: str | None
    target_class: str | None
    target_id: str | None
    patient_id: str | None
    study_instance_uid: str | None
    accession_number: str | None
    reason: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEventPage:
    items: list[AuditEventInfo]
    total: int


_TEXT_FILTERS = {
    "actor": AuditEvent.actor,
    "action": AuditEvent.action,
    "event_code": AuditEvent.event_code,
    "target_class": AuditEvent.target_class,
    "target_id": AuditEvent.target_id,
    "patient_id": AuditEvent.patient_id,
    "study_instance_uid": AuditEvent.study_instance_uid,
    "accession_number": AuditEvent.accession_number,
}


def list_audit_events(
    session: Session,
    *,
    filters: AuditFilters,
    offset: int,
    limit: int,
    newest_first: bool = True,
) -> AuditEventPage:
    """One page of the events matching ``filters``, newest first by default."""
    conditions = _conditions(filters)
    total = session.scalar(select(func.count(AuditEvent.id)).where(*conditions)) or 0
    # id breaks timestamp ties: events of one transaction share a timestamp often
    order = (
        (AuditEvent.timestamp.desc(), AuditEvent.id.desc())
        if newest_first
        else (AuditEvent.timestamp.asc(), AuditEvent.id.asc())
    )
    rows = session.scalars(
        select(AuditEvent).where(*conditions).order_by(*order).offset(offset).limit(limit)
    )
    return AuditEventPage(items=[_info(row) for row in rows], total=int(total))


def get_audit_event(session: Session, *, event_id: int) -> AuditEventInfo:
    row = session.get(AuditEvent, event_id)
    if row is None:
        raise NotFound(f"no audit event {event_id}")
    return _info(row)


def record_audit_log_use(
    session: Session,
    *,
    principal: Principal,
    filters: dict[str, Any],
    source_address: str | None,
    target_id: str | None = None,
) -> None:
    """110101 Audit Log Used: who read the trail, with which filters."""
    record_audit_event(
        session,
        audit_log_used_event(user_actor(principal, source_address), filters, target_id),
    )


def _conditions(filters: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for name, column in _TEXT_FILTERS.items():
        value = getattr(filters, name)
        if value is not None:
            check_text(name, value)
            conditions.append(column == value)
    if filters.actor_user_id is not None:
        conditions.append(AuditEvent.actor_user_id == filters.actor_user_id)
    if filters.outcome is not None:
        conditions.append(AuditEvent.outcome == filters.outcome.value)
    if filters.since is not None:
        conditions.append(AuditEvent.timestamp >= filters.since)
    if filters.until is not None:
        conditions.append(AuditEvent.timestamp < filters.until)
    return conditions


def _info(row: AuditEvent) -> AuditEventInfo:
    return AuditEventInfo(
        id=row.id,
        timestamp=row.timestamp,
        event_code=row.event_code,
        action=row.action,
        outcome=row.outcome,
        actor=row.actor,
        actor_user_id=row.actor_user_id,
        actor_role=row.actor_role,
        source_address=row.source_address,
        target_class=row.target_class,
        target_id=row.target_id,
        patient_id=row.patient_id,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        reason=row.reason,
        details=dict(row.details or {}),
    )
