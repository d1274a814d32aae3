"""The change feed, written in the same transaction as the change it describes.

Any ORM flush that creates or modifies an order, study, worklist item or report
queues one entry per object (``after_flush``); just before the transaction
commits the entries are inserted into ``change_log`` (``before_commit``). So a
committed change always has its entry, and a rolled-back one never does. That
holds for savepoints (``session.begin_nested()``) too, as for the audit events
(``services/audit/record.py``): a savepoint that rolls back drops the entries recorded
inside it and keeps those recorded before it (their changes still commit); a
savepoint's release is no COMMIT and writes nothing.

Feed order must be commit order, or a client paging with ``since=N`` could skip
an entry that committed late with a lower number. SQLite has one writer at a
time, so that holds by itself. On PostgreSQL the entries are inserted under a
transaction-scoped advisory lock taken as the very last step before COMMIT: the
sequence numbers are then handed out in commit order, and the lock holder never
waits for anything else, so the lock cannot take part in a deadlock.

On PostgreSQL the same transaction also sends ``pg_notify`` with the highest new
sequence number, which PostgreSQL delivers at commit to every listening
session: live streams on any node wake at once instead of polling
(see ``notify.py``).

Core statements (the C-STORE hot path) bypass the ORM; ingest records its own
entries with :func:`record_change`.

Each entity changed by a transaction is announced once: a transaction flushes
many times (matching a study flushes the study, then the order, then the
study again), and a Core change may be recorded next to the ORM's view of the
same row, so the queued entries are coalesced per (entity, id) when they are
written: the first action (a row created and then updated is ``created``, one
updated and then deleted is ``deleted``, one created and deleted leaves
nothing), the payloads merged with the later values winning (the state at
commit), at the place of the entity's first entry.

Each entry records the order behind it (``order_id``): the visibility rule
(``services/access/visibility.py``) is applied when the feed is read, so a
referring physician linked to an order later sees its later changes. A report
entry records its order only once the report is final: a referring physician
sees a report when it is signed, not its drafts. A study linked to an order
after its report was signed announces the report again, under the order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert, inspect, select, text
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    ChangeLogEntry,
    DicomStudy,
    ImagingRequest,
    Report,
    WorklistItem,
)
from dicom_node.db.pending import follow_savepoints
from dicom_node.db.types import utcnow
from dicom_node.domain.enums import ReportStatus

_PENDING = "dicom_node.pending_changes"
# arbitrary but fixed: the advisory lock key of the change feed
FEED_LOCK_KEY = 7_406_001
# the LISTEN/NOTIFY channel announcing new entries (payload: the highest new seq)
NOTIFY_CHANNEL = "dicom_node_changes"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _describe(obj: object) -> tuple[str, dict[str, Any], int | None] | None:
    """(entity name, payload, owner order id) for a tracked object, else None."""
    if isinstance(obj, ImagingRequest):
        return (
            "order",
            {
                "status": obj.status,
                "priority": obj.priority,
                "scheduled_at": _iso(obj.scheduled_at),
            },
            obj.id,
        )
    if isinstance(obj, DicomStudy):
        return (
            "study",
            {
                "status": obj.status,
                "metadata_status": obj.metadata_status,
                "completeness": obj.completeness,
                "order_id": obj.imaging_request_id,
            },
            obj.imaging_request_id,
        )
    if isinstance(obj, WorklistItem):
        return (
            "worklist_item",
            {
                "queue_type": obj.queue_type,
                "status": obj.status,
                "priority": obj.priority,
                "assigned_to_id": obj.assigned_to_id,
                "study_id": obj.dicom_study_id,
                "order_id": obj.imaging_request_id,
                "overdue": obj.overdue,
                "version": obj.version,
            },
            obj.imaging_request_id,
        )
    if isinstance(obj, Report):
        return (
            "report",
            {
                "status": obj.status,
                "version": obj.version,
                "study_id": obj.dicom_study_id,
                "critical_flag": obj.critical_flag,
            },
            None,
        )
    return None


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _context: Any) -> None:
    pending: list[dict[str, Any]] = session.info.setdefault(_PENDING, [])
    for action, objects in (
        ("created", session.new),
        ("updated", session.dirty),
        ("deleted", session.deleted),
    ):
        for obj in objects:
            if action == "updated" and not session.is_modified(obj):
                continue
            described = _describe(obj)
            if described is None:
                continue
            entity, payload, order_id = described
            study_id = payload.get("study_id") if entity == "report" else None
            pending.append(
                {
                    "entity": entity,
                    "entity_id": obj.id,
                    "action": action,
                    "payload": payload,
                    "_order_id": order_id,
                    "_study_id": study_id,
                }
            )
            if action == "updated" and isinstance(obj, DicomStudy):
                pending.extend(_signed_report_of_linked_study(session, obj))


def _signed_report_of_linked_study(session: Session, study: DicomStudy) -> list[dict[str, Any]]:
    """A study linked to an order (by a person, the rematch job) that already has
    a signed report: the report is announced again, now under that order. Its
    earlier entries recorded no order (there was none), so without this the
    order's referring physician could read the report but never hear of it."""
    history = inspect(study).attrs.imaging_request_id.history
    if not history.added or study.imaging_request_id is None:
        return []
    with session.no_autoflush:
        report = session.scalars(
            select(Report).where(
                Report.dicom_study_id == study.id, Report.status == ReportStatus.FINAL.value
            )
        ).first()
    if report is None:
        return []
    described = _describe(report)
    assert described is not None
    _, payload, _ = described
    return [
        {
            "entity": "report",
            "entity_id": report.id,
            "action": "updated",
            "payload": payload,
            "_order_id": None,
            "_study_id": study.id,
        }
    ]


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    # SQLAlchemy fires this for a savepoint's release too: that is no COMMIT
    # (the entries could still roll back with an enclosing savepoint, and on
    # PostgreSQL the feed lock would be held from here on, taken before the
    # audit chain's: see the lock order in services/audit/record.py)
    if session.in_nested_transaction():
        return
    session.flush()
    pending: list[dict[str, Any]] = session.info.pop(_PENDING, [])
    if pending:
        _insert(session, pending)


follow_savepoints(_PENDING)


def record_change(
    session: Session,
    *,
    entity: str,
    entity_id: int,
    action: str,
    payload: dict[str, Any],
    order_id: int | None = None,
) -> None:
    """Queue an entry for a change made with Core statements (ingest)."""
    session.info.setdefault(_PENDING, []).append(
        {
            "entity": entity,
            "entity_id": entity_id,
            "action": action,
            "payload": payload,
            "_order_id": order_id,
            "_study_id": None,
        }
    )


def _coalesced(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (entity, id): see the module docstring."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in pending:
        key = (entry["entity"], entry["entity_id"])
        seen = merged.get(key)
        if seen is None or seen["action"] is None:
            # new, or made again after it was created and deleted (SQLite reuses
            # the highest id once that row is gone)
            merged.pop(key, None)
            merged[key] = {**entry, "payload": dict(entry["payload"])}
            continue
        seen["payload"].update(entry["payload"])
        for link in ("_order_id", "_study_id"):
            if entry[link] is not None:
                seen[link] = entry[link]
        if entry["action"] == "deleted":
            seen["action"] = None if seen["action"] == "created" else "deleted"
    return [entry for entry in merged.values() if entry["action"] is not None]


def _insert(session: Session, pending: list[dict[str, Any]]) -> None:
    pending = _coalesced(pending)
    if not pending:
        return
    connection = session.connection()
    # a report's entry reaches a referring physician through its study's order
    study_ids = {e["_study_id"] for e in pending if e["_study_id"] is not None}
    study_orders: dict[int, int | None] = {}
    if study_ids:
        study_orders = dict(
            connection.execute(
                select(DicomStudy.id, DicomStudy.imaging_request_id).where(
                    DicomStudy.id.in_(study_ids)
                )
            ).all()
        )
    now = utcnow()
    rows = []
    for entry in pending:
        order_id = entry["_order_id"]
        if order_id is None and entry["_study_id"] is not None:
            order_id = study_orders.get(entry["_study_id"])
        if entry["entity"] == "report" and entry["payload"].get("status") != "final":
            # the referring physician sees a report once it is signed, not its drafts
            order_id = None
        rows.append(
            {
                "at": now,
                "entity": entry["entity"],
                "entity_id": entry["entity_id"],
                "action": entry["action"],
                "payload": entry["payload"],
                "order_id": order_id,
            }
        )
    if connection.dialect.name != "postgresql":
        connection.execute(insert(ChangeLogEntry), rows)
        return
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK_KEY})
    seqs = connection.execute(insert(ChangeLogEntry).returning(ChangeLogEntry.seq), rows)
    # delivered at COMMIT to every listening session, on every node (db/notify.py);
    # never for a transaction that rolls back
    connection.execute(
        text("SELECT pg_notify(:channel, :seq)"),
        {"channel": NOTIFY_CHANNEL, "seq": str(max(seqs.scalars().all()))},
    )
