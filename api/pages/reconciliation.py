"""The reconciliation queue: studies no order claims (or that disagree with
their order), with the three ways out: link to an order, release to reading,
create an order from the study.

A shell like the orders pages: the script reads and acts through
``/api/reconciliation`` (and ``/api/orders`` for the candidate orders of the
study's patient), so the permission (reconciliation:manage), the reasons the
API requires and the audit events are the API's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import RECONCILIATION_URL
from dicom_node.domain.enums import Priority
from dicom_node.domain.permissions import Permission, Principal

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# as the API's routes: a refusal becomes an error page in PageRoute
Reconciler = Annotated[Principal, Depends(require(Permission.RECONCILE))]


@router.api_route(RECONCILIATION_URL, methods=["GET", "HEAD"])
def reconciliation_page(request: Request, user: Reconciler, token: SessionToken) -> HTMLResponse:
    return render(
        request,
        "reconciliation.html",
        user,
        token,
        priorities=[p.value for p in Priority],
        can_read_orders=user.can(Permission.ORDERS_READ),
        can_read_facilities=user.can(Permission.FACILITIES_READ),
    )
