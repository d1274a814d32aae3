"""Every GraphQL error carries ``extensions.code``, and none a stack trace.

The services raise the domain errors REST maps to HTTP statuses
(api/errors.py); here they become GraphQL errors with the same meaning:

| domain error | code | REST |
|---|---|---|
| AuthenticationFailed | ``UNAUTHENTICATED`` | 401 |
| Forbidden | ``FORBIDDEN`` | 403 |
| NotFound | ``NOT_FOUND`` | 404 |
| Conflict, AlreadyExists | ``CONFLICT`` (+ ``currentState``, ``existing``) | 409 |
| Gone | ``GONE`` (+ ``feedStart``) | 410 |
| InvalidValue | ``BAD_USER_INPUT`` (+ ``field``) | 422 |
| a capacity limit | ``SERVICE_UNAVAILABLE`` (+ ``retryAfter``) | 503 |
| a subscription over the user's cap | ``TOO_MANY_REQUESTS`` (+ ``retryAfter``) | 429 |
| a document that does not validate | ``GRAPHQL_VALIDATION_FAILED`` | |
| a variable its type refuses | ``BAD_USER_INPUT`` | 422 |
| anything else | ``INTERNAL_SERVER_ERROR``, message "internal error" | 500 |

The last is logged here with its traceback (the answer says nothing more:
no exception text, which may quote a value, leaves the node). Strawberry's own
error log is replaced (``Schema.process_errors`` in schema.py) so an expected
refusal is not logged as a failure with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.graphql.inputs import camel, camel_keys
from api.streams import TooManyStreams
from dicom_node.domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidValue,
    NotFound,
)
from dicom_node.domain.transcode import TranscoderBusy
from dicom_node.services.access.passwords import PasswordHashingBusy

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"


def extensions_of(exc: BaseException) -> dict[str, Any] | None:
    """The ``extensions`` of the GraphQL error a raised exception becomes;
    None for an exception nobody expected (an internal error)."""
    if isinstance(exc, AuthenticationFailed):
        return {"code": "UNAUTHENTICATED"}
    if isinstance(exc, Forbidden):
        return {"code": "FORBIDDEN"}
    if isinstance(exc, NotFound):
        return {"code": "NOT_FOUND"}
    if isinstance(exc, Conflict):
        found: dict[str, Any] = {"code": "CONFLICT"}
        if exc.current is not None:
            found["currentState"] = exc.current
        if exc.existing is not None:
            # the REST shape of the record in the way, in this API's spelling
            found["existing"] = camel_keys(exc.existing)
        return found
    if isinstance(exc, AlreadyExists):
        return {"code": "CONFLICT"}
    if isinstance(exc, Gone):
        return {"code": "GONE", "feedStart": exc.feed_start}
    if isinstance(exc, InvalidValue):
        # the caller's spelling of the field (the services name it in snake_case)
        return {"code": "BAD_USER_INPUT", "field": camel(exc.field) if exc.field else None}
    if isinstance(exc, TranscoderBusy):
        return {"code": "SERVICE_UNAVAILABLE"}
    if isinstance(exc, TooManyStreams):
        return {"code": "TOO_MANY_REQUESTS", "retryAfter": exc.retry_after}
    if isinstance(exc, PasswordHashingBusy):
        return {"code": "SERVICE_UNAVAILABLE", "retryAfter": exc.retry_after}
    if isinstance(exc, DomainError):
        return {"code": "BAD_REQUEST"}
    return None


def public_error(error: GraphQLError) -> GraphQLError:
    """``error`` as the client may see it."""
    original = error.original_error
    if original is None:
        # the document did not parse or validate, or a limit refused it
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
        return GraphQLError(
            error.message, nodes=error.nodes, path=error.path, extensions=extensions
        )
    if error.path is None and isinstance(original, GraphQLError):
        # a variable's value its declared type refuses (an unknown enum name, an
        # Int past 32 bits): graphql-core's coercion, before any resolver ran
        return GraphQLError(error.message, nodes=error.nodes, extensions={"code": "BAD_USER_INPUT"})
    if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
        return error
    known = extensions_of(original)
    if known is None:
        log.error(
            "GraphQL resolver failed at %s",
            ".".join(str(part) for part in error.path or ()),
            exc_info=original,
        )
        return GraphQLError(
            INTERNAL_MESSAGE,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR"},
        )
    return GraphQLError(str(original), nodes=error.nodes, path=error.path, extensions=known)


class PublicErrors(SchemaExtension):
    """Rewrites the operation's errors (``public_error``) before they are sent."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [public_error(error) for error in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each result sent over WebSocket (a subscription's events and the error
        that ends it): ``on_operation`` only sees the operation's end, after
        every result has been sent."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [public_error(error) for error in errors]
        yield
