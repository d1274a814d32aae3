"""Reconciliation: studies no order claims or that disagree with their order,
and unscheduled exams; link a study to an order, or create an order from it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.listing_audit import record_listing
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.orders import OrderPublic, Text, sort_pattern
from api.schemas.reconciliation import (
    CreateOrderRequest,
    LinkRequest,
    ReconciledPublic,
    ReconciliationEntryPublic,
    ReleasedPublic,
    ReleaseRequest,
    ResolveRequest,
)
from dicom_node.domain.enums import WorklistStatus
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.workflow.reconciliation import (
    ReconciledStudy,
    create_order_from_study,
    link_study,
    release_to_reading,
    resolve_reconciliation_item,
)
from dicom_node.services.workflow.reconciliation_listing import (
    RECONCILIATION_SORTS,
    list_reconciliation,
)

router = APIRouter(prefix="/api", tags=["reconciliation"])

Reconciler = Annotated[Principal, Depends(require(Permission.RECONCILE))]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID)]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
SORT_HELP = "studies: comma-separated; '-' for descending; one of: " + ", ".join(
    sorted(RECONCILIATION_SORTS)
)
CHANGE = {**AUTH_ERRORS, **NOT_FOUND, **CONFLICT}


def _public(result: ReconciledStudy) -> ReconciledPublic:
    return ReconciledPublic(
        study=ReconciliationEntryPublic.model_validate(result.entry, from_attributes=True),
        order=OrderPublic.model_validate(result.order, from_attributes=True),
        reading_item_id=result.reading_item_id,
    )


@router.get(
    "/reconciliation", response_model=Page[ReconciliationEntryPublic], responses=AUTH_ERRORS
)
def list_to_reconcile(
    context: Context,
    user: Reconciler,
    request: Request,
    metadata_status: Literal["unmatched", "conflict"] | None = None,
    patient_id: Annotated[Text | None, Query(max_length=64)] = None,
    sort: Annotated[
        str | None,
        Query(max_length=200, pattern=sort_pattern(RECONCILIATION_SORTS), description=SORT_HELP),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[ReconciliationEntryPublic]:
    """Unmatched and conflicting studies (oldest first unless ``sort``), then open
    reconciliation items without such a study (e.g. an unscheduled exam's MPPS).
    Audited as a Query (110112) with the query parameters and counts."""
    # narrowed to a patient, the service audits the query (with the patient id)
    # in its own unit of work; otherwise it is a read, audited right after
    by_patient = patient_id is not None
    with context.db.unit_of_work() if by_patient else context.db.read() as session:
        listed = list_reconciliation(
            session,
            principal=user,
            metadata_status=metadata_status,
            patient_id=patient_id,
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
                action="reconciliation_queried",
                target_class="DicomStudy",
                query={
                    "metadata_status": metadata_status,
                    "sort": sort,
                    "offset": offset,
                    "limit": limit,
                },
                matches=listed.total,
                returned=len(listed.items),
                source_address=client_address(request),
            )
    return Page[ReconciliationEntryPublic](
        items=[
            ReconciliationEntryPublic.model_validate(e, from_attributes=True) for e in listed.items
        ],
        total=listed.total,
        offset=offset,
        limit=limit,
    )


@router.post("/reconciliation/{study_id}/link", response_model=ReconciledPublic, responses=CHANGE)
def link_study_to_order(
    context: Context, user: Reconciler, study_id: StudyId, body: LinkRequest, request: Request
) -> ReconciledPublic:
    """Link the study to an order (metadata matched, audited). The order starts,
    and if the acquisition is complete it is performed and the study joins the
    reading worklist. 409 if the study is not unmatched/conflict, or, unless
    ``force``, the order was cancelled or is another patient's. Forced, a
    cancelled order is reinstated (cancelled -> in_progress, audited
    ``order_reinstated``). Open reconciliation items of an MPPS for the same
    StudyInstanceUID are completed and the step is linked to the order."""
    with context.db.unit_of_work() as session:
        result = link_study(
            session,
            study_id,
            order_id=body.order_id,
            reason=body.reason,
            force=body.force,
            principal=user,
            sla=context.settings.sla(),
            source_address=client_address(request),
        )
    return _public(result)


@router.post("/reconciliation/{study_id}/release", response_model=ReleasedPublic, responses=CHANGE)
def release_study_to_reading(
    context: Context, user: Reconciler, study_id: StudyId, body: ReleaseRequest, request: Request
) -> ReleasedPublic:
    """Put an unmatched study on the reading worklist before an order claims it
    (audited with the reason): its reading item is made now if the acquisition
    is complete, else when it completes. The study stays to be reconciled. 409
    if the study is in conflict (link it instead), matched, rejected, or
    released already."""
    with context.db.unit_of_work() as session:
        result = release_to_reading(
            session,
            study_id,
            reason=body.reason,
            priority=body.priority,
            principal=user,
            sla=context.settings.sla(),
            source_address=client_address(request),
        )
    return ReleasedPublic(
        study=ReconciliationEntryPublic.model_validate(result.entry, from_attributes=True),
        reading_item_id=result.reading_item_id,
    )


@router.post(
    "/reconciliation/{study_id}/create-order",
    response_model=ReconciledPublic,
    status_code=201,
    responses=CHANGE,
)
def create_order_for_study(
    context: Context,
    user: Reconciler,
    study_id: StudyId,
    body: CreateOrderRequest,
    request: Request,
) -> ReconciledPublic:
    """Create an order from the study's patient, accession, StudyInstanceUID and
    modality, and link it as ``link`` does. 409 if an order already holds that
    UID or accession number (link to it instead; a cancelled one with ``force``),
    or, unless ``force``, if an open order of the same patient and modality was
    created within the duplicate-order window (``existing``: link to it)."""
    with context.db.unit_of_work() as session:
        result = create_order_from_study(
            session,
            study_id,
            reason=body.reason,
            priority=body.priority,
            imaging_center_id=body.imaging_center_id,
            duplicate_window=timedelta(hours=context.settings.duplicate_order_window_hours),
            force=body.force,
            principal=user,
            sla=context.settings.sla(),
            source_address=client_address(request),
        )
    return _public(result)


@router.post(
    "/reconciliation/items/{item_id}/resolve",
    response_model=ReconciliationEntryPublic,
    responses=CHANGE,
)
def resolve_item(
    context: Context, user: Reconciler, item_id: ItemId, body: ResolveRequest, request: Request
) -> ReconciliationEntryPublic:
    """Close a reconciliation item that only an MPPS opened (no study arrived):
    cancelled or completed, with the reason (audited). 404 if there is no such
    reconciliation item; 409 if it is closed already or belongs to a study
    (resolve the study by link, create-order or reject)."""
    with context.db.unit_of_work() as session:
        entry = resolve_reconciliation_item(
            session,
            item_id,
            reason=body.reason,
            outcome=WorklistStatus(body.outcome),
            principal=user,
            source_address=client_address(request),
        )
    return ReconciliationEntryPublic.model_validate(entry, from_attributes=True)
