"""The printable report (issue 18): ``/reports/{report_id}/print``.

Rendered on the server, so it prints without waiting for a script: the report
is read through the same service functions as ``GET /api/reports/{id}`` and
``GET /api/reports/{id}/versions`` (the same visibility rule: a referring
physician reads only signed reports of their own orders, anything else is the
404 page; the same ``report_read`` and ``report_versions_read`` audit events),
and the patient header through the study service with the same 110103 event as
``GET /api/studies/{id}``.

What is printed is the signed text: the latest ``final`` version, then the
earlier signed versions (the original report under an addendum). A report
never signed has nothing to print (409 page).

The report panel beside the viewer's images (``templates/report_panel.html``,
``static/js/report.js``) has no route of its own: the viewer's page includes it
and its script calls the reports API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from api.deps import Context, client_address, require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import REPORTS_URL
from api.schemas.common import MAX_ID
from dicom_node.domain.errors import Conflict, NotFound
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.users import get_user
from dicom_node.services.query.studies import get_study, record_study_access
from dicom_node.services.reporting.versions import VersionKind
from dicom_node.services.reporting.views import get_report, report_versions

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# the permission as a dependency, as the API's routes name it (the route-matrix
# test reads it there); a refusal is the 403 page
Reader = Annotated[Principal, Depends(require(Permission.REPORTS_READ))]


@dataclass(frozen=True)
class SignedVersion:
    """One signed text as printed: who signed it and when."""

    version: int
    findings: str
    impression: str
    signed_at: datetime
    signer: str


def _signer_name(session: Session, user_id: int | None) -> str:
    # a user record is never deleted (deactivated only), but a version signed
    # by an account that was since removed must still print
    if user_id is None:
        return "unknown"
    try:
        user = get_user(session, user_id)
    except NotFound:
        return f"user {user_id}"
    return user.display_name or user.username


@router.api_route(REPORTS_URL + "/{report_id}/print", methods=["GET", "HEAD"])
def print_report(
    request: Request,
    context: Context,
    user: Reader,
    token: SessionToken,
    report_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> HTMLResponse:
    """The signed report with its patient and study header, for printing."""
    address = client_address(request)
    with context.db.unit_of_work() as session:
        report = get_report(session, report_id=report_id, principal=user, source_address=address)
        versions = report_versions(
            session, report_id=report_id, principal=user, source_address=address
        )
        signed = [
            SignedVersion(
                version=v.version,
                findings=v.findings,
                impression=v.impression,
                signed_at=v.created_at,
                signer=_signer_name(session, v.signed_by_id),
            )
            for v in reversed(versions)
            if v.kind == VersionKind.FINAL.value
        ]
        if not signed:
            raise Conflict("this report is not signed yet; there is nothing to print")
        # the header's patient data: read and audited as GET /api/studies/{id} does
        study = get_study(session, principal=user, study_id=report.study_id, instance_limit=1).study
        record_study_access(session, principal=user, study=study, source_address=address)
    return render(
        request,
        "report_print.html",
        user,
        token,
        report=report,
        study=study,
        latest=signed[0],
        earlier=signed[1:],
        amended=report.status != "final",
    )
