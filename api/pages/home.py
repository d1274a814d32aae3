"""Sign-in, sign-out, the home page, and the pages' static assets."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.deps import SESSION_COOKIE, ApiContext, Context, CurrentUser, client_address
from api.docs import DOCS_URL, REDOC_URL
from api.pages.common import (
    PageRoute,
    SessionToken,
    clear_session_cookie,
    error_page,
    is_secure,
    render,
)
from api.pages.paths import HOME_URL, SIGN_IN_URL, SIGN_OUT_URL, STATIC_URL, navigation_for
from dicom_node.domain.api_keys import looks_like_key
from dicom_node.domain.errors import AuthenticationFailed
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from dicom_node.services.access.auth import SignInPolicy, authenticate, sign_in, sign_out
from dicom_node.services.access.passwords import PasswordHashingBusy

SIGN_IN_FAILED = (
    "Sign-in failed: wrong username or password, or the account is locked after "
    "repeated failures. Ask an administrator if it keeps failing."
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _from_this_node(request: Request) -> bool:
    """Whether a form post came from one of the node's own pages (login CSRF:
    SameSite does not help before there is a cookie). Browsers say where a
    request comes from in Sec-Fetch-Site (Chromium, Firefox, Safari 16.4 and
    later); without it, Origin must name the node. Under the pages'
    ``Referrer-Policy: no-referrer`` a browser sends ``Origin: null`` even from
    the node's own page, so a null Origin counts only with Sec-Fetch-Site. A
    client that sends neither header is not a browser another site could drive.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.api_route(HOME_URL, methods=["GET", "HEAD"])
def home(request: Request, user: CurrentUser, token: SessionToken) -> HTMLResponse:
    """What this user may open here, from the permission table."""
    links = [
        (DOCS_URL, "API documentation (Swagger UI)", "try the API with your role"),
        (REDOC_URL, "API documentation (ReDoc)", "the same, to read"),
        ("/health", "Health", "whether the database and each component are up"),
    ]
    if user.can(Permission.VIEW_METRICS):
        links.append(("/metrics", "Metrics", "the node's counters, in Prometheus's format"))
    permissions = [p.value for p in ROLE_PERMISSIONS if user.can(p)]
    return render(
        request,
        "home.html",
        user,
        token,
        pages=navigation_for(user),
        links=links,
        permissions=permissions,
    )


@router.api_route(SIGN_IN_URL, methods=["GET", "HEAD"])
def sign_in_form(request: Request, context: Context) -> Response:
    """The form; someone already signed in goes to the home page instead."""
    if signed_in(context, request):
        return RedirectResponse(HOME_URL, status_code=303)
    return render(request, "sign_in.html", None, None, username="", message=None)


def signed_in(context: ApiContext, request: Request) -> bool:
    """Whether the request's session cookie is a live sign-in."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or looks_like_key(token):
        return False
    try:
        with context.db.read() as session:
            authenticate(session, token)
    except AuthenticationFailed:
        return False
    return True


@router.post(SIGN_IN_URL)
def sign_in_submit(
    request: Request,
    context: Context,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """The form's sign-in: the same ``sign_in`` as /api/auth/token (lock-out,
    audit), its token set as the session cookie."""
    if not _from_this_node(request):
        return error_page(request, 403, "Sign in from the node's own sign-in page.")
    settings = context.settings
    ttl = timedelta(minutes=settings.api_token_ttl_minutes)
    policy = SignInPolicy(
        token_ttl=ttl,
        max_failures=settings.sign_in_max_failures,
        lockout=timedelta(minutes=settings.sign_in_lockout_minutes),
    )
    try:
        issued = sign_in(
            context.db,
            username=username,
            password=password,
            policy=policy,
            source_address=client_address(request),
        )
    except AuthenticationFailed:
        return render(
            request,
            "sign_in.html",
            None,
            None,
            status=401,
            username=username,
            message=SIGN_IN_FAILED,
        )
    except PasswordHashingBusy as exc:
        return render(
            request,
            "sign_in.html",
            None,
            None,
            status=503,
            username=username,
            headers={"Retry-After": str(exc.retry_after)},
            message=(
                f"The node is busy signing other people in. Try again in {exc.retry_after} seconds."
            ),
        )
    response = RedirectResponse(HOME_URL, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=int(ttl.total_seconds()),
        path="/",
        secure=is_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(SIGN_OUT_URL)
def sign_out_submit(
    request: Request,
    context: Context,
    user: CurrentUser,
    token: SessionToken,
) -> Response:
    """Revoke the session's token (audited, as /api/auth/logout) and drop the
    cookie. The CSRF token is checked where the cookie is read (api/deps.py)."""
    with context.db.unit_of_work() as session:
        sign_out(session, token, principal=user, source_address=client_address(request))
    response = RedirectResponse(SIGN_IN_URL, status_code=303)
    clear_session_cookie(request, response)
    return response


def install_static(app: FastAPI) -> None:
    """The pages' stylesheet, scripts and icon, from the installed package."""
    app.mount(STATIC_URL, StaticFiles(packages=[("api.pages", "static")]), name="static")
