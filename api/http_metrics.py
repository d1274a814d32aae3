"""Counts and times every HTTP request for ``GET /metrics`` (dicom_node/metrics.py).

A request is labelled with the service it was for (``service_of``), never with
its path: a path carries study and instance UIDs, and a label per UID would be
PHI in the metrics and a series per study. The DICOMweb services are told apart
because an administrator watches them separately (a viewer's QIDO searches, a
pipeline's WADO-RS pulls, thumbnails, STOW-RS uploads); the live event stream is
counted but not timed, since it lasts as long as its client stays.

A pure ASGI middleware (as api/headers.py, for the same reason): a streamed
answer (a WADO-RS study, the event stream) passes through unbuffered, and its
duration ends with its last byte, not with its first.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.docs import ASSETS_URL, DOCS_PAGES
from api.pages.paths import STATIC_URL, is_page_path
from dicom_node.metrics import HTTP_REQUESTS, HTTP_RESPONSE_BYTES, HTTP_SECONDS

DICOMWEB = "/dicomweb/"
# the last segment of a QIDO-RS search (PS3.18 10.6): studies, series or instances
QIDO_LAST = frozenset({"studies", "series", "instances"})
RENDERED_LAST = frozenset({"rendered", "thumbnail"})


def service_of(method: str, path: str) -> str:
    """The service a request was for: one of metrics.HTTP_SERVICES."""
    if path.startswith(DICOMWEB):
        if method == "POST":
            return "dicomweb_stow"
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if last in QIDO_LAST:
            return "dicomweb_qido"
        if last in RENDERED_LAST:
            return "dicomweb_rendered"
        return "dicomweb_wado"
    if path == "/api/events":
        return "events"
    if path.startswith("/api/"):
        return "api"
    if path == "/metrics":
        return "metrics"
    if path == "/health":
        return "health"
    if path in DOCS_PAGES or path.startswith(ASSETS_URL + "/") or path == "/openapi.json":
        return "docs"
    if is_page_path(path) or path.startswith(STATIC_URL + "/"):
        return "pages"
    return "other"


def status_class(status: int | None) -> str:
    """``2xx`` ... ``5xx``; ``error`` when no status was sent."""
    if status is None or not 200 <= status < 600:
        return "error"
    return f"{status // 100}xx"


class HttpMetrics:
    """Counts each HTTP request when it ends, by service and status class; times it
    (but the event stream) and adds up the bytes of its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = service_of(scope["method"], scope["path"])
        started = time.perf_counter()
        status: int | None = None
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            HTTP_REQUESTS.labels(service=service, status=status_class(status)).inc()
            HTTP_RESPONSE_BYTES.labels(service=service).inc(sent)
            if service != "events":
                HTTP_SECONDS.labels(service=service).observe(time.perf_counter() - started)
