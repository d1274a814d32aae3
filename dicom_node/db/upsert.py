"""INSERT ... ON CONFLICT DO NOTHING on both backends, built once and reused.

Two receivers of one study (threads, processes or nodes) race to create the same
patient, study and series rows; the unique constraint decides, never a
check-then-insert. Statements are built once per table, column set and dialect
and executed with parameters: on the C-STORE path, building a statement per
instance cost more than running it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert


@cache
def _statement(dialect: str, table: Table, unique: tuple[str, ...]) -> Insert:
    # The column list is not part of it: SQLAlchemy compiles per parameter-key set.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=list(unique))
        # RETURNING, not rowcount: rowcount is not reliable for this on psycopg
        .returning(table.c.id)
    )


def insert_ignoring_conflict(
    session: Session, model: type[Any], values: dict[str, Any], *, unique: list[str]
) -> int | None:
    """Insert the row unless one with the same unique key exists.

    Returns the new row's id, or None when the row already existed.
    """
    connection = session.connection()
    statement = _statement(connection.dialect.name, model.__table__, tuple(unique))
    inserted: int | None = connection.execute(statement, values).scalar_one_or_none()
    return inserted
