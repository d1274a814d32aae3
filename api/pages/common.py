"""What every page shares: the templates, the route class that turns refusals
into pages, and ``render`` (the base template's values: the user, the
navigation, the CSRF token).

Every page but the sign-in form (and the static assets) needs a sign-in, from
``CurrentUser`` like every API route. ``PageRoute`` turns what the API answers
as JSON into what a person reads: no sign-in (or an expired, revoked session)
is a redirect to the sign-in form, any other refusal a page with the message.
A page's permissions come from the one permission table, through
``Principal.can``; a page that reads patient data reads it through the same
service functions as the API, with the same audit events.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from api.deps import CSRF_FIELD, SESSION_COOKIE, bearer_token, csrf_token_for
from api.errors import domain_error_response
from api.pages.paths import SIGN_IN_URL, navigation_for
from dicom_node.domain.errors import AuthenticationFailed, DomainError
from dicom_node.domain.permissions import Principal

templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("api.pages", "templates"),
        autoescape=select_autoescape(default=True),
    )
)

# the session's token, for the CSRF token a page's scripts and forms send
SessionToken = Annotated[str, Depends(bearer_token)]


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
                    clear_session_cookie(request, redirect)
                return redirect
            except DomainError as exc:
                answer = domain_error_response(exc)
                return error_page(request, answer.status_code, str(exc), answer.headers)

        return page_handler


def error_page(request: Request, status: int, message: str, headers: Any = None) -> HTMLResponse:
    kept = {"retry-after": headers["retry-after"]} if headers and "retry-after" in headers else None
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "user": None, "navigation": []},
        status_code=status,
        headers=kept,
    )


def role_label(principal: Principal) -> str:
    return principal.role.value.replace("_", " ").capitalize()


def render(
    request: Request,
    template: str,
    user: Principal | None,
    token: str | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page from ``template`` with the base template's values: ``user``,
    ``role``, ``navigation`` (the links the role may follow), ``csrf_token``
    (for forms and for scripts, which read it from ``<meta name=csrf-token>``),
    ``now`` (ISO 8601 UTC)."""
    values.update(
        user=user,
        role=role_label(user) if user else None,
        navigation=navigation_for(user) if user else [],
        current_path=request.url.path,
        csrf_token=csrf_token_for(token) if token else None,
        csrf_field=CSRF_FIELD,
        now=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return templates.TemplateResponse(
        request, template, values, status_code=status, headers=headers
    )


def is_secure(request: Request) -> bool:
    # the scheme after uvicorn's proxy handling (X-Forwarded-Proto from trusted proxies)
    return request.url.scheme == "https"


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="strict"
    )
