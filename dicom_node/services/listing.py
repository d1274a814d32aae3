"""The small helpers every listing of the HTTP API shares: a page of results
with its total, sort allow-lists turned into ORDER BY, LIKE escaping, counting.

Used by the orders, users, facilities, reconciliation... listings, so a page
and a sort parameter behave the same way in each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from dicom_node.domain.errors import InvalidValue

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listed(Generic[T]):
    """One page of a listing and how many match in all."""

    items: list[T]
    total: int


SortColumn = InstrumentedAttribute[Any] | ColumnElement[Any]


def order_by(
    sort: str | None,
    allowed: Mapping[str, SortColumn],
    *,
    default: str,
    tiebreak: SortColumn,
) -> list[ColumnElement[Any]]:
    """ORDER BY clauses for ``sort`` ("field,-other": ``-`` is descending).

    Only names in ``allowed`` are accepted (InvalidValue on field ``sort``);
    ``tiebreak`` (the primary key) keeps paging stable among equal values.
    """
    clauses: list[ColumnElement[Any]] = []
    for raw in (sort or default).split(","):
        name = raw.strip()
        descending = name.startswith("-")
        name = name.lstrip("-+ ")
        if not name:
            continue
        if name not in allowed:
            options = ", ".join(sorted(allowed))
            raise InvalidValue(f"cannot sort by {name!r} (one of: {options})", field="sort")
        column = allowed[name]
        clauses.append(column.desc() if descending else column.asc())
    clauses.append(tiebreak.asc())
    return clauses


def escape_like(value: str) -> str:
    """``value`` as a literal inside a LIKE pattern (escape character backslash)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def count_of(session: Session, query: Select[*tuple[Any, ...]]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
