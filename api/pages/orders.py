"""The scheduler's pages: orders (list, new order, one order with its actions)
and the scheduled steps a modality's worklist query answers.

The pages are shells: their scripts read and change orders through the HTTP
API (``/api/orders``, ``/api/scheduled-steps``, ``/api/imaging-centers``,
``/api/modalities``) with the session cookie, so the permissions, the
visibility rule and the audit events are the API's. What a page renders
itself is what the role may do (which buttons to show), the DICOM modality
codes, and, for a new order, the referring physicians to choose from (see
``_referrers``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import Context, require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import ORDERS_URL, SCHEDULED_STEPS_URL
from api.schemas.common import MAX_ID, MAX_PAGE_SIZE
from dicom_node.domain.enums import Priority, RequestStatus, Role
from dicom_node.domain.errors import NotFound
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.vr import MODALITY_CODES
from dicom_node.services.access.users import list_users

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# the modality types a radiology department books first; the rest follow A-Z
COMMON_MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "NM", "PT", "XA", "RF")


def _modality_codes() -> list[str]:
    rest = sorted(MODALITY_CODES - set(COMMON_MODALITIES))
    return [*COMMON_MODALITIES, *rest]


# the permission of each page, from the one table, as the API routes check it
# (a refusal becomes an error page in PageRoute; the route matrix test reads it)
Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]
Creator = Annotated[Principal, Depends(require(Permission.ORDERS_CREATE))]


def _abilities(user: Principal) -> dict[str, Any]:
    """What the page offers: a button only for what the role may do (the API
    checks again)."""
    return {
        "can_create": user.can(Permission.ORDERS_CREATE),
        "can_schedule": user.can(Permission.ORDERS_SCHEDULE),
        "can_cancel": user.can(Permission.ORDERS_CANCEL),
        "can_read_facilities": user.can(Permission.FACILITIES_READ),
    }


def _referrers(context: Context, user: Principal) -> list[tuple[int, str]]:
    """The referring physicians a new order may name, as (user id, name).

    Schedulers and admins choose from the active referring physicians (the API
    takes ``referring_physician_id``); the user list's API is for admins
    (users:manage), so the page reads the names through the same users service,
    and only ids and display names. A referring physician may name only
    themselves (the API answers 403 for a colleague)."""
    if user.role is Role.REFERRING_PHYSICIAN:
        return [(user.user_id, user.display_name or user.username)]
    if not user.can(Permission.ORDERS_SCHEDULE):
        return []
    with context.db.read() as session:
        listed = list_users(
            session,
            role=Role.REFERRING_PHYSICIAN.value,
            is_active=True,
            sort="display_name",
            limit=MAX_PAGE_SIZE,
        )
    return [(u.id, u.display_name or u.username) for u in listed.items]


@router.api_route(ORDERS_URL, methods=["GET", "HEAD"])
def orders_page(request: Request, user: Reader, token: SessionToken) -> HTMLResponse:
    """The orders the user may see, filtered and paged by the script."""
    return render(
        request,
        "orders.html",
        user,
        token,
        statuses=[s.value for s in RequestStatus],
        modalities=_modality_codes(),
        **_abilities(user),
    )


@router.api_route(ORDERS_URL + "/new", methods=["GET", "HEAD"])
def new_order_page(
    request: Request, context: Context, user: Creator, token: SessionToken
) -> HTMLResponse:
    """The form for a new order, with the duplicate warning and its override."""
    return render(
        request,
        "orders_new.html",
        user,
        token,
        priorities=[p.value for p in Priority],
        modalities=_modality_codes(),
        referrers=_referrers(context, user),
        is_referrer=user.role is Role.REFERRING_PHYSICIAN,
        **_abilities(user),
    )


@router.api_route(ORDERS_URL + "/{order_id}", methods=["GET", "HEAD"])
def order_page(
    request: Request,
    user: Reader,
    token: SessionToken,
    order_id: str,
) -> HTMLResponse:
    """One order, read by the script (a missing or hidden order: its message).
    An id that is no id is a page saying so, not the API's JSON 422."""
    if not order_id.isascii() or not order_id.isdigit() or not 1 <= int(order_id) <= MAX_ID:
        raise NotFound(f"there is no order {order_id[:20]!r}")
    return render(
        request, "orders_detail.html", user, token, order_id=int(order_id), **_abilities(user)
    )


@router.api_route(SCHEDULED_STEPS_URL, methods=["GET", "HEAD"])
def scheduled_steps_page(request: Request, user: Reader, token: SessionToken) -> HTMLResponse:
    """The Modality Worklist's scheduled steps, as a modality would query them."""
    return render(
        request,
        "scheduled_steps.html",
        user,
        token,
        modalities=_modality_codes(),
        **_abilities(user),
    )
