"""The auditor's page (issue 18): the audit trail with its filters, paging, one
event's whole record, and the CSV export.

The page is a shell; its script (static/js/audit.js) reads the trail through
the API (``GET /api/audit-events``, ``/api/audit-events/{id}``) and exports it
through ``GET /api/audit-events.csv``, so every read is audited by the API
(110101) with the filters asked, exactly as for any other client.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import AUDIT_URL
from api.routes.audit import AUDIT_EXPORT_MAX_ROWS
from dicom_node.domain.audit import AuditEventCode
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.permissions import Permission, Principal

router = APIRouter(route_class=PageRoute, include_in_schema=False)
# the permission the page's API calls need, declared as the API's routes do
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


@router.api_route(AUDIT_URL, methods=["GET", "HEAD"])
def audit_page(request: Request, user: Auditor, token: SessionToken) -> HTMLResponse:
    """The trail's filters and an empty table the script fills. Filters may
    come in the query string (ids only: a study UID, an accession, a patient
    ID), so a link can open one study's trail."""
    return render(
        request,
        "audit.html",
        user,
        token,
        event_codes=[(code.value, _label(code.name)) for code in AuditEventCode],
        outcomes=[(outcome.value, outcome.value.replace("_", " ")) for outcome in AuditOutcome],
        export_max_rows=AUDIT_EXPORT_MAX_ROWS,
    )
