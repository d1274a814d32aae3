"""Reading the change feed, filtered to what the caller may see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.db.models import ChangeLogEntry
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal

# which entities each role sees in the feed (a referring physician: only entries
# about their own orders, whatever the entity)
FEED_ENTITIES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset({"order", "study", "worklist_item", "report"}),
    Role.AUDITOR: frozenset({"order", "study", "worklist_item", "report"}),
    Role.SCHEDULER: frozenset({"order", "study", "worklist_item"}),
    Role.TECHNOLOGIST: frozenset({"order", "study", "worklist_item"}),
    Role.RADIOLOGIST: frozenset({"order", "study", "worklist_item", "report"}),
    Role.REFERRING_PHYSICIAN: frozenset({"order", "study", "report"}),
}


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    at: datetime
    entity: str
    entity_id: int
    action: str
    payload: dict[str, Any]


def _visible(principal: Principal) -> ColumnElement[bool]:
    condition = ChangeLogEntry.entity.in_(FEED_ENTITIES[principal.role])
    if principal.role is Role.REFERRING_PHYSICIAN:
        return condition & (ChangeLogEntry.owner_user_id == principal.user_id)
    return condition


def list_changes(
    session: Session,
    *,
    principal: Principal,
    since: int,
    limit: int,
    entities: set[str] | None = None,
) -> list[Change]:
    """Entries after ``since`` in feed order, at most ``limit``."""
    query = select(ChangeLogEntry).where(ChangeLogEntry.seq > since, _visible(principal))
    if entities:
        query = query.where(or_(*(ChangeLogEntry.entity == name for name in entities)))
    rows = session.scalars(query.order_by(ChangeLogEntry.seq).limit(limit))
    return [
        Change(
            seq=row.seq,
            at=row.at,
            entity=row.entity,
            entity_id=row.entity_id,
            action=row.action,
            payload=row.payload,
        )
        for row in rows
    ]


def latest_seq(session: Session) -> int:
    value = session.scalar(select(ChangeLogEntry.seq).order_by(ChangeLogEntry.seq.desc()).limit(1))
    return int(value or 0)
