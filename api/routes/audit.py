"""The audit trail, read-only: no route here (or anywhere) changes or deletes an
event, so PUT, PATCH and DELETE answer 405; the database refuses UPDATE and
DELETE on ``audit_events`` as well. Reading it writes 110101 Audit Log Used,
and so does exporting it as CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import Context, client_address, require
from api.schemas.audit import AuditEventPublic
from api.schemas.common import AUTH_ERRORS, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from dicom_node.db.engine import Database
from dicom_node.db.types import as_utc
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.audit.trail import (
    AuditEventInfo,
    AuditFilters,
    count_audit_events,
    get_audit_event,
    iter_audit_events,
    list_audit_events,
    record_audit_log_use,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["audit"])

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
# no control characters (PostgreSQL cannot even compare a NUL)
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
Text = Annotated[str | None, Query(max_length=256, pattern=NO_CONTROLS)]


def _public(event: AuditEventInfo) -> AuditEventPublic:
    return AuditEventPublic.model_validate(event, from_attributes=True)


def audit_filters(
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
) -> AuditFilters:
    """The trail's filters, the same for the listing and the export."""
    return AuditFilters(
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


Filters = Annotated[AuditFilters, Depends(audit_filters)]


@router.get("/audit-events", response_model=Page[AuditEventPublic], responses=AUTH_ERRORS)
def list_events(
    request: Request,
    context: Context,
    user: Auditor,
    filters: Filters,
    order: Literal["newest", "oldest"] = "newest",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[AuditEventPublic]:
    """Audit events, newest first by default; every filter is an exact match,
    ``from`` inclusive, ``to`` exclusive (a time without a zone is UTC; an empty
    interval finds nothing). Admins and auditors only. This read is itself
    audited (110101)."""
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


# The most rows one CSV export writes (docs/api.md#audit-trail); narrow the
# filters for more. Rows are read and written EXPORT_BATCH at a time (one SELECT
# per batch, keyset-paged: see iter_audit_events), so memory stays flat and the
# cost grows with the rows, not with their square, whatever the cap.
AUDIT_EXPORT_MAX_ROWS = 100_000
EXPORT_BATCH = MAX_PAGE_SIZE
CSV_COLUMNS = tuple(AuditEventPublic.model_fields)
# a spreadsheet reads a cell starting with one of these as a formula (CSV
# injection): an actor name or a reason is free text from outside
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The last row of an export that failed after its first byte: the status (200)
# is sent by then, so the file itself must say it is short (docs/api.md).
EXPORT_INCOMPLETE = "# EXPORT INCOMPLETE"


def csv_cell(value: object) -> str:
    """One cell: None empty, times ISO 8601 UTC, details as JSON; text that a
    spreadsheet would run as a formula is prefixed with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def _csv_rows(
    db: Database,
    filters: AuditFilters,
    *,
    through_id: int | None,
    newest_first: bool,
    limit: int,
    batch_size: int,
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    if through_id is None:  # nothing matched when the export started
        return
    written = 0
    batches = iter_audit_events(
        db,
        filters=filters,
        through_id=through_id,
        newest_first=newest_first,
        max_rows=limit,
        batch_size=batch_size,
    )
    try:
        for batch in batches:
            for event in batch:
                writer.writerow(csv_cell(getattr(event, column)) for column in CSV_COLUMNS)
            written += len(batch)
            yield flush()
    except Exception as exc:
        # the client has the 200 and the rows so far: without this row a short
        # file would pass for the whole trail. No detail: the log has it.
        log.error(
            "audit CSV export stopped after %d rows: %s", written, type(exc).__name__, exc_info=exc
        )
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(
            [f"{EXPORT_INCOMPLETE}: an error stopped the export after {written} rows; export again"]
        )
        yield flush()


@router.get(
    "/audit-events.csv",
    response_class=StreamingResponse,
    responses={**AUTH_ERRORS, 200: {"content": {"text/csv": {}}}},
)
def export_events(
    request: Request,
    context: Context,
    user: Auditor,
    filters: Filters,
    order: Literal["newest", "oldest"] = "oldest",
    limit: Annotated[int, Query(ge=1, le=AUDIT_EXPORT_MAX_ROWS)] = AUDIT_EXPORT_MAX_ROWS,
) -> StreamingResponse:
    """The events matching the listing's filters as CSV, oldest first by
    default (a study's story in order), at most ``limit`` rows (at most
    AUDIT_EXPORT_MAX_ROWS): streamed in batches. Text cells that a spreadsheet
    would run as a formula start with an apostrophe. ``X-Total-Count``: the
    events matching, which may exceed the rows written. Audited (110101) before
    the first row, with the filters, the format and the count. If an error
    stops it once the header is out, its last row starts ``# EXPORT INCOMPLETE``."""
    now = datetime.now(UTC)
    # the rows exported are fixed when it starts, by id (ids follow commit
    # order): events written meanwhile, this export's own 110101 among them and
    # whatever their timestamps, are left out. One COUNT per export.
    with context.db.read() as session:
        matches = count_audit_events(session, filters=filters)
    with context.db.unit_of_work() as session:
        record_audit_log_use(
            session,
            principal=user,
            filters=filters.asked()
            | {"order": order, "limit": limit, "format": "csv", "matches": matches.total},
            source_address=client_address(request),
        )
    filename = f"audit-events-{now.strftime('%Y%m%dT%H%M%SZ')}.csv"
    return StreamingResponse(
        _csv_rows(
            context.db,
            filters,
            through_id=matches.newest_id,
            newest_first=order == "newest",
            limit=limit,
            batch_size=EXPORT_BATCH,
        ),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Total-Count": str(matches.total),
            "Cache-Control": "no-store",
        },
    )
