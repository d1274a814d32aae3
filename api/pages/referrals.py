"""The referring physician's page (issue 18): ``/referrals``.

Their orders (placed by them or naming them as the referrer), the studies of
those orders and their signed reports: exactly what the one visibility rule
(``services/access/visibility.py``) lets them see, because the page is a
shell and its script (``static/js/referrals.js``) reads the lists through
``/api/orders``, ``/api/studies`` and ``/api/reports`` with the session
cookie: the rule, the permissions and the audit events are the API's. The
script listens to ``/api/events`` and tells the physician, in the page, when
a report of theirs is signed.

Roles the rule does not narrow (they see every order) have the worklist and
the order pages instead: this page is refused to them (403 page), so it never
lists every order of the node.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import CurrentUser
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import REFERRALS_URL
from dicom_node.domain.errors import Forbidden
from dicom_node.domain.permissions import Permission
from dicom_node.services.access.visibility import sees_every_order

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.api_route(REFERRALS_URL, methods=["GET", "HEAD"])
def referrals(request: Request, user: CurrentUser, token: SessionToken) -> HTMLResponse:
    """The shell of the referring physician's orders, studies and reports."""
    if not user.can(Permission.ORDERS_READ):
        raise Forbidden("your role may not read orders")
    if sees_every_order(user):
        raise Forbidden(
            "this page lists a referring physician's own referrals; "
            "your role reads orders through the worklist and the order pages"
        )
    return render(
        request,
        "referrals.html",
        user,
        token,
        can_read_studies=user.can(Permission.STUDIES_READ),
        can_read_reports=user.can(Permission.REPORTS_READ),
    )
