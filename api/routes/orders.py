"""Orders (ImagingRequest): create with duplicate prevention, list, read, edit,
schedule/reschedule, cancel, start and complete.

A referring physician sees only the orders they requested or are the referrer
of (services/access/visibility.py): any other answers 404. An invalid
transition answers 409 with ``current_state``; a duplicate order 409 with the
open order in ``existing``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.listing_audit import record_listing
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.orders import (
    ModalityCode,
    OrderCancel,
    OrderCreate,
    OrderPublic,
    OrderSchedule,
    OrderUpdate,
    Text,
    UtcDatetime,
    sort_pattern,
)
from dicom_node.domain.enums import Priority, RequestStatus
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.workflow.order_listing import (
    ORDER_SORTS,
    OrderFilter,
    list_orders,
    read_order,
)
from dicom_node.services.workflow.order_steps import cancel_order, complete_order, start_order
from dicom_node.services.workflow.orders import (
    NewOrder,
    OrderInfo,
    create_order,
    schedule_order_by_id,
    update_order,
)

router = APIRouter(prefix="/api", tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=MAX_ID)]
Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]
Creator = Annotated[Principal, Depends(require(Permission.ORDERS_CREATE))]
Scheduler = Annotated[Principal, Depends(require(Permission.ORDERS_SCHEDULE))]
Canceller = Annotated[Principal, Depends(require(Permission.ORDERS_CANCEL))]
Performer = Annotated[Principal, Depends(require(Permission.ORDERS_PERFORM))]
SORT_HELP = "comma-separated; '-' for descending; one of: " + ", ".join(sorted(ORDER_SORTS))
ONE = {**AUTH_ERRORS, **NOT_FOUND}
CHANGE = {**AUTH_ERRORS, **NOT_FOUND, **CONFLICT}


_REQUIRED = ("priority", "study_description", "requested_modality", "patient_name")


def _public(info: OrderInfo) -> OrderPublic:
    return OrderPublic.model_validate(info, from_attributes=True)


@router.post(
    "/orders",
    response_model=OrderPublic,
    status_code=201,
    responses={
        **AUTH_ERRORS,
        **NOT_FOUND,
        409: {
            **CONFLICT[409],
            "description": "a duplicate: the open order is in `existing` (resend with force)",
        },
    },
)
def create_imaging_request(
    context: Context, user: Creator, body: OrderCreate, request: Request
) -> OrderPublic:
    """A new order (requested), requested by the caller, for the referring
    physician ``referring_physician_id`` (schedulers and admins choose from the
    user list; 422 unless an active referring physician) or the one whose name
    ``referring_physician_name`` is. An open order of the same
    patient for the same modality and procedure within the configured window is
    a 409 with that order, unless ``force`` with a ``force_reason`` (audited)."""
    new = NewOrder(
        patient_id=body.patient_id,
        issuer_of_patient_id=body.issuer_of_patient_id,
        patient_name=body.patient_name,
        patient_birth_date=body.patient_birth_date,
        patient_sex=body.patient_sex,
        requested_modality=body.requested_modality,
        study_description=body.study_description,
        priority=body.priority.value,
        clinical_indication=body.clinical_indication,
        referring_physician_name=body.referring_physician_name,
        referring_physician_id=body.referring_physician_id,
        requesting_physician=body.requesting_physician,
        scheduled_performing_physician_name=body.scheduled_performing_physician_name,
        imaging_center_id=body.imaging_center_id,
    )
    with context.db.unit_of_work() as session:
        info = create_order(
            session,
            new,
            principal=user,
            duplicate_window=timedelta(hours=context.settings.duplicate_order_window_hours),
            force=body.force,
            force_reason=body.force_reason,
            source_address=client_address(request),
        )
    return _public(info)


@router.get("/orders", response_model=Page[OrderPublic], responses=AUTH_ERRORS)
def list_imaging_requests(
    context: Context,
    user: Reader,
    request: Request,
    status: Annotated[list[RequestStatus] | None, Query()] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    patient_id: Annotated[Text | None, Query(max_length=64)] = None,
    issuer_of_patient_id: Annotated[Text | None, Query(max_length=64)] = None,
    patient_name: Annotated[
        Text | None, Query(max_length=324, description="prefix, case-insensitive")
    ] = None,
    modality: ModalityCode | None = None,
    accession_number: Annotated[Text | None, Query(max_length=16)] = None,
    imaging_center_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    requested_by_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    referring_physician_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    scheduled_from: UtcDatetime | None = None,
    scheduled_to: UtcDatetime | None = None,
    created_from: UtcDatetime | None = None,
    created_to: UtcDatetime | None = None,
    sort: Annotated[
        str | None, Query(max_length=200, pattern=sort_pattern(ORDER_SORTS), description=SORT_HELP)
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[OrderPublic]:
    """Orders the caller may see (a referring physician: those they requested or
    are the referrer of), newest first
    unless ``sort`` says otherwise. Audited as a Query (110112) with the query
    parameters and counts."""
    filters = OrderFilter(
        status=tuple(s.value for s in status or ()),
        priority=tuple(p.value for p in priority or ()),
        patient_id=patient_id,
        issuer_of_patient_id=issuer_of_patient_id,
        patient_name=patient_name,
        modality=modality,
        accession_number=accession_number,
        imaging_center_id=imaging_center_id,
        requested_by_id=requested_by_id,
        referring_physician_id=referring_physician_id,
        scheduled_from=scheduled_from,
        scheduled_to=scheduled_to,
        created_from=created_from,
        created_to=created_to,
    )
    # narrowed to a patient, the service audits the query (with the patient id)
    # in its own unit of work; otherwise it is a read, audited right after
    by_patient = patient_id is not None or bool(patient_name)
    with context.db.unit_of_work() if by_patient else context.db.read() as session:
        listed = list_orders(
            session,
            principal=user,
            filters=filters,
            sort=sort,
            offset=offset,
            limit=limit,
            source_address=client_address(request),
        )
    if not by_patient:
        with context.db.unit_of_work() as session:
            record_listing(
                session,
                principal=user,
                action="orders_queried",
                target_class="ImagingRequest",
                query={**filters.query_keys(), "sort": sort, "offset": offset, "limit": limit},
                matches=listed.total,
                returned=len(listed.items),
                source_address=client_address(request),
            )
    return Page[OrderPublic](
        items=[_public(o) for o in listed.items], total=listed.total, offset=offset, limit=limit
    )


@router.get("/orders/{order_id}", response_model=OrderPublic, responses=ONE)
def read_imaging_request(
    context: Context, user: Reader, order_id: OrderId, request: Request
) -> OrderPublic:
    """One order (audited as a patient record read)."""
    with context.db.unit_of_work() as session:
        info = read_order(session, order_id, principal=user, source_address=client_address(request))
    return _public(info)


@router.patch("/orders/{order_id}", response_model=OrderPublic, responses=CHANGE)
def update_imaging_request(
    context: Context, user: Creator, order_id: OrderId, body: OrderUpdate, request: Request
) -> OrderPublic:
    """Edit an order while it is requested or scheduled (409 otherwise); a
    referring physician only orders they placed, only while requested (403 once
    scheduled, or for an order they only receive). Audited with the changed
    fields before and after."""
    with context.db.unit_of_work() as session:
        info = update_order(
            session,
            order_id,
            changes={
                name: value
                for name, value in body.model_dump(exclude_unset=True, mode="json").items()
                # null for a field that cannot be empty leaves it as it is
                if value is not None or name not in _REQUIRED
            },
            principal=user,
            source_address=client_address(request),
        )
    return _public(info)


@router.post("/orders/{order_id}/schedule", response_model=OrderPublic, responses=CHANGE)
def schedule_imaging_request(
    context: Context, user: Scheduler, order_id: OrderId, body: OrderSchedule, request: Request
) -> OrderPublic:
    """Schedule, or reschedule, on a modality of the requested type at a time with
    a time zone. The accession number and StudyInstanceUID are assigned the
    first time and kept on reschedule. 409 unless requested or scheduled."""
    with context.db.unit_of_work() as session:
        info = schedule_order_by_id(
            session,
            order_id,
            modality_id=body.modality_id,
            scheduled_at=body.scheduled_at,
            principal=user,
            source_address=client_address(request),
        )
    return _public(info)


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic, responses=CHANGE)
def cancel_imaging_request(
    context: Context, user: Canceller, order_id: OrderId, body: OrderCancel, request: Request
) -> OrderPublic:
    """requested/scheduled -> cancelled with a reason (409 otherwise). A referring
    physician cancels only an order they placed, only while requested (403;
    being its referrer is not enough)."""
    with context.db.unit_of_work() as session:
        info = cancel_order(
            session,
            order_id,
            reason=body.reason,
            principal=user,
            source_address=client_address(request),
        )
    return _public(info)


@router.post("/orders/{order_id}/start", response_model=OrderPublic, responses=CHANGE)
def start_imaging_request(
    context: Context, user: Performer, order_id: OrderId, request: Request
) -> OrderPublic:
    """scheduled -> in_progress (sets exam_started_at); 409 otherwise."""
    with context.db.unit_of_work() as session:
        info = start_order(
            session, order_id, principal=user, source_address=client_address(request)
        )
    return _public(info)


@router.post("/orders/{order_id}/complete", response_model=OrderPublic, responses=CHANGE)
def complete_imaging_request(
    context: Context, user: Performer, order_id: OrderId, request: Request
) -> OrderPublic:
    """in_progress -> performed (sets exam_completed_at); 409 otherwise."""
    with context.db.unit_of_work() as session:
        info = complete_order(
            session, order_id, principal=user, source_address=client_address(request)
        )
    return _public(info)
