"""The turnaround dashboard (issue 18): charts of the turnaround service's
figures (median, 90th percentile, share within the SLA) by priority,
modality, center or radiologist.

The page is a shell; its script (static/js/turnaround.js) reads
``GET /api/turnaround`` (aggregates only: no patient data, not audited) and
draws the charts as inline SVG (static/js/charts.js), each with its figures as
a table and a sentence for screen readers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import TURNAROUND_URL
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.reporting.turnaround import GroupBy

router = APIRouter(route_class=PageRoute, include_in_schema=False)
# the permission the page's API calls need, declared as the API's routes do
TurnaroundReader = Annotated[Principal, Depends(require(Permission.TURNAROUND_READ))]

GROUP_LABELS = {
    GroupBy.PRIORITY: "Priority",
    GroupBy.MODALITY: "Modality",
    GroupBy.CENTER: "Imaging center",
    GroupBy.RADIOLOGIST: "Radiologist",
}


@router.api_route(TURNAROUND_URL, methods=["GET", "HEAD"])
def turnaround_page(request: Request, user: TurnaroundReader, token: SessionToken) -> HTMLResponse:
    return render(
        request,
        "turnaround.html",
        user,
        token,
        groupings=[(group.value, label) for group, label in GROUP_LABELS.items()],
    )
