"""Recording audit events. There is deliberately no update or delete here.

Every audit row is written here, and only here, chained to the row before it
(``domain/audit_chain.py``): ``prev_hash`` is the ``row_hash`` of the newest
row, ``row_hash`` covers the row's content, its id and ``prev_hash``.

The chain must not fork: two transactions appending at once must not both
take the same newest row as their predecessor. So the rows of a transaction
are inserted as the last step before its COMMIT (``before_commit``), after
reading the chain head under a lock that the COMMIT releases:

- PostgreSQL: a transaction-scoped advisory lock (:data:`AUDIT_CHAIN_LOCK_KEY`),
  taken last, like the change feed's (``db/changes.py``), so it is held for a
  few statements and the commit, never while the transaction does its work
  (a C-FIND writes an audit row per query and must not queue behind an
  ingest). The head is read by a statement that starts after the lock is
  held (READ COMMITTED: it sees every chain row committed before).
- SQLite: one writer at a time already (BEGIN IMMEDIATE); a transaction that
  read an older state cannot write at all (SQLITE_BUSY_SNAPSHOT).

Whatever happens, the database keeps the chain linear: ``prev_hash`` is
unique (migration 0008), so a second successor of one row is refused, never
stored.

Lock order: this hook is registered in front of the change feed's (insert=True),
so a transaction holding both advisory locks always took this one first: the
two cannot deadlock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, event, insert, text
from sqlalchemy.orm import Session

from dicom_node.db.models import AuditEvent
from dicom_node.db.pending import follow_savepoints
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditRecord
from dicom_node.domain.audit_chain import GENESIS_HASH, as_stored_json, row_hash

_PENDING = "dicom_node.pending_audit_events"
# arbitrary but fixed: the advisory lock key of the audit chain (the change
# feed's is 7_406_001)
AUDIT_CHAIN_LOCK_KEY = 7_406_002
# audit_events.source_address is String(64): a longer address must not fail the
# INSERT (PostgreSQL refuses it), which would take down the change it audits.
# api/deps.py hands over IP addresses only (at most 39 characters).
_SOURCE_ADDRESS_LENGTH = 64


def record_audit_event(
    session: Session, record: AuditRecord, *, timestamp: datetime | None = None
) -> None:
    """Record the event in the caller's unit of work: it commits with the change
    it audits, or not at all. The row is inserted (a Core INSERT: it costs a
    fraction of an ORM unit of work) just before the transaction commits, as
    the next link of the chain (see the module doc). ``timestamp``: when the
    event happened, if not now (the chain orders rows by id, not by time)."""
    session.info.setdefault(_PENDING, []).append(
        {
            "timestamp": timestamp if timestamp is not None else utcnow(),
            "event_code": record.event_code.value,
            "action": record.action,
            "outcome": record.outcome.value,
            "actor": record.actor,
            "actor_user_id": record.actor_user_id,
            "actor_role": record.actor_role,
            "source_address": (
                record.source_address[:_SOURCE_ADDRESS_LENGTH]
                if record.source_address is not None
                else None
            ),
            "target_class": record.target_class,
            "target_id": record.target_id,
            "patient_id": record.patient_id,
            "study_instance_uid": record.study_instance_uid,
            "accession_number": record.accession_number,
            "reason": record.reason,
            "details": record.details,
        }
    )


@event.listens_for(Session, "before_commit", insert=True)
def _write(session: Session) -> None:
    # a savepoint's release is no COMMIT: the lock would be held from here on
    if session.in_nested_transaction() or not session.info.get(_PENDING):
        return
    # the ORM's pending objects first: an event may name a row flushed meanwhile
    session.flush()
    append_chained(session.connection(), session.info.pop(_PENDING))


follow_savepoints(_PENDING)


_HEAD_SQL = text("SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1")
# PostgreSQL, in one round trip: the chain head and the ids the sequence hands
# out (it stays in step with the table). A statement of its own, after the lock:
# its snapshot then holds every row committed under the lock before.
_HEAD_AND_IDS_SQL = text(
    "SELECT head.id, head.row_hash, ARRAY(SELECT nextval(pg_get_serial_sequence("
    "'audit_events', 'id')) FROM generate_series(1, :n)) AS ids "
    "FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT id, row_hash FROM audit_events "
    "ORDER BY id DESC LIMIT 1) AS head ON true"
)


def append_chained(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (audit_events columns but id and the hashes) at the head
    of the chain, in this order. Call as the last step of a transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK_KEY}
        )
        head_id, head_hash, allocated = connection.execute(
            _HEAD_AND_IDS_SQL, {"n": len(rows)}
        ).one()
        ids = sorted(int(value) for value in allocated)
    else:
        head = connection.execute(_HEAD_SQL).first()
        head_id, head_hash = head if head is not None else (None, None)
        ids = [0] * len(rows)  # SQLite: the next rowid, as it would pick
    previous_id = int(head_id) if head_id is not None else 0
    previous_hash = str(head_hash) if head_hash is not None else GENESIS_HASH
    values = []
    for allocated_id, row in zip(ids, rows, strict=True):
        # never below the head: a row written with a larger id by someone else
        # is passed over, not interleaved
        row_id = max(allocated_id, previous_id + 1)
        chained = {**row, "id": row_id, "details": as_stored_json(row["details"])}
        chained["prev_hash"] = previous_hash
        chained["row_hash"] = row_hash(chained, previous_hash)
        values.append(chained)
        previous_id, previous_hash = row_id, chained["row_hash"]
    connection.execute(insert(AuditEvent), values)
