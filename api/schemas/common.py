"""Shapes shared by every resource: the error body and a page of results."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

MAX_PAGE_SIZE = 500
# The largest record id the API takes (paths, queries, bodies). Ids are 64-bit
# columns, but a JSON client (a JavaScript number) holds integers exactly only
# up to 2**53 - 1, and no table comes near it: a larger id can only be unknown,
# and is refused (422) before it reaches the database.
MAX_ID = 2**53 - 1


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    field: str | None = None
    current_state: str | None = None
    existing: Any = None
    errors: list[dict[str, str]] | None = None
    feed_start: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """``items`` from ``offset``; ``total`` counts every match of the filters."""

    items: list[T]
    total: int
    offset: int
    limit: int


class PageParams(BaseModel):
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE)


# the error answers every authenticated route can give, for the OpenAPI document
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no valid bearer token"},
    403: {"model": ErrorResponse, "description": "the role lacks the permission"},
    422: {"model": ErrorResponse, "description": "invalid input; `field` names it"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no such record (or not yours to see)"},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "invalid in the record's current state"},
}
