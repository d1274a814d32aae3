"""The administration pages (issue 18) under ``/admin``: users, imaging
centers and modalities, the node's status, and sending a study to a peer.

Each page is a shell rendered here and a plain module in ``static/js/`` that
calls the existing API (``/api/users``, ``/api/imaging-centers``,
``/api/modalities``, ``/api/node-status``, ``/api/peers``,
``/api/studies/{id}/send``) through api.js, so the permissions, the password
policy, the audit events and the error messages are exactly the API's. Each
page asks for the permission its API calls need (``require``, from the one
permission table); a refusal is the error page (``PageRoute``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import require
from api.docs import DOCS_URL
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import ADMIN_URL, SEND_STUDY_URL
from dicom_node.domain.enums import ModalityStatus, Role
from dicom_node.domain.permissions import Permission, Principal

USERS_URL = f"{ADMIN_URL}/users"
FACILITIES_URL = f"{ADMIN_URL}/facilities"
STATUS_URL = f"{ADMIN_URL}/status"
SEND_URL = SEND_STUDY_URL  # named in paths.py, where the navigation links to it

# (url, label, what it is for, the permission its page needs)
SECTIONS: tuple[tuple[str, str, str, Permission], ...] = (
    (
        USERS_URL,
        "Users",
        "create accounts, change roles, deactivate, reset passwords",
        Permission.USERS_MANAGE,
    ),
    (
        FACILITIES_URL,
        "Imaging centers and modalities",
        "the sites and their devices",
        Permission.FACILITIES_MANAGE,
    ),
    (
        STATUS_URL,
        "Node status",
        "DICOM associations, queues, disk, the last backup",
        Permission.VIEW_METRICS,
    ),
    (
        SEND_URL,
        "Send a study",
        "to a configured DICOM peer (C-STORE, as a C-MOVE does)",
        Permission.STUDIES_SEND,
    ),
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

UserManager = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
FacilityManager = Annotated[Principal, Depends(require(Permission.FACILITIES_MANAGE))]
MetricsReader = Annotated[Principal, Depends(require(Permission.VIEW_METRICS))]
StudySender = Annotated[Principal, Depends(require(Permission.STUDIES_SEND))]


def _role_choices() -> list[tuple[str, str]]:
    return [(role.value, role.value.replace("_", " ").capitalize()) for role in Role]


@router.api_route(ADMIN_URL, methods=["GET", "HEAD"])
def overview(request: Request, user: UserManager, token: SessionToken) -> HTMLResponse:
    """The administration sections this user's role may open."""
    sections = [(url, label, about) for url, label, about, need in SECTIONS if user.can(need)]
    return render(request, "admin.html", user, token, sections=sections, docs_url=DOCS_URL)


@router.api_route(USERS_URL, methods=["GET", "HEAD"])
def users(request: Request, user: UserManager, token: SessionToken) -> HTMLResponse:
    return render(
        request, "admin_users.html", user, token, roles=_role_choices(), docs_url=DOCS_URL
    )


@router.api_route(FACILITIES_URL, methods=["GET", "HEAD"])
def facilities(request: Request, user: FacilityManager, token: SessionToken) -> HTMLResponse:
    statuses = [(s.value, s.value.capitalize()) for s in ModalityStatus]
    return render(request, "admin_facilities.html", user, token, statuses=statuses)


@router.api_route(STATUS_URL, methods=["GET", "HEAD"])
def status(request: Request, user: MetricsReader, token: SessionToken) -> HTMLResponse:
    return render(request, "admin_status.html", user, token)


@router.api_route(SEND_URL, methods=["GET", "HEAD"])
def send(request: Request, user: StudySender, token: SessionToken) -> HTMLResponse:
    return render(request, "admin_send.html", user, token)
