"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite has no time zones, so values are normalised to UTC on the way in and
    marked UTC on the way out; naive datetimes are refused to catch local-time bugs.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime, *, clamp: bool = False) -> datetime:
    """``value`` in UTC; a naive value is UTC already (the node stores and
    compares UTC only).

    A moment UTC cannot hold (year 1 or 9999 with an offset) is
    ValueError("time out of range"), a 422 where a schema validates it; with
    ``clamp`` it is the calendar's end instead, which for a search bound means
    the same."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        if not clamp:
            raise ValueError("time out of range") from None
        edge = datetime.max if value.year > 1 else datetime.min
        return edge.replace(tzinfo=UTC)
