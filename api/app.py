"""FastAPI application factory. Routers are registered here, in one place."""

from __future__ import annotations

from fastapi import FastAPI

from api.deps import ApiContext
from api.routes import health
from dicom_node import __version__


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="dicom-node",
        version=__version__,
        description="Radiology workflow API of the dicom-node DICOM node.",
    )
    app.state.context = context
    app.include_router(health.router)
    return app
