"""FastAPI application factory. Routers are registered here, in one place."""

from __future__ import annotations

from fastapi import FastAPI

from api.cache import FeedCache
from api.deps import ApiContext
from api.errors import install_error_handlers
from api.routes import (
    audit,
    auth,
    changes,
    facilities,
    health,
    metrics,
    orders,
    reconciliation,
    reports,
    studies,
    turnaround,
    users,
    worklist,
)
from dicom_node import __version__

ROUTERS = (
    health.router,
    auth.router,
    users.router,
    facilities.router,
    orders.router,
    studies.router,
    reconciliation.router,
    worklist.router,
    reports.router,
    audit.router,
    turnaround.router,
    changes.router,
    metrics.router,
)


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="dicom-node",
        version=__version__,
        description="Radiology workflow API of the dicom-node DICOM node.",
    )
    app.state.context = context
    app.state.worklist_cache = FeedCache(ttl=1.0)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
