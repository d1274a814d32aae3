"""The study viewer (issue 18): ``/viewer/{study_instance_uid}``.

The page is a shell: the server resolves the study's UID to the node's id
within the visibility rule (a study the user may not see is a 404 page, as
the API and DICOMweb answer it, so a referring physician cannot learn that
another physician's study exists) and renders no patient data. The scripts
(``static/js/viewer/``) read the study through ``/api/studies/{id}`` and
DICOMweb with the session cookie, so the permissions, the visibility rule
and the audit events (110103 per study read) are exactly the API's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.deps import Context, require
from api.pages.common import PageRoute, SessionToken, render
from api.pages.paths import VIEWER_URL
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.dicomweb.instances import checked_uid
from dicom_node.services.query.studies import visible_study_id

router = APIRouter(route_class=PageRoute, include_in_schema=False)
StudyReader = Annotated[Principal, Depends(require(Permission.STUDIES_READ))]


@router.api_route(VIEWER_URL + "/{study_uid}", methods=["GET", "HEAD"])
def viewer(
    request: Request, context: Context, user: StudyReader, token: SessionToken, study_uid: str
) -> HTMLResponse:
    """The viewer's shell for one study, with the report panel beside the images."""
    checked_uid(study_uid, "StudyInstanceUID")
    with context.db.read() as session:
        study_id = visible_study_id(session, principal=user, study_uid=study_uid)
    return render(request, "viewer.html", user, token, study_uid=study_uid, study_id=study_id)
