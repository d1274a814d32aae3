"""What routes receive from the composition root, and who is calling.

Dependencies that do no I/O are ``async def`` so FastAPI calls them on the
event loop instead of handing each to its thread pool (a hop per dependency
per request, measurable on the polled worklist).

Routes open their own unit of work (``context.db.unit_of_work()``) around the
service call, so the transaction commits before the response is sent: a client
that got 2xx knows the change is durable. Reads use ``context.db.read()``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.requests import HTTPConnection

from dicom_node.db.engine import Database
from dicom_node.domain.api_keys import looks_like_key
from dicom_node.domain.errors import AuthenticationFailed, Forbidden
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.transcode import Transcoder
from dicom_node.services.access.api_keys import authenticate_key
from dicom_node.services.access.auth import authenticate
from dicom_node.services.query.retrieve import StudySending
from dicom_node.settings import Settings
from dicom_node.storage import FileStore


@dataclass(frozen=True)
class ApiContext:
    db: Database
    settings: Settings = field(default_factory=Settings)
    # Named liveness probes from the other front-ends (e.g. "dicom": is the SCP
    # listening?), passed in by the composition root so api/ never imports scp/.
    probes: dict[str, Callable[[], bool]] = field(default_factory=dict)
    # Sends a study to a configured peer (POST /api/studies/{id}/send): built
    # once by the composition root (scp/send.py StudySender, its TLS client
    # context and its concurrency limit); None: the route answers 503.
    sender: StudySending | None = None


async def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def get_file_store(request: Request) -> FileStore:
    """The instance store (DICOMweb reads and STOW-RS writes), one per app."""
    store: FileStore = request.app.state.file_store
    return store


async def get_transcoder(request: Request) -> Transcoder:
    """The process's transcoder (its concurrency limit is per process), one per app."""
    transcoder: Transcoder = request.app.state.transcoder
    return transcoder


Store = Annotated[FileStore, Depends(get_file_store)]
TranscoderDep = Annotated[Transcoder, Depends(get_transcoder)]

# auto_error off: a missing token must get our error shape, not FastAPI's
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


# The browser session (api/pages/): a sign-in token from the same ``sign_in`` as
# /api/auth/token, in a cookie, because ``<img>`` and ``EventSource`` cannot send
# an Authorization header. Expiry, lock-out, revocation and audit stay the token's.
SESSION_COOKIE = "dicom_node_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# methods that change nothing (RFC 9110 9.2.1): no CSRF token asked for
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_LABEL = b"dicom-node csrf v1"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a session: an HMAC keyed by the session token, which a
    page of another site cannot read (HttpOnly cookie) and so cannot compute.
    Derived, not stored: nothing to keep per session, and revoked with it."""
    return hmac.new(session_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


async def bearer_token(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> str:
    """The sign-in token (or API key) the request carries: ``Authorization:
    Bearer``, else the session cookie. The browser attaches the cookie to any
    request to the node, a forged cross-site one too (SameSite=Strict stops
    most, not all: a sibling subdomain counts as same-site), so a cookie-borne
    request that may change something must also send the session's CSRF token
    (``X-CSRF-Token``, or the ``csrf_token`` field of a form), which only a page
    of the node has. A bearer token is not ambient: a browser never adds it."""
    if token:
        return token
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthenticationFailed(
            "sign in first: send 'Authorization: Bearer <token>' (or sign in at /sign-in)"
        )
    if looks_like_key(cookie):
        # the cookie is set from a person's sign-in only; a key never travels in it
        raise AuthenticationFailed("unknown token")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(_FORM_TYPES):
            # read once and kept by Starlette: the route's own Form fields still work
            field_value = (await request.form()).get(CSRF_FIELD)
            sent = field_value if isinstance(field_value, str) else None
        if not sent or not hmac.compare_digest(sent.encode(), csrf_token_for(cookie).encode()):
            raise Forbidden(
                f"missing or wrong CSRF token: a request signed in by the session cookie "
                f"that changes something must send the {CSRF_HEADER} header (or the "
                f"{CSRF_FIELD} form field) of its page"
            )
    return cookie


async def source_address(request: Request) -> str | None:
    """``client_address`` as a dependency (async: no thread-pool hop)."""
    return client_address(request)


def current_principal(
    context: Context,
    token: Annotated[str, Depends(bearer_token)],
    address: Annotated[str | None, Depends(source_address)] = None,
) -> Principal:
    """The caller: a person's sign-in token (as ``Bearer``, or the browser's
    session cookie: ``bearer_token``), or a service account's API key
    (``dnk_...``, services/access/api_keys.py, as ``Bearer``). ``address``
    (the caller's, for the key's audit events) is None when called directly."""
    if looks_like_key(token):
        return authenticate_key(context.db, token, source_address=address)
    with context.db.read() as session:
        return authenticate(session, token)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if their role holds ``permission``; else 403."""

    async def check(principal: CurrentUser) -> Principal:
        if not principal.can(permission):
            if principal.scopes is not None and permission not in principal.scopes:
                raise Forbidden(f"the API key's scopes do not allow {permission.value}")
            raise Forbidden(f"role {principal.role.value} may not {permission.value}")
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-matrix test
    return check


def client_address(request: HTTPConnection) -> str | None:
    """The caller's IP address, as the sign-in lock-out counts it and the audit
    trail records it: the TCP peer's, or the one a trusted proxy put in
    X-Forwarded-For (see ``proxy_options``). Anything that is not an IP address
    (a proxy forwarding junk, a Unix socket) is unknown (None); an address is
    written canonically, an IPv4-mapped IPv6 one as IPv4, without an IPv6 zone
    (an interface name of this host, and of unbounded length), so it is at most
    39 characters and fits the 64-character columns it is stored in."""
    if request.client is None or not request.client.host:
        return None
    try:
        ip = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Address(ip.packed))  # drops the zone
    return str(ip)


def proxy_options(trusted_proxies: Iterable[str]) -> dict[str, Any]:
    """uvicorn.Config options: believe X-Forwarded-For / X-Forwarded-Proto only
    from ``trusted_proxies`` (Settings.trusted_proxies: addresses or networks).

    uvicorn's defaults believe them from 127.0.0.1 and ::1, or from the
    addresses in the FORWARDED_ALLOW_IPS environment variable: any local
    process, or a proxy passing on the client's own header, would choose the
    address the lock-out counts and the audit trail records, and turn on HSTS
    over plain HTTP. Both are always passed, so the environment has no say.

    Each entry goes as a network in canonical form (uvicorn reads ``a.b.c.d/n``
    strictly and silently takes one with host bits set as a name that never
    matches), and an IPv4 one also in its IPv4-mapped IPv6 form, as a
    dual-stack listener (bind_host "::") sees IPv4 peers.
    """
    networks: list[str] = []
    for entry in trusted_proxies:
        network = ipaddress.ip_network(entry, strict=False)
        networks.append(str(network))
        if isinstance(network, ipaddress.IPv4Network):
            mapped = f"::ffff:{network.network_address}/{96 + network.prefixlen}"
            networks.append(str(ipaddress.IPv6Network(mapped)))
    return {"proxy_headers": bool(networks), "forwarded_allow_ips": networks}
