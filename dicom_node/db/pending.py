"""Rows a transaction queues in ``session.info`` to insert as its last step
before COMMIT (the change feed's entries, the audit trail's events), kept in
step with savepoints.

A rollback forgets what was queued in what it rolls back: the whole
transaction, or a savepoint (``begin_nested``) and what was queued inside it,
as if each row had been inserted at once. SQLAlchemy's ``after_rollback`` is
not used: it fires for a savepoint's rollback too, and would drop what was
queued before the savepoint, which still commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction


def follow_savepoints(key: str) -> None:
    """Keep the list at ``session.info[key]`` in step with savepoints and
    rollbacks (call once per key, at import)."""
    marks_key = f"{key}.savepoint_marks"

    def mark(session: Session, transaction: SessionTransaction) -> None:
        # begin_nested() flushed before this: the mark follows what was queued
        # for everything done before the savepoint
        if transaction.nested:
            marks: dict[int, int] = session.info.setdefault(marks_key, {})
            marks[id(transaction)] = len(session.info.get(key, ()))

    def forget(session: Session, previous_transaction: SessionTransaction) -> None:
        marks: dict[int, int] = session.info.get(marks_key, {})
        if previous_transaction.nested:
            at = marks.pop(id(previous_transaction), None)
            queued: list[Any] | None = session.info.get(key)
            if at is not None and queued is not None:
                del queued[at:]
        elif previous_transaction.parent is None:
            session.info.pop(key, None)

    def drop_marks(session: Session, transaction: SessionTransaction) -> None:
        # (fires before after_soft_rollback: a savepoint's mark stays until then)
        if transaction.parent is None:
            session.info.pop(marks_key, None)

    event.listen(Session, "after_transaction_create", mark)
    event.listen(Session, "after_soft_rollback", forget)
    event.listen(Session, "after_transaction_end", drop_marks)
