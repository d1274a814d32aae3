"""The (SOP class, transfer syntax) pairs the store holds: table ``held_syntaxes``.

The C-GET acceptor (scp/get_negotiation.py) reads them to choose, before it
knows what will be retrieved, which syntax to accept for a requester's storage
contexts; a lossy one comes first only for a class held in that syntax alone,
so the pairs must be exact, never a sample or a cache.

Written by ingest with the instance row, in its transaction
(:func:`record_held_syntax`): what commits the instance commits its pair. A
process-local set of the pairs known to be in the table spares every instance
but the first of a pair any statement; the table is the truth (several DICOM
worker processes, several nodes on one PostgreSQL), the set only an
optimisation: a pair joins it once the transaction that wrote it (or found it
there) has committed, never before, so a rolled-back instance cannot leave a
pair the table lacks marked known.

Pairs are never removed, not when the last instance of a pair is purged or
deleted: a stale pair can only make the C-GET acceptor prefer a native syntax
(a class it still lists in a lossy syntax and in another), and every instance
can be sent in a native syntax (decoded if need be). Removing it would need a
count or a scan on every delete, and a race with a concurrent ingest of the
pair.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from functools import cache

from sqlalchemy import Pool, Table, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from dicom_node.db.models import HeldSyntax

_Pair = tuple[str, str]

# Pairs known to be in the table, per database (keyed by its connection pool:
# one per Database, shared by its writer and reader engines). A set's add and
# membership test are atomic; two threads writing the same new pair both run
# an INSERT that ignores the conflict, which is harmless.
_known: weakref.WeakKeyDictionary[Pool, set[_Pair]] = weakref.WeakKeyDictionary()


@cache
def _insert(dialect: str) -> Insert:
    # as db/upsert.py, without RETURNING: the table has no id
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = HeldSyntax.__table__
    assert isinstance(table, Table)
    return insert(table).on_conflict_do_nothing(
        index_elements=["sop_class_uid", "transfer_syntax_uid"]
    )


def record_held_syntax(session: Session, sop_class_uid: str, transfer_syntax_uid: str) -> None:
    """In the transaction that inserts (or rewrites) an instance row: make sure
    its pair is in the table. No statement once the pair is known here."""
    pair = (sop_class_uid, transfer_syntax_uid)
    connection = session.connection()
    known = _known.get(connection.engine.pool)
    if known is None:
        known = _known.setdefault(connection.engine.pool, set())
    elif pair in known:
        return
    connection.execute(
        _insert(connection.dialect.name),
        {"sop_class_uid": sop_class_uid, "transfer_syntax_uid": transfer_syntax_uid},
    )

    # Known once this transaction commits; a rollback forgets it (the session
    # could begin another one). Listeners on this session only, dropped with
    # it, and only for the first instance of a pair in this process.
    pending = [pair]

    def committed(_session: Session) -> None:
        known.update(pending)

    def rolled_back(_session: Session) -> None:
        pending.clear()

    event.listen(session, "after_commit", committed, once=True)
    event.listen(session, "after_rollback", rolled_back, once=True)


def held_syntaxes(session: Session, sop_class_uids: Collection[str]) -> dict[str, frozenset[str]]:
    """SOP class -> the transfer syntaxes the store holds it in, for the classes
    asked (one query on the primary key); a class never stored is absent."""
    if not sop_class_uids:
        return {}
    statement = select(HeldSyntax.sop_class_uid, HeldSyntax.transfer_syntax_uid).where(
        HeldSyntax.sop_class_uid.in_(sorted(set(sop_class_uids)))
    )
    held: dict[str, set[str]] = {}
    for sop_class, syntax in session.execute(statement):
        held.setdefault(str(sop_class), set()).add(str(syntax))
    return {sop_class: frozenset(syntaxes) for sop_class, syntaxes in held.items()}
