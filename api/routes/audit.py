"""The audit trail, read-only: no route here (or anywhere) changes or deletes an
event, so PUT, PATCH and DELETE answer 405; the database refuses UPDATE and
DELETE on ``audit_events`` as well. Reading it writes 110101 Audit Log Used."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.schemas.audit import AuditEventPublic
from api.schemas.common import AUTH_ERRORS, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from dicom_node.db.types import as_utc
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.audit.trail import (
    AuditEventInfo,
    AuditFilters,
    get_audit_event,
    list_audit_events,
    record_audit_log_use,
)

router = APIRouter(prefix="/api", tags=["audit"])

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
# no control characters (PostgreSQL cannot even compare a NUL)
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
Text = Annotated[str | None, Query(max_length=256, pattern=NO_CONTROLS)]


def _public(event: AuditEventInfo) -> AuditEventPublic:
    return AuditEventPublic.model_validate(event, from_attributes=True)


@router.get("/audit-events", response_model=Page[AuditEventPublic], responses=AUTH_ERRORS)
def list_events(
    request: Request,
    context: Context,
    user: Auditor,
    actor: Annotated[
        str | None, Query(max_length=64, pattern=NO_CONTROLS, description="username or AE")
    ] = None,
    actor_user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Text = None,
    event_code: Annotated[
        str | None, Query(max_length=16, pattern=NO_CONTROLS, description="e.g. 110112")
    ] = None,
    target_class: Text = None,
    target_id: Text = None,
    patient_id: Text = None,
    study_instance_uid: Text = None,
    accession_number: Text = None,
    outcome: AuditOutcome | None = None,
    since: Annotated[datetime | None, Query(alias="from", description="inclusive")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="exclusive")] = None,
    order: Literal["newest", "oldest"] = "newest",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[AuditEventPublic]:
    """Audit events, newest first by default; every filter is an exact match,
    ``from`` inclusive, ``to`` exclusive (a time without a zone is UTC; an empty
    interval finds nothing). Admins and auditors only. This read is itself
    audited (110101)."""
    filters = AuditFilters(
        actor=actor,
        actor_user_id=actor_user_id,
        action=action,
        event_code=event_code,
        target_class=target_class,
        target_id=target_id,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        accession_number=accession_number,
        outcome=outcome,
        since=since and as_utc(since),  # without a zone: UTC, the trail's own
        until=until and as_utc(until),
    )
    with context.db.read() as session:
        page = list_audit_events(
            session, filters=filters, offset=offset, limit=limit, newest_first=order == "newest"
        )
    with context.db.unit_of_work() as session:
        record_audit_log_use(
            session,
            principal=user,
            filters=filters.asked() | {"order": order, "offset": offset, "limit": limit},
            source_address=client_address(request),
        )
    return Page[AuditEventPublic](
        items=[_public(event) for event in page.items],
        total=page.total,
        offset=offset,
        limit=limit,
    )


@router.get(
    "/audit-events/{event_id}",
    response_model=AuditEventPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def one_event(
    request: Request,
    context: Context,
    user: Auditor,
    event_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> AuditEventPublic:
    """One audit event. Audited (110101)."""
    with context.db.read() as session:
        event = get_audit_event(session, event_id=event_id)
    with context.db.unit_of_work() as session:
        record_audit_log_use(
            session,
            principal=user,
            filters={},
            source_address=client_address(request),
            target_id=str(event_id),
        )
    return _public(event)
