"""Reading the change feed, filtered to what the caller may see: the entities
whose read permission they hold (the one permission table, narrowed by an API
key's scopes), and for a referring physician only entries about orders the
visibility rule lets them see (``services/access/visibility.py``), decided at
read time from each entry's ``order_id``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.db.models import ChangeLogEntry
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.visibility import sees_every_order, visible_order_ids

# the permission that lets a caller see each entity of the feed (a referring
# physician: only entries about orders they may see, and a report's only once
# final, db/changes.py)
FEED_ENTITIES: dict[str, Permission] = {
    "order": Permission.ORDERS_READ,
    "study": Permission.STUDIES_READ,
    "worklist_item": Permission.WORKLIST_READ,
    "report": Permission.REPORTS_READ,
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
    entities = [entity for entity, needed in FEED_ENTITIES.items() if principal.can(needed)]
    condition = ChangeLogEntry.entity.in_(entities)
    if sees_every_order(principal):
        return condition
    return condition & ChangeLogEntry.order_id.in_(visible_order_ids(principal))


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


def feed_start(session: Session) -> int:
    """The lowest sequence number still in the feed (0 when it is empty).

    Every entry below it that ever existed has been trimmed (trims delete a
    prefix); every entry from it on is still there."""
    return int(session.scalar(select(func.min(ChangeLogEntry.seq))) or 0)


def missed_trimmed_changes(session: Session, *, since: int) -> bool:
    """Whether a client that last saw entry ``since`` may have missed trimmed
    entries, and must reload its state instead of resuming.

    False for ``since`` 0 (a client with nothing yet reads from the start) and
    for any ``since`` at or after ``feed_start - 1``: everything after it is
    still in the feed. True below that: the entries between ``since`` and
    ``feed_start`` are gone. The one case that errs (on the safe side: a reload
    not needed) is a client whose ``since`` is the very last trimmed entry
    when PostgreSQL skipped sequence numbers right after it (numbers taken by
    transactions that rolled back); SQLite hands out numbers without gaps.

    Call it in the same read session as the page query, AFTER reading the page:
    on PostgreSQL (read committed) a trim committed between the two is then
    seen by this check, never silently behind the page.
    """
    if since <= 0:
        return False
    start = feed_start(session)
    return start > since + 1
