"""GET /metrics: the node's metrics in the Prometheus text format.

Outside ``/api`` where scrapers look for it, but authenticated like every
route: a signed-in user whose role holds ``metrics:read``, or the static
``metrics_token`` setting, so Prometheus can scrape with a fixed
``authorization`` bearer token instead of a session token that expires.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api.deps import Context, bearer_token, current_principal
from api.schemas.common import AUTH_ERRORS
from dicom_node.domain.errors import Forbidden
from dicom_node.domain.permissions import Permission
from dicom_node.metrics import CONTENT_TYPE, multiprocess_dir, render, store_temp_dir

router = APIRouter(tags=["metrics"])

STATIC_SCRAPER = "metrics-scraper"


def metrics_reader(context: Context, token: Annotated[str, Depends(bearer_token)]) -> str:
    """Who is scraping: the static scrape token, or a user holding metrics:read."""
    configured = context.settings.metrics_token
    if configured is not None and hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        return STATIC_SCRAPER
    principal = current_principal(context, token)
    if not principal.can(Permission.VIEW_METRICS):
        raise Forbidden(f"role {principal.role.value} may not {Permission.VIEW_METRICS.value}")
    return principal.username


# read by the route-matrix test, as on ``require(...)``'s dependency
metrics_reader.permission = Permission.VIEW_METRICS  # type: ignore[attr-defined]


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "the Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        # no parameters, so no 422
        401: AUTH_ERRORS[401],
        403: AUTH_ERRORS[403],
    },
)
def metrics(context: Context, _reader: Annotated[str, Depends(metrics_reader)]) -> Response:
    """Counters, histograms and gauges of this node: DICOM traffic, C-FIND latency,
    scheduled jobs and, read from the database now, the queue sizes."""
    settings = context.settings
    body = render(
        db=context.db,
        temp_dir=store_temp_dir(settings.data_dir),
        # DICOM worker processes write their metrics to files the pool set up
        multiprocess_path=(
            multiprocess_dir(settings.data_dir) if settings.dicom_worker_count > 1 else None
        ),
    )
    return Response(content=body, media_type=CONTENT_TYPE)
