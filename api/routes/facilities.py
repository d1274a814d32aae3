"""Imaging centers and modalities: read by staff, changed by admins (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.facilities import (
    CenterCreate,
    CenterPublic,
    CenterUpdate,
    ModalityCreate,
    ModalityPublic,
    ModalityUpdate,
)
from api.schemas.orders import ModalityCode, Text, sort_pattern
from dicom_node.domain.enums import ModalityStatus
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.workflow.facilities import (
    CENTER_SORTS,
    MODALITY_SORTS,
    CenterInfo,
    ModalityInfo,
    create_center,
    create_modality,
    get_center,
    get_modality,
    list_centers,
    list_modalities,
    update_center,
    update_modality,
)

router = APIRouter(prefix="/api", tags=["facilities"])

Reader = Annotated[Principal, Depends(require(Permission.FACILITIES_READ))]
Manager = Annotated[Principal, Depends(require(Permission.FACILITIES_MANAGE))]
ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
READ_ERRORS = {**AUTH_ERRORS, **NOT_FOUND}
WRITE_ERRORS = {**AUTH_ERRORS, **NOT_FOUND, **CONFLICT}


def _sort_help(allowed: dict[str, object]) -> str:
    return "comma-separated; '-' for descending; one of: " + ", ".join(sorted(allowed))


def _without_nulls(changes: dict[str, object], required: tuple[str, ...]) -> dict[str, object]:
    """null for a field that cannot be empty leaves it as it is."""
    return {k: v for k, v in changes.items() if v is not None or k not in required}


def _center(info: CenterInfo) -> CenterPublic:
    return CenterPublic.model_validate(info, from_attributes=True)


def _modality(info: ModalityInfo) -> ModalityPublic:
    return ModalityPublic.model_validate(info, from_attributes=True)


@router.get("/imaging-centers", response_model=Page[CenterPublic], responses=AUTH_ERRORS)
def list_imaging_centers(
    context: Context,
    _user: Reader,
    q: Annotated[Text | None, Query(max_length=128, description="in name or code")] = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=200, pattern=sort_pattern(CENTER_SORTS), description=_sort_help(CENTER_SORTS)
        ),
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[CenterPublic]:
    with context.db.read() as session:
        listed = list_centers(session, search=q, sort=sort, offset=offset, limit=limit)
    return Page[CenterPublic](
        items=[_center(c) for c in listed.items], total=listed.total, offset=offset, limit=limit
    )


@router.get("/imaging-centers/{center_id}", response_model=CenterPublic, responses=READ_ERRORS)
def read_imaging_center(context: Context, _user: Reader, center_id: ObjectId) -> CenterPublic:
    with context.db.read() as session:
        return _center(get_center(session, center_id))


@router.post(
    "/imaging-centers",
    response_model=CenterPublic,
    status_code=201,
    responses={**AUTH_ERRORS, **CONFLICT},
)
def create_imaging_center(
    context: Context, admin: Manager, body: CenterCreate, request: Request
) -> CenterPublic:
    """A new center; 409 if its code is taken."""
    with context.db.unit_of_work() as session:
        info = create_center(
            session,
            name=body.name,
            code=body.code,
            location=body.location,
            contact_number=body.contact_number,
            principal=admin,
            source_address=client_address(request),
        )
    return _center(info)


@router.patch("/imaging-centers/{center_id}", response_model=CenterPublic, responses=WRITE_ERRORS)
def update_imaging_center(
    context: Context, admin: Manager, center_id: ObjectId, body: CenterUpdate, request: Request
) -> CenterPublic:
    with context.db.unit_of_work() as session:
        info = update_center(
            session,
            center_id,
            changes=_without_nulls(body.model_dump(exclude_unset=True), ("name", "code")),
            principal=admin,
            source_address=client_address(request),
        )
    return _center(info)


@router.get("/modalities", response_model=Page[ModalityPublic], responses=AUTH_ERRORS)
def list_modality_devices(
    context: Context,
    _user: Reader,
    imaging_center_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    type: ModalityCode | None = None,  # the brief's field name
    status: ModalityStatus | None = None,
    dicom_ae_title: Annotated[Text | None, Query(max_length=64)] = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=sort_pattern(MODALITY_SORTS),
            description=_sort_help(MODALITY_SORTS),
        ),
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[ModalityPublic]:
    with context.db.read() as session:
        listed = list_modalities(
            session,
            imaging_center_id=imaging_center_id,
            type=type,
            status=status.value if status else None,
            dicom_ae_title=dicom_ae_title,
            sort=sort,
            offset=offset,
            limit=limit,
        )
    return Page[ModalityPublic](
        items=[_modality(m) for m in listed.items], total=listed.total, offset=offset, limit=limit
    )


@router.get("/modalities/{modality_id}", response_model=ModalityPublic, responses=READ_ERRORS)
def read_modality(context: Context, _user: Reader, modality_id: ObjectId) -> ModalityPublic:
    with context.db.read() as session:
        return _modality(get_modality(session, modality_id))


@router.post(
    "/modalities",
    response_model=ModalityPublic,
    status_code=201,
    responses=WRITE_ERRORS,
)
def create_modality_device(
    context: Context, admin: Manager, body: ModalityCreate, request: Request
) -> ModalityPublic:
    """A new modality; the AE title must be a valid DICOM AE (422) and unused (409)."""
    with context.db.unit_of_work() as session:
        info = create_modality(
            session,
            imaging_center_id=body.imaging_center_id,
            name=body.name,
            type=body.type,
            dicom_ae_title=body.dicom_ae_title,
            station_name=body.station_name,
            status=body.status.value,
            principal=admin,
            source_address=client_address(request),
        )
    return _modality(info)


@router.patch("/modalities/{modality_id}", response_model=ModalityPublic, responses=WRITE_ERRORS)
def update_modality_device(
    context: Context, admin: Manager, modality_id: ObjectId, body: ModalityUpdate, request: Request
) -> ModalityPublic:
    with context.db.unit_of_work() as session:
        info = update_modality(
            session,
            modality_id,
            changes=_without_nulls(
                body.model_dump(exclude_unset=True, mode="json"),
                ("imaging_center_id", "name", "type", "dicom_ae_title", "status"),
            ),
            principal=admin,
            source_address=client_address(request),
        )
    return _modality(info)
