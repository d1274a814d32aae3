"""The API documentation (Swagger UI at /docs, ReDoc at /redoc), served by the
node itself: a hospital network often has no internet, and FastAPI's pages
load their scripts from a CDN (a blank page offline, and code run with no
integrity check). The scripts and styles come from the ``fastapi-offline``
package (MIT; Swagger UI is Apache-2.0, ReDoc MIT), installed with the node.

No page has an inline script (the Swagger UI start-up is a script of its own),
so the pages' Content-Security-Policy allows scripts from the node only
(api/headers.py). Swagger's validator badge, which would send the document's
address to an outside service, is off.

The pages, the assets and ``/openapi.json`` are public, like ``/health``: they
describe the interface, which the published source and README describe too,
carry no data and no configuration, and Swagger UI must read the document
before anyone signs in (its Authorize button then signs in through
``/api/auth/token``). Every route they describe still needs a token.
"""

from __future__ import annotations

import json
from html import escape
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
SWAGGER_INIT_URL = "/docs/swagger-init.js"
ASSETS_URL = "/docs-assets"
DOCS_PAGES = frozenset({DOCS_URL, REDOC_URL})


def _assets_dir() -> str:
    return str(files("fastapi_offline").joinpath("static"))


def _swagger_init(openapi_url: str) -> str:
    options = {
        "url": openapi_url,
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "showExtensions": True,
        "showCommonExtensions": True,
        # the default sends the document's address to validator.swagger.io
        "validatorUrl": None,
    }
    return (
        f"const options = {json.dumps(options)};\n"
        "options.presets = [\n"
        "  SwaggerUIBundle.presets.apis,\n"
        "  SwaggerUIBundle.SwaggerUIStandalonePreset,\n"
        "];\n"
        "window.ui = SwaggerUIBundle(options);\n"
    )


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n"
        f'<link rel="icon" type="image/png" href="{ASSETS_URL}/favicon.png">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets (the app was made with docs_url and
    redoc_url None, so FastAPI's CDN pages are not registered)."""
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = _page(
        f"{app.title} - Swagger UI",
        f'<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">\n',
        '<div id="swagger-ui"></div>\n'
        f'<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{SWAGGER_INIT_URL}"></script>\n',
    )
    redoc = _page(
        f"{app.title} - ReDoc",
        "",
        f'<redoc spec-url="{escape(openapi_url)}"></redoc>\n'
        f'<script src="{ASSETS_URL}/redoc.standalone.js"></script>\n',
    )
    init = _swagger_init(openapi_url)

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger)

    @app.get(SWAGGER_INIT_URL, include_in_schema=False)
    async def swagger_ui_init() -> Response:
        return Response(init, media_type="text/javascript")

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc)

    app.mount(ASSETS_URL, StaticFiles(directory=_assets_dir()), name="docs-assets")
