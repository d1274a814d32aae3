"""INSERT ... ON CONFLICT DO NOTHING on both backends.

Two receivers of one study (threads, processes or nodes) race to create the same
patient, study and series rows; the unique constraint decides, never a
check-then-insert.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflict(
    session: Session, model: type[Any], values: dict[str, Any], *, unique: list[str]
) -> bool:
    """Insert the row unless one with the same unique key exists; True if inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=unique)
        # RETURNING, not rowcount: through the ORM, rowcount is not reliable on psycopg
        .returning(model.id)
    )
    return session.execute(statement).scalar_one_or_none() is not None
