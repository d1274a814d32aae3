"""FastAPI application factory. Routers are registered here, in one place."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import pages
from api.cache import FeedCache
from api.deps import ApiContext
from api.docs import ASSETS_URL, DOCS_PAGES, install_docs
from api.errors import install_error_handlers
from api.graphql.router import graphql_router
from api.headers import SecurityHeaders
from api.http_metrics import HttpMetrics
from api.listing_audit import RepeatedListingAudit
from api.pages import home as home_page
from api.pages.paths import STATIC_URL, is_page_path
from api.routes import (
    audit,
    auth,
    changes,
    dicomweb,
    facilities,
    health,
    metrics,
    node_status,
    orders,
    reconciliation,
    reports,
    scheduled_steps,
    sending,
    service_accounts,
    studies,
    turnaround,
    users,
    worklist,
)
from api.routes.dicomweb.image_audit import image_reads
from api.streams import StreamSlots
from dicom_node import __version__
from dicom_node.domain.transcode import Transcoder
from dicom_node.storage import FileStore

ROUTERS = (
    *pages.ROUTERS,
    health.router,
    auth.router,
    users.router,
    service_accounts.router,
    facilities.router,
    orders.router,
    scheduled_steps.router,
    studies.router,
    reconciliation.router,
    worklist.router,
    reports.router,
    audit.router,
    turnaround.router,
    changes.router,
    metrics.router,
    node_status.router,
    sending.router,
    dicomweb.router,
)


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="dicom-node",
        version=__version__,
        description="Radiology workflow API of the dicom-node DICOM node.",
        # served from the node itself (api/docs.py), not from a CDN
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    app.state.worklist_cache = FeedCache[bytes](ttl=1.0)
    app.state.event_streams = StreamSlots(context.settings.max_event_streams_per_user)
    # GraphQL subscriptions (api/graphql/subscriptions.py): a cap of their own,
    # over all of a user's WebSocket connections
    app.state.graphql_subscriptions = StreamSlots(
        context.settings.graphql_max_subscriptions_per_user
    )
    app.state.listing_audit = RepeatedListingAudit()
    app.state.image_reads = image_reads()
    settings = context.settings
    app.state.file_store = FileStore(settings.data_dir, fsync=settings.fsync)
    # one per process: the API's transcodings share max_concurrent_transcodes
    app.state.transcoder = Transcoder(
        max_decoded_bytes=settings.max_transcode_bytes,
        max_concurrent=settings.max_concurrent_transcodes,
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(graphql_router(settings))
    install_docs(app)
    home_page.install_static(app)
    app.add_middleware(
        SecurityHeaders,
        docs_pages=DOCS_PAGES,
        is_app_page=is_page_path,
        assets_prefixes=(ASSETS_URL + "/", STATIC_URL + "/"),
    )
    # outside the security headers: a request's time includes theirs
    app.add_middleware(HttpMetrics)
    if settings.cors_origins:
        # added last, so outermost: a browser's preflight (OPTIONS, no token) is
        # answered here, before any route asks for authentication
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            # never: the browser session's cookie (api/pages/) must not let another
            # origin's page read answers made with it. A listed origin's viewer
            # sends a bearer token or API key in a header instead.
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            # what a DICOMweb client reads: QIDO's capped-results Warning, a STOW's
            # Content-Location, Retry-After of a 429/503
            expose_headers=["Warning", "Content-Location", "Retry-After"],
            max_age=600,
        )
    return app
