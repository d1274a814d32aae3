"""What routes receive from the composition root, and who is calling.

Dependencies that do no I/O are ``async def`` so FastAPI calls them on the
event loop instead of handing each to its thread pool (a hop per dependency
per request, measurable on the polled worklist).

Routes open their own unit of work (``context.db.unit_of_work()``) around the
service call, so the transaction commits before the response is sent: a client
that got 2xx knows the change is durable. Reads use ``context.db.read()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from dicom_node.db.engine import Database
from dicom_node.domain.errors import AuthenticationFailed, Forbidden
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.auth import authenticate
from dicom_node.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    db: Database
    settings: Settings = field(default_factory=Settings)
    # Named liveness probes from the other front-ends (e.g. "dicom": is the SCP
    # listening?), passed in by the composition root so api/ never imports scp/.
    probes: dict[str, Callable[[], bool]] = field(default_factory=dict)


async def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]

# auto_error off: a missing token must get our error shape, not FastAPI's
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


async def bearer_token(token: Annotated[str | None, Depends(oauth2_scheme)]) -> str:
    if not token:
        raise AuthenticationFailed("sign in first: send 'Authorization: Bearer <token>'")
    return token


def current_principal(context: Context, token: Annotated[str, Depends(bearer_token)]) -> Principal:
    with context.db.read() as session:
        return authenticate(session, token)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if their role holds ``permission``; else 403."""

    async def check(principal: CurrentUser) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"role {principal.role.value} may not {permission.value}")
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-matrix test
    return check


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None
