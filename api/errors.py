"""One JSON error shape for every failure, and the domain-error -> HTTP map.

Every error body is ``{"error": {"status", "code", "message", ...}}``:
- 401 ``unauthenticated``: no token, an unknown, expired or revoked one, or a
  failed sign-in (with ``WWW-Authenticate: Bearer``);
- 403 ``forbidden``: signed in, but the role lacks the permission, or the record
  belongs to someone else in a way the caller may know exists (an order of
  another referring physician answers 404 instead: it is not theirs to see);
- 404 ``not_found``; 409 ``conflict`` with ``current_state`` (an invalid
  transition names the state the record is in) or ``existing`` (a duplicate);
- 410 ``gone`` with ``feed_start``: a change-feed ``since`` older than what the
  trim kept (the client reloads its state, then resumes from ``feed_start - 1``);
- 422 ``validation_error`` with ``field`` (the first bad field) and ``errors``;
- 429 ``too_many_requests`` with ``Retry-After``: the caller holds as many
  live-event streams as a user may;
- 503 ``service_unavailable`` with ``Retry-After``: every password-hashing slot
  stayed busy for the whole wait (a sign-in flood), or every transcoding place
  (a DICOMweb frame, rendering or transcoded instance);
- 500 ``internal_error``: logged with a traceback, the body says nothing more;
- 502 ``bad_gateway``: a DICOM peer the node was asked to send a study to
  could not be reached (nothing was sent).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.headers import SECURITY_HEADERS
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

# seconds a client is told to wait when every transcoding place stayed busy
TRANSCODER_RETRY_AFTER = 10

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": status,
        "code": _CODES.get(status, "error"),
        "message": message,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    return domain_error_response(exc)


def domain_error_response(exc: Exception) -> JSONResponse:
    """The answer a domain error gets; the web pages (api/pages/) show its
    status and message on a page instead of the JSON."""
    message = str(exc)
    if isinstance(exc, AuthenticationFailed):
        return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return error_response(403, message)
    if isinstance(exc, NotFound):
        return error_response(404, message)
    if isinstance(exc, Conflict):
        return error_response(409, message, current_state=exc.current, existing=exc.existing)
    if isinstance(exc, Gone):
        return error_response(410, message, feed_start=exc.feed_start)
    if isinstance(exc, AlreadyExists):
        return error_response(409, message)
    if isinstance(exc, InvalidValue):
        return error_response(422, message, field=getattr(exc, "field", None))
    if isinstance(exc, TranscoderBusy):
        # a capacity limit, not the request's fault: the client may come back
        return error_response(503, message, headers={"Retry-After": str(TRANSCODER_RETRY_AFTER)})
    if isinstance(exc, TooManyStreams):
        return error_response(429, message, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, PasswordHashingBusy):
        return error_response(503, message, headers={"Retry-After": str(exc.retry_after)})
    log.error("unmapped domain error %s: %s", type(exc).__name__, message)
    return error_response(400, message)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ()) if part != "body"),
            "message": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    return error_response(
        422, f"{first['field']}: {first['message']}", field=first["field"], errors=errors
    )


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in an HTTP request", exc_info=exc)
    # sent by Starlette's outermost middleware, past SecurityHeaders: added here
    return error_response(500, "internal error; see the node's log", headers=dict(SECURITY_HEADERS))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
