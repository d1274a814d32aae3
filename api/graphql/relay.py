"""Relay-style connections (edges, cursors, pageInfo) over the services' pages.

The REST listings page by offset and count; a connection here is the same
page: ``first`` is REST's ``limit`` (capped at the same MAX_PAGE_SIZE),
``after`` an opaque cursor that encodes the offset of the edge it names. So a
connection's filters, order and totals are exactly the REST listing's, and
``totalCount`` is REST's ``total``. Backwards paging (``last``/``before``) is
not offered: no REST listing pages backwards either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from api.schemas.common import MAX_PAGE_SIZE
from dicom_node.domain.errors import InvalidValue

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
# the largest offset a REST listing takes (``offset`` le=1_000_000_000): a deep
# OFFSET is a scan the database does before it answers
MAX_OFFSET = 1_000_000_000
_PREFIX = "offset:"


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    total_count: int = strawberry.field(description="every match, not only this page")


def cursor_of(offset: int) -> str:
    return base64.b64encode(f"{_PREFIX}{offset}".encode()).decode()


def page_window(first: int | None, after: str | None) -> tuple[int, int]:
    """``(offset, limit)`` of the page asked for; InvalidValue for a page size
    outside 1..MAX_PAGE_SIZE or a cursor this API did not make."""
    limit = DEFAULT_PAGE_SIZE if first is None else first
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidValue(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    if after is None:
        return 0, limit
    try:
        text = base64.b64decode(after.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidValue("after is not a cursor of this API", field="after") from None
    digits = text.removeprefix(_PREFIX)
    if (
        not text.startswith(_PREFIX)
        or not digits.isdigit()
        or len(digits) > 10
        or int(digits) >= MAX_OFFSET
    ):
        raise InvalidValue("after is not a cursor of this API", field="after")
    return int(digits) + 1, limit


def connection(nodes: Sequence[T], *, total: int, offset: int) -> Connection[T]:
    """A page of ``nodes`` starting at ``offset`` of ``total`` matches."""
    edges = [Edge(cursor=cursor_of(offset + index), node=node) for index, node in enumerate(nodes)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=offset + len(nodes) < total,
            has_previous_page=offset > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )


def _fields(selections: Sequence[Selection]) -> Iterator[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        else:  # a fragment: its fields are the parent's
            yield from _fields(selection.selections)


def selected(selections: Sequence[Selection], *path: str) -> set[str]:
    """The names of the fields asked for at ``path`` below ``selections``,
    through fragments (directives ignored: at worst something is loaded that
    is not sent), e.g. of each node of a page:
    ``selected(info.selected_fields, "worklist", "edges", "node")``."""
    level: list[Selection] = list(selections)
    for name in path:
        level = [
            child for field in _fields(level) if field.name == name for child in field.selections
        ]
    return {field.name for field in _fields(level)}
