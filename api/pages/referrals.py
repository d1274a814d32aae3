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
the order pages instead: for them the page only says so and loads nothing, so
it never lists every order of the node as someone's own referrals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import REFERRALS_URL
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.visibility import sees_every_order

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# the permission as a dependency, as the API's routes name it (the route-matrix
# test reads it there); a refusal is the 403 page
OrderReader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]


@router.api_route(REFERRALS_URL, methods=["GET", "HEAD"])
def referrals(request: Request, user: OrderReader, token: SessionToken) -> HTMLResponse:
    """The shell of the referring physician's orders, studies and reports."""
    return render(
        request,
        "referrals.html",
        user,
        token,
        # a role the rule does not narrow is told where its work is instead
        # (the page would list every order of the node as "yours")
        own_referrals=not sees_every_order(user),
        can_read_studies=user.can(Permission.STUDIES_READ),
        can_read_reports=user.can(Permission.REPORTS_READ),
    )
