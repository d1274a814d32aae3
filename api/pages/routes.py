"""The pages and their assets: sign-in, sign-out and the home page.

Every page but the sign-in form (and the static assets) needs a sign-in, from
``CurrentUser`` like every API route. ``PageRoute`` turns what the API answers
as JSON into what a person reads: no sign-in (or an expired, revoked session)
is a redirect to the sign-in form, any other refusal a page with the message.
A page's permissions come from the one permission table, through
``Principal.can``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from api.deps import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Context,
    CurrentUser,
    bearer_token,
    client_address,
    csrf_token_for,
)
from api.docs import DOCS_URL, REDOC_URL
from api.errors import domain_error_response
from dicom_node.domain.errors import AuthenticationFailed, DomainError
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission, Principal
from dicom_node.services.access.auth import SignInPolicy, sign_in, sign_out
from dicom_node.services.access.passwords import PasswordHashingBusy

STATIC_URL = "/static"
SIGN_IN_URL = "/sign-in"
SIGN_OUT_URL = "/sign-out"
HOME_URL = "/"
# the paths answered with a page: they get the pages' Content-Security-Policy
# (api/headers.py); any other path keeps the API's, which loads nothing, so a
# page left out of here shows up broken in the browser tests, never unguarded
PAGE_PATHS = frozenset({HOME_URL, SIGN_IN_URL, SIGN_OUT_URL})

SIGN_IN_FAILED = (
    "Sign-in failed: wrong username or password, or the account is locked after "
    "repeated failures. Ask an administrator if it keeps failing."
)

templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("api.pages", "templates"),
        autoescape=select_autoescape(default=True),
    )
)


class PageRoute(APIRoute):
    """A route that answers a person: no sign-in is a redirect to the form
    (dropping a stale cookie), another refusal a page with the API's status and
    message, never the JSON error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationFailed:
                redirect = RedirectResponse(SIGN_IN_URL, status_code=303)
                if SESSION_COOKIE in request.cookies:
                    _clear_cookie(request, redirect)
                return redirect
            except DomainError as exc:
                answer = domain_error_response(exc)
                return error_page(request, answer.status_code, str(exc), answer.headers)

        return page_handler


router = APIRouter(route_class=PageRoute, include_in_schema=False)


def error_page(request: Request, status: int, message: str, headers: Any = None) -> HTMLResponse:
    kept = {"retry-after": headers["retry-after"]} if headers and "retry-after" in headers else None
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "user": None},
        status_code=status,
        headers=kept,
    )


def role_label(principal: Principal) -> str:
    return principal.role.value.replace("_", " ").capitalize()


def _page(
    request: Request,
    template: str,
    user: Principal | None,
    token: str | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    values.update(
        user=user,
        role=role_label(user) if user else None,
        csrf_token=csrf_token_for(token) if token else None,
        csrf_field=CSRF_FIELD,
        now=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return templates.TemplateResponse(
        request, template, values, status_code=status, headers=headers
    )


def _secure(request: Request) -> bool:
    # the scheme after uvicorn's proxy handling (X-Forwarded-Proto from trusted proxies)
    return request.url.scheme == "https"


def _clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
    )


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
def home(
    request: Request, user: CurrentUser, token: Annotated[str, Depends(bearer_token)]
) -> HTMLResponse:
    """What this user may open here, from the permission table."""
    links = [
        (DOCS_URL, "API documentation (Swagger UI)", "try the API with your role"),
        (REDOC_URL, "API documentation (ReDoc)", "the same, to read"),
        ("/health", "Health", "whether the database and each component are up"),
    ]
    if user.can(Permission.VIEW_METRICS):
        links.append(("/metrics", "Metrics", "the node's counters, in Prometheus's format"))
    permissions = [p.value for p in ROLE_PERMISSIONS if user.can(p)]
    return _page(request, "home.html", user, token, links=links, permissions=permissions)


@router.api_route(SIGN_IN_URL, methods=["GET", "HEAD"])
def sign_in_form(request: Request) -> HTMLResponse:
    return _page(request, "sign_in.html", None, None, username="", message=None)


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
        return _page(
            request,
            "sign_in.html",
            None,
            None,
            status=401,
            username=username,
            message=SIGN_IN_FAILED,
        )
    except PasswordHashingBusy as exc:
        return _page(
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
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(SIGN_OUT_URL)
def sign_out_submit(
    request: Request,
    context: Context,
    user: CurrentUser,
    token: Annotated[str, Depends(bearer_token)],
) -> Response:
    """Revoke the session's token (audited, as /api/auth/logout) and drop the
    cookie. The CSRF token is checked where the cookie is read (api/deps.py)."""
    with context.db.unit_of_work() as session:
        sign_out(session, token, principal=user, source_address=client_address(request))
    response = RedirectResponse(SIGN_IN_URL, status_code=303)
    _clear_cookie(request, response)
    return response


def install_static(app: FastAPI) -> None:
    """The pages' stylesheet, scripts and icon, from the installed package."""
    app.mount(STATIC_URL, StaticFiles(packages=[("api.pages", "static")]), name="static")
