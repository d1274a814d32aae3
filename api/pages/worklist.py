"""The reading worklist page (issue 18): ``/worklist``.

A server-rendered shell; ``static/js/worklist.js`` fills the table from the
API the page's user could call themselves (``GET /api/worklist``, the claim and
release routes) and keeps it current from the event stream (``GET
/api/events``). The listing's permission check, its audit event (a Query,
once per interval for a repeated listing) and its errors are therefore the
API's own; this handler only refuses a role without ``worklist:read`` (the
same ``require`` as the API's, answered as a page through ``PageRoute``)
and tells the script what the user may do, so it offers only the buttons the
API would accept. For an admin or a lead radiologist it also lists the active
radiologists to reassign work to (names and ids of staff, no patient data: the
API's user listing is for admins only).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import Context, require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import VIEWER_URL, WORKLIST_URL
from dicom_node.domain.enums import Priority, QueueType, Role
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.users import list_users
from dicom_node.services.workflow.reading_worklist import may_reassign
from dicom_node.services.workflow.worklist_listing import WorklistSort

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# as the API's listing: a role without it gets PageRoute's refusal page (403)
Reader = Annotated[Principal, Depends(require(Permission.WORKLIST_READ))]

# the queues a reader works from (acquisition and reconciliation have their own pages)
QUEUES = (
    (QueueType.READING, "Reading"),
    (QueueType.REVIEW, "Review"),
    (QueueType.CRITICAL_COMM, "Critical results"),
)
SORTS = (
    (WorklistSort.PRIORITY, "Priority, then due time"),
    (WorklistSort.DUE_AT, "Due time"),
    (WorklistSort.CREATED_AT, "Oldest first"),
    (WorklistSort.NEWEST, "Newest first"),
)
PAGE_SIZE = 50
# the radiologists offered in the reassign dialog (a department has far fewer)
MAX_RADIOLOGISTS = 500


@router.api_route(WORKLIST_URL, methods=["GET", "HEAD"])
def worklist(request: Request, context: Context, user: Reader, token: SessionToken) -> HTMLResponse:
    """The reading worklist, for roles with ``worklist:read``."""
    # release anyone's claim and reassign: an admin or a lead (the service's own rule)
    can_reassign = user.can(Permission.WORKLIST_REASSIGN) and may_reassign(user)
    radiologists = []
    if can_reassign:
        with context.db.read() as session:
            radiologists = list_users(
                session, role=Role.RADIOLOGIST.value, is_active=True, limit=MAX_RADIOLOGISTS
            ).items
    return render(
        request,
        "worklist.html",
        user,
        token,
        queues=QUEUES,
        sorts=SORTS,
        priorities=list(Priority),
        page_size=PAGE_SIZE,
        viewer_url=VIEWER_URL,
        can_claim=user.can(Permission.WORKLIST_CLAIM),
        can_reassign=can_reassign,
        radiologists=radiologists,
    )
