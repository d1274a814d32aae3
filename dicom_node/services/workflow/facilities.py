"""Imaging centers and their modalities (devices with a DICOM AE title).

Changes are audited with before and after as PS3.15 Security Alerts (110113):
the DICOM audit profile files a change of the node's network configuration
(which AE titles are known devices) under that event. AE titles and center
codes are unique: a clash is AlreadyExists (HTTP 409), also when two requests
race (the unique constraint decides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingCenter, Modality
from dicom_node.domain.audit import TargetKind, security_event
from dicom_node.domain.enums import ModalityStatus
from dicom_node.domain.errors import AlreadyExists, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.vr import modality_code, short_string, validate_ae_title
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.listing import Listed, SortColumn, count_of, escape_like, order_by

_CENTER_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True, slots=True)
class CenterInfo:
    id: int
    name: str
    code: str
    location: str | None
    contact_number: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ModalityInfo:
    id: int
    imaging_center_id: int
    name: str
    type: str
    dicom_ae_title: str
    station_name: str | None
    status: ModalityStatus
    created_at: datetime
    updated_at: datetime


_CENTER_FIELDS = ("name", "code", "location", "contact_number")
_MODALITY_FIELDS = ("imaging_center_id", "name", "type", "dicom_ae_title", "station_name", "status")

CENTER_SORTS: dict[str, SortColumn] = {
    "id": ImagingCenter.id,
    "name": ImagingCenter.name,
    "code": ImagingCenter.code,
    "created_at": ImagingCenter.created_at,
}
MODALITY_SORTS: dict[str, SortColumn] = {
    "id": Modality.id,
    "name": Modality.name,
    "type": Modality.type,
    "dicom_ae_title": Modality.dicom_ae_title,
    "status": Modality.status,
    "imaging_center_id": Modality.imaging_center_id,
    "created_at": Modality.created_at,
}


# --------------------------------------------------------------------------- centers


def list_centers(
    session: Session,
    *,
    search: str | None = None,
    sort: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Listed[CenterInfo]:
    query = select(ImagingCenter)
    if search:
        pattern = f"%{escape_like(search.strip().lower())}%"
        query = query.where(
            func.lower(ImagingCenter.name).like(pattern, escape="\\")
            | func.lower(ImagingCenter.code).like(pattern, escape="\\")
        )
    total = count_of(session, query)
    rows = session.scalars(
        query.order_by(*order_by(sort, CENTER_SORTS, default="name", tiebreak=ImagingCenter.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return Listed(items=[_center_info(row) for row in rows], total=total)


def get_center(session: Session, center_id: int) -> CenterInfo:
    return _center_info(_center(session, center_id))


def create_center(
    session: Session,
    *,
    name: str,
    code: str,
    location: str | None = None,
    contact_number: str | None = None,
    principal: Principal,
    source_address: str | None = None,
) -> CenterInfo:
    center = ImagingCenter()
    _apply_center(
        center,
        {"name": name, "code": code, "location": location, "contact_number": contact_number},
    )
    session.add(center)
    _flush_unique(session, f"an imaging center with code {center.code!r} already exists")
    record_audit_event(
        session,
        security_event(
            "imaging_center_created",
            user_actor(principal, source_address),
            TargetKind.IMAGING_CENTER,
            center.id,
            details={"after": _fields(center, _CENTER_FIELDS)},
        ),
    )
    return _center_info(center)


def update_center(
    session: Session,
    center_id: int,
    *,
    changes: dict[str, Any],
    principal: Principal,
    source_address: str | None = None,
) -> CenterInfo:
    center = _center(session, center_id, lock=True)
    _only(changes, _CENTER_FIELDS)
    before = _fields(center, _CENTER_FIELDS)
    _apply_center(center, changes)
    after = _fields(center, _CENTER_FIELDS)
    if after != before:
        _flush_unique(session, f"an imaging center with code {center.code!r} already exists")
        record_audit_event(
            session,
            security_event(
                "imaging_center_updated",
                user_actor(principal, source_address),
                TargetKind.IMAGING_CENTER,
                center.id,
                details=_diff(before, after),
            ),
        )
    return _center_info(center)


def _apply_center(center: ImagingCenter, values: dict[str, Any]) -> None:
    if "name" in values:
        center.name = _text(values["name"], field="name", limit=128, required=True) or ""
    if "code" in values:
        code = (values["code"] or "").strip()
        if not _CENTER_CODE.fullmatch(code):
            raise InvalidValue(
                "a center code is 1-32 characters of letters, digits, '_', '.' or '-'",
                field="code",
            )
        center.code = code
    if "location" in values:
        center.location = _text(values["location"], field="location", limit=256)
    if "contact_number" in values:
        center.contact_number = _text(values["contact_number"], field="contact_number", limit=64)


def _center(session: Session, center_id: int, *, lock: bool = False) -> ImagingCenter:
    query = select(ImagingCenter).where(ImagingCenter.id == center_id)
    center = session.scalar(query.with_for_update() if lock else query)
    if center is None:
        raise NotFound(f"no imaging center {center_id}")
    return center


def _center_info(center: ImagingCenter) -> CenterInfo:
    return CenterInfo(
        id=center.id,
        name=center.name,
        code=center.code,
        location=center.location,
        contact_number=center.contact_number,
        created_at=center.created_at,
        updated_at=center.updated_at,
    )


# --------------------------------------------------------------------------- modalities


def list_modalities(
    session: Session,
    *,
    imaging_center_id: int | None = None,
    type: str | None = None,  # the brief's field name
    status: str | None = None,
    dicom_ae_title: str | None = None,
    sort: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Listed[ModalityInfo]:
    query = select(Modality)
    if imaging_center_id is not None:
        query = query.where(Modality.imaging_center_id == imaging_center_id)
    if type is not None:
        query = query.where(Modality.type == modality_code(type, field="type"))
    if status is not None:
        query = query.where(Modality.status == _modality_status(status).value)
    if dicom_ae_title is not None:
        query = query.where(Modality.dicom_ae_title == dicom_ae_title.strip())
    total = count_of(session, query)
    rows = session.scalars(
        query.order_by(*order_by(sort, MODALITY_SORTS, default="name", tiebreak=Modality.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return Listed(items=[_modality_info(row) for row in rows], total=total)


def get_modality(session: Session, modality_id: int) -> ModalityInfo:
    return _modality_info(_modality(session, modality_id))


def create_modality(
    session: Session,
    *,
    imaging_center_id: int,
    name: str,
    type: str,  # the brief's field name
    dicom_ae_title: str,
    station_name: str | None = None,
    status: str = ModalityStatus.ACTIVE.value,
    principal: Principal,
    source_address: str | None = None,
) -> ModalityInfo:
    modality = Modality()
    _apply_modality(
        session,
        modality,
        {
            "imaging_center_id": imaging_center_id,
            "name": name,
            "type": type,
            "dicom_ae_title": dicom_ae_title,
            "station_name": station_name,
            "status": status,
        },
    )
    session.add(modality)
    _flush_unique(session, f"AE title {modality.dicom_ae_title!r} is already in use")
    record_audit_event(
        session,
        security_event(
            "modality_created",
            user_actor(principal, source_address),
            TargetKind.MODALITY,
            modality.id,
            details={"after": _fields(modality, _MODALITY_FIELDS)},
        ),
    )
    return _modality_info(modality)


def update_modality(
    session: Session,
    modality_id: int,
    *,
    changes: dict[str, Any],
    principal: Principal,
    source_address: str | None = None,
) -> ModalityInfo:
    modality = _modality(session, modality_id, lock=True)
    _only(changes, _MODALITY_FIELDS)
    before = _fields(modality, _MODALITY_FIELDS)
    _apply_modality(session, modality, changes)
    after = _fields(modality, _MODALITY_FIELDS)
    if after != before:
        _flush_unique(session, f"AE title {modality.dicom_ae_title!r} is already in use")
        record_audit_event(
            session,
            security_event(
                "modality_updated",
                user_actor(principal, source_address),
                TargetKind.MODALITY,
                modality.id,
                details=_diff(before, after),
            ),
        )
    return _modality_info(modality)


def _apply_modality(session: Session, modality: Modality, values: dict[str, Any]) -> None:
    if "imaging_center_id" in values:
        center_id = values["imaging_center_id"]
        if center_id is None:
            raise InvalidValue("a modality belongs to an imaging center", field="imaging_center_id")
        if session.get(ImagingCenter, center_id) is None:
            raise NotFound(f"no imaging center {center_id} (imaging_center_id)")
        modality.imaging_center_id = center_id
    if "name" in values:
        modality.name = _text(values["name"], field="name", limit=128, required=True) or ""
    if "type" in values:
        modality.type = modality_code(values["type"] or "", field="type")
    if "dicom_ae_title" in values:
        try:
            modality.dicom_ae_title = validate_ae_title(values["dicom_ae_title"] or "")
        except InvalidValue as exc:
            raise InvalidValue(str(exc), field="dicom_ae_title") from None
    if "station_name" in values:
        modality.station_name = short_string(values["station_name"], field="station_name")
    if "status" in values:
        modality.status = _modality_status(values["status"]).value


def _modality_status(value: str | None) -> ModalityStatus:
    try:
        return ModalityStatus(value or "")
    except ValueError:
        options = ", ".join(member.value for member in ModalityStatus)
        raise InvalidValue(
            f"unknown status {value!r} (one of: {options})", field="status"
        ) from None


def _modality(session: Session, modality_id: int, *, lock: bool = False) -> Modality:
    query = select(Modality).where(Modality.id == modality_id)
    modality = session.scalar(query.with_for_update() if lock else query)
    if modality is None:
        raise NotFound(f"no modality {modality_id}")
    return modality


def _modality_info(modality: Modality) -> ModalityInfo:
    return ModalityInfo(
        id=modality.id,
        imaging_center_id=modality.imaging_center_id,
        name=modality.name,
        type=modality.type,
        dicom_ae_title=modality.dicom_ae_title,
        station_name=modality.station_name,
        status=ModalityStatus(modality.status),
        created_at=modality.created_at,
        updated_at=modality.updated_at,
    )


# --------------------------------------------------------------------------- shared


def _text(value: Any, *, field: str, limit: int, required: bool = False) -> str | None:
    text_value = str(value).strip() if value is not None else ""
    if not text_value:
        if required:
            raise InvalidValue(f"{field} must not be empty", field=field)
        return None
    if len(text_value) > limit:
        raise InvalidValue(f"{field} is longer than {limit} characters", field=field)
    return text_value


def _only(changes: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = set(changes) - set(allowed)
    if unknown:
        raise InvalidValue(f"not editable: {', '.join(sorted(unknown))}", field=min(unknown))


def _flush_unique(session: Session, message: str) -> None:
    """Flush; a unique-constraint clash (a code or AE title taken, possibly by a
    concurrent request) becomes AlreadyExists. The unit of work rolls back."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise AlreadyExists(message) from None


def _fields(row: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    changed = [name for name in after if before.get(name) != after[name]]
    return {
        "before": {name: before.get(name) for name in changed},
        "after": {name: after[name] for name in changed},
    }
