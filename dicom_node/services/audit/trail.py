"""Reading the audit trail. Read-only by design: nothing here (or anywhere) updates
or deletes an audit event, and the database refuses both (triggers, migration
0001). Reading the trail is itself audited: 110101 Audit Log Used (PS3.15 A.5.3.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, UnaryExpression, and_, func, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
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


@dataclass(frozen=True, slots=True)
class AuditMatches:
    """How many events match, and the newest of them (``None``: none do)."""

    total: int
    newest_id: int | None


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
    rows = session.scalars(
        select(AuditEvent)
        .where(*conditions)
        .order_by(*_order(newest_first))
        .offset(offset)
        .limit(limit)
    )
    return AuditEventPage(items=[_info(row) for row in rows], total=int(total))


def count_audit_events(session: Session, *, filters: AuditFilters) -> AuditMatches:
    """The events matching ``filters`` now, in one statement (one snapshot): their
    number and the newest id, the bound to hand :func:`iter_audit_events` so that
    it reads these events only."""
    total, newest_id = session.execute(
        select(func.count(AuditEvent.id), func.max(AuditEvent.id)).where(*_conditions(filters))
    ).one()
    return AuditMatches(
        total=int(total or 0), newest_id=int(newest_id) if newest_id is not None else None
    )


def iter_audit_events(
    db: Database,
    *,
    filters: AuditFilters,
    through_id: int,
    newest_first: bool,
    max_rows: int,
    batch_size: int,
) -> Iterator[list[AuditEventInfo]]:
    """The events matching ``filters`` with an id up to ``through_id``, in batches
    of at most ``batch_size``, at most ``max_rows`` in all, ordered by
    (timestamp, id) like :func:`list_audit_events`. One SELECT per batch, each
    in a read transaction of its own (none is held while the caller works).

    Keyset paging: each batch starts after the (timestamp, id) of the last row
    before it, so its cost does not grow with the rows already read (OFFSET
    would scan them all again), and rows committed meanwhile neither shift nor
    repeat a row: ids are handed out in commit order (services/audit/record.py),
    so every event committed after ``through_id`` was read (whatever timestamp
    it carries) is left out by the id bound.
    """
    conditions = [*_conditions(filters), AuditEvent.id <= through_id]
    after: tuple[datetime, int] | None = None
    left = max_rows
    while left > 0:
        query = select(AuditEvent).where(*conditions)
        if after is not None:
            query = query.where(*_after(after, newest_first))
        limit = min(batch_size, left)
        with db.read() as session:
            batch = [
                _info(row)
                for row in session.scalars(query.order_by(*_order(newest_first)).limit(limit))
            ]
        if batch:
            yield batch
        if len(batch) < limit:
            return
        left -= len(batch)
        after = (batch[-1].timestamp, batch[-1].id)


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


def _order(newest_first: bool) -> tuple[UnaryExpression[Any], UnaryExpression[Any]]:
    # id breaks timestamp ties: events of one transaction share a timestamp often
    if newest_first:
        return AuditEvent.timestamp.desc(), AuditEvent.id.desc()
    return AuditEvent.timestamp.asc(), AuditEvent.id.asc()


def _after(last: tuple[datetime, int], newest_first: bool) -> list[ColumnElement[bool]]:
    """The rows that come after ``last`` (its timestamp and id) in ``_order``."""
    timestamp, event_id = last
    if newest_first:
        # the plain bound on the timestamp lets the timestamp index narrow the scan
        return [
            AuditEvent.timestamp <= timestamp,
            or_(
                AuditEvent.timestamp < timestamp,
                and_(AuditEvent.timestamp == timestamp, AuditEvent.id < event_id),
            ),
        ]
    return [
        AuditEvent.timestamp >= timestamp,
        or_(
            AuditEvent.timestamp > timestamp,
            and_(AuditEvent.timestamp == timestamp, AuditEvent.id > event_id),
        ),
    ]


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
