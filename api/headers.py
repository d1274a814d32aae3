"""Security headers on every HTTP answer of the node.

- ``Cache-Control: no-store`` (and ``Pragma: no-cache`` for HTTP/1.0 caches) on
  every answer but the documentation's static assets: the token endpoint must
  say so (RFC 6749 5.1), and any JSON answer may carry patient data, which no
  browser cache, proxy or shared cache may keep. The API serves no images, so
  no answer needs a private cache; a route that sets its own Cache-Control
  keeps it.
- ``X-Content-Type-Options: nosniff``: a browser never runs a JSON answer (that
  echoes a value someone stored) as a script or a page.
- ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``: no page of the
  node is framed by another site (clickjacking the documentation's forms).
- ``Referrer-Policy: no-referrer``: a link out of the documentation pages sends
  no URL (which may hold query parameters) to another site.
- ``Content-Security-Policy``: the API's answers load nothing (``default-src
  'none'``); the documentation pages load only from the node itself, so a page
  that tried to reach the internet (a CDN, Swagger's validator) is stopped by
  the browser too. The application's pages (api/pages/) get ``APP_CSP``:
  scripts and styles from the node's own files only, never inline (so an
  injected ``<script>`` or ``style=`` does not run), forms posted to the node
  only.
- ``Strict-Transport-Security`` when the request came over HTTPS.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware): streamed answers
(the live events) pass through unbuffered and the client's disconnect still
reaches them.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# on every answer, the 500 included (api/errors.py sends that one past us)
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}
# the documentation pages (api/docs.py): their scripts and styles, from the node
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# the application's pages (api/pages/): no 'unsafe-inline' anywhere; images from
# the node, or made by its scripts (data:, blob:: rendered frames, later)
APP_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000"


class SecurityHeaders:
    """Adds the headers above to every HTTP answer that does not set them itself.

    ``docs_pages`` get ``DOCS_CSP``, the paths ``is_app_page`` says are pages
    ``APP_CSP``; answers under ``assets_prefixes`` (static files from an
    installed package, no data) may be cached.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_pages: frozenset[str],
        is_app_page: Callable[[str], bool] = lambda path: False,
        assets_prefixes: tuple[str, ...],
    ) -> None:
        self.app = app
        self.docs_pages = docs_pages
        self.is_app_page = is_app_page
        self.assets_prefixes = assets_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        wanted = dict(SECURITY_HEADERS)
        if path in self.docs_pages:
            wanted["Content-Security-Policy"] = DOCS_CSP
        elif self.is_app_page(path):
            wanted["Content-Security-Policy"] = APP_CSP
        if path.startswith(self.assets_prefixes):
            del wanted["Cache-Control"], wanted["Pragma"]
        if scope.get("scheme") == "https":
            wanted["Strict-Transport-Security"] = HSTS
        extra = [(name.lower().encode(), value.encode()) for name, value in wanted.items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
