"""GET / : a static page saying what answers here, until a web application exists.

Public, like ``/health`` and the documentation pages (api/docs.py): it is the
same bytes for everyone, built once, with no data, no configuration, no AE
title and no version. No script, style or image, so the API's own
Content-Security-Policy (``default-src 'none'``, api/headers.py) applies as is.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.docs import DOCS_URL, REDOC_URL

router = APIRouter()

LINKS = (
    (DOCS_URL, "API documentation (Swagger UI): try the API, sign in with Authorize"),
    (REDOC_URL, "API documentation (ReDoc)"),
    ("/health", "health: whether the database and each component are up"),
    ("/metrics", "metrics (Prometheus; needs an admin sign-in or the metrics token)"),
)

PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    "<title>dicom-node</title>\n</head>\n<body>\n<h1>dicom-node</h1>\n"
    "<p>A DICOM node with a radiology workflow API. Every route under /api needs a "
    "sign-in (a bearer token from /api/auth/token).</p>\n<ul>\n"
    + "".join(f'<li><a href="{path}">{path}</a>: {text}</li>\n' for path, text in LINKS)
    + "</ul>\n</body>\n</html>\n"
)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def home() -> HTMLResponse:
    return HTMLResponse(PAGE)
