"""DICOMweb (PS3.18) at ``/dicomweb``: QIDO-RS, WADO-RS (with rendered
resources) and STOW-RS, on the API's bearer tokens, API keys and permission
table. One module per service; what they share without HTTP in it is in
``dicom_node/services/dicomweb/``. docs/dicomweb.md is the conformance
statement."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.dicomweb import qido, rendered, stow, wado

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
for _service in (qido, wado, rendered, stow):
    router.include_router(_service.router)
