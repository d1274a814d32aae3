"""Finding orders: the filtered, sorted, paged listing and the read of one
order, each narrowed by the visibility rule (``services/access/visibility.py``)
and audited when it reads a patient's record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, ImagingRequest
from dicom_node.db.query import person_name_condition
from dicom_node.domain.audit import (
    AuditEventCode,
    Subject,
    TargetKind,
    audit_event,
    patient_record_event,
)
from dicom_node.domain.enums import Priority, RequestStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import Wildcard
from dicom_node.domain.vr import modality_code
from dicom_node.services.access.visibility import order_condition, study_condition
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, user_actor
from dicom_node.services.listing import Listed, SortColumn, count_of, order_by
from dicom_node.services.workflow.orders import OrderInfo, load_order, order_info, priority_of

ORDER_SORTS: dict[str, SortColumn] = {
    "id": ImagingRequest.id,
    "created_at": ImagingRequest.created_at,
    "updated_at": ImagingRequest.updated_at,
    "scheduled_at": ImagingRequest.scheduled_at,
    "status": ImagingRequest.status,
    # clinical order, not alphabetical: stat first when ascending
    "priority": case(
        (ImagingRequest.priority == Priority.STAT.value, 0),
        (ImagingRequest.priority == Priority.URGENT.value, 1),
        else_=2,
    ),
    "patient_id": ImagingRequest.patient_id,
    "patient_name": ImagingRequest.patient_name_folded,
    "accession_number": ImagingRequest.accession_number,
    "requested_modality": ImagingRequest.requested_modality,
}


@dataclass(frozen=True, slots=True)
class OrderFilter:
    status: tuple[str, ...] = ()
    priority: tuple[str, ...] = ()
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    modality: str | None = None
    accession_number: str | None = None
    imaging_center_id: int | None = None
    requested_by_id: int | None = None
    referring_physician_id: int | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def query_keys(self) -> dict[str, Any]:
        """The filters that were given, JSON-ready (what a Query audit records)."""
        keys: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value in (None, ()):
                continue
            keys[name] = value.isoformat() if isinstance(value, datetime) else value
            if isinstance(value, tuple):
                keys[name] = list(value)
        return keys


def list_orders(
    session: Session,
    *,
    principal: Principal,
    filters: OrderFilter,
    sort: str | None = None,
    offset: int = 0,
    limit: int = 50,
    source_address: str | None = None,
) -> Listed[OrderInfo]:
    """Orders matching every filter, visible to the principal.

    A listing narrowed to a patient (id or name) reads a patient's record: it
    is audited as a Query (110112) with the query keys, never the results.
    """
    query = select(ImagingRequest).where(order_condition(principal))
    if filters.status:
        for value in filters.status:
            _status(value)
        query = query.where(ImagingRequest.status.in_(filters.status))
    if filters.priority:
        query = query.where(
            ImagingRequest.priority.in_([priority_of(p).value for p in filters.priority])
        )
    if filters.patient_id is not None:
        query = query.where(ImagingRequest.patient_id == filters.patient_id)
    if filters.issuer_of_patient_id is not None:
        query = query.where(ImagingRequest.issuer_of_patient_id == filters.issuer_of_patient_id)
    if filters.patient_name:
        # the PN rule of C-FIND (domain/names.py) for "<name>*": case-insensitive,
        # the start of the name or of any one component group
        condition = person_name_condition(
            ImagingRequest.patient_name_folded, Wildcard(f"{filters.patient_name.strip()}*")
        )
        if condition is not None:
            query = query.where(condition)
    if filters.modality is not None:
        query = query.where(
            ImagingRequest.requested_modality == modality_code(filters.modality, field="modality")
        )
    if filters.accession_number is not None:
        query = query.where(ImagingRequest.accession_number == filters.accession_number)
    if filters.imaging_center_id is not None:
        query = query.where(ImagingRequest.imaging_center_id == filters.imaging_center_id)
    if filters.requested_by_id is not None:
        query = query.where(ImagingRequest.requested_by_id == filters.requested_by_id)
    if filters.referring_physician_id is not None:
        query = query.where(ImagingRequest.referring_physician_id == filters.referring_physician_id)
    if filters.scheduled_from is not None:
        query = query.where(ImagingRequest.scheduled_at >= filters.scheduled_from)
    if filters.scheduled_to is not None:
        query = query.where(ImagingRequest.scheduled_at <= filters.scheduled_to)
    if filters.created_from is not None:
        query = query.where(ImagingRequest.created_at >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(ImagingRequest.created_at <= filters.created_to)
    total = count_of(session, query)
    rows = session.scalars(
        query.order_by(
            *order_by(sort, ORDER_SORTS, default="-created_at", tiebreak=ImagingRequest.id)
        )
        .offset(offset)
        .limit(limit)
    ).all()
    if filters.patient_id is not None or filters.patient_name:
        record_audit_event(
            session,
            audit_event(
                AuditEventCode.QUERY,
                "orders_queried",
                user_actor(principal, source_address),
                TargetKind.ORDER,
                None,
                Subject(patient_id=filters.patient_id),
                details={"query": {**filters.query_keys(), "sort": sort}, "matches": total},
            ),
        )
    return Listed(items=[order_info(order) for order in rows], total=total)


def _status(value: str) -> RequestStatus:
    try:
        return RequestStatus(value)
    except ValueError:
        options = ", ".join(member.value for member in RequestStatus)
        raise InvalidValue(
            f"unknown status {value!r} (one of: {options})", field="status"
        ) from None


def read_order(
    session: Session, order_id: int, *, principal: Principal, source_address: str | None = None
) -> OrderInfo:
    """One order; the read is audited as a patient record access (110110)."""
    order = load_order(session, order_id, principal=principal)
    _record_order_read(session, order, principal, source_address)
    return order_info(order)


def record_order_reads(
    session: Session,
    order_ids: Sequence[int],
    *,
    principal: Principal,
    source_address: str | None = None,
) -> None:
    """``order_read`` for each order of ``order_ids`` the principal may see, as
    ``read_order`` records it: an order shown on its own (a subscription's
    record) is read with an audit trail whichever way it is reached."""
    orders = session.scalars(
        select(ImagingRequest).where(
            ImagingRequest.id.in_(set(order_ids)), order_condition(principal)
        )
    ).all()
    for order in orders:
        _record_order_read(session, order, principal, source_address)


def _record_order_read(
    session: Session, order: ImagingRequest, principal: Principal, source_address: str | None
) -> None:
    record_audit_event(
        session,
        patient_record_event(
            "order_read",
            user_actor(principal, source_address),
            TargetKind.ORDER,
            order.id,
            order_subject(order),
        ),
    )


def orders_by_ids(
    session: Session, order_ids: Sequence[int], *, principal: Principal
) -> dict[int, OrderInfo]:
    """The orders of ``order_ids`` the principal may see, by id, in one SELECT
    (an id outside the visibility rule is simply absent, as a missing one).

    Not audited: this resolves a link from a record the caller already read
    (a worklist item's order, a study's order), whose read is the audited one.
    """
    if not order_ids:
        return {}
    rows = session.scalars(
        select(ImagingRequest).where(
            ImagingRequest.id.in_(set(order_ids)), order_condition(principal)
        )
    ).all()
    return {order.id: order_info(order) for order in rows}


def study_ids_of_orders(
    session: Session, order_ids: Sequence[int], *, principal: Principal
) -> dict[int, list[int]]:
    """The ids of the studies linked to each of ``order_ids`` (ascending), in
    one SELECT for all of them, within the visibility rule (an order the
    principal may not see has none here)."""
    if not order_ids:
        return {}
    rows = session.execute(
        select(DicomStudy.imaging_request_id, DicomStudy.id)
        .where(DicomStudy.imaging_request_id.in_(set(order_ids)), study_condition(principal))
        .order_by(DicomStudy.id)
    ).all()
    found: dict[int, list[int]] = {order_id: [] for order_id in order_ids}
    for order_id, study_id in rows:
        if order_id is not None:
            found[order_id].append(study_id)
    return found
