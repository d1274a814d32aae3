"""Sign-in (OAuth2 password flow), sign-out and the caller's own profile."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from api.deps import Context, CurrentUser, bearer_token, client_address
from api.schemas.common import AUTH_ERRORS, ErrorResponse
from dicom_node.domain.permissions import ROLE_PERMISSIONS
from dicom_node.services.access.auth import SignInPolicy, sign_in, sign_out

router = APIRouter(prefix="/api", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_at: datetime
    role: str


class MePublic(BaseModel):
    id: int
    username: str
    role: str
    display_name: str | None
    is_lead: bool
    permissions: list[str]


@router.post(
    "/auth/token",
    response_model=TokenPublic,
    responses={
        401: {"model": ErrorResponse, "description": "wrong credentials or locked"},
        503: {
            "model": ErrorResponse,
            "description": "too many sign-ins at once: retry after Retry-After seconds",
        },
    },
)
def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], context: Context, request: Request
) -> TokenPublic:
    """Sign in with username and password (form fields); returns an expiring token.

    Repeated failures lock the account for the address they come from (and,
    from addresses the account never signed in from, for all such addresses at
    a higher count): see services/access/auth.py. 503 with Retry-After when every
    password-hashing slot stayed busy for the whole wait."""
    settings = context.settings
    policy = SignInPolicy(
        token_ttl=timedelta(minutes=settings.api_token_ttl_minutes),
        max_failures=settings.sign_in_max_failures,
        lockout=timedelta(minutes=settings.sign_in_lockout_minutes),
    )
    issued = sign_in(
        context.db,
        username=form.username,
        password=form.password,
        policy=policy,
        source_address=client_address(request),
    )
    return TokenPublic(
        access_token=issued.token, expires_at=issued.expires_at, role=issued.principal.role.value
    )


@router.post("/auth/logout", status_code=204, responses=AUTH_ERRORS)
def revoke_token(
    context: Context,
    user: CurrentUser,
    token: Annotated[str, Depends(bearer_token)],
    request: Request,
) -> Response:
    """Revoke the token this request carries (audited)."""
    with context.db.unit_of_work() as session:
        sign_out(session, token, principal=user, source_address=client_address(request))
    return Response(status_code=204)


@router.get("/me", response_model=MePublic, responses=AUTH_ERRORS)
def me(user: CurrentUser) -> MePublic:
    """Who the token belongs to, and what their role may do."""
    return MePublic(
        id=user.user_id,
        username=user.username,
        role=user.role.value,
        display_name=user.display_name,
        is_lead=user.is_lead,
        # the role's permissions, narrowed by an API key's scopes (Principal.can)
        permissions=[p.value for p in ROLE_PERMISSIONS if user.can(p)],
    )
