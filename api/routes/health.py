"""GET /health: unauthenticated liveness for load balancers and monitoring."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import ApiContext, get_context

router = APIRouter(tags=["health"])


class HealthPublic(BaseModel):
    status: str
    database: bool
    components: dict[str, bool]


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "a component is down"}},
)
def health(context: Annotated[ApiContext, Depends(get_context)]) -> JSONResponse:
    """Whether the database answers and each front-end (DICOM SCP, scheduler) is up."""
    database = context.db.ping()
    components = {name: probe() for name, probe in context.probes.items()}
    healthy = database and all(components.values())
    body = HealthPublic(
        status="ok" if healthy else "degraded", database=database, components=components
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
