"""ImagingRequest (order) use cases: create, list, read, edit, schedule, cancel,
start and complete; every state change audited with before and after.

docs/domain.md#order-states: requested -> scheduled -> in_progress -> performed; in_progress ->
discontinued; requested/scheduled -> cancelled. ``advance_order`` is the one
audited transition: each caller names the states it may move the order from,
so for the DICOM side a step that does not apply is a no-op, not an error (a
late image for a performed order changes nothing). The HTTP use cases here
turn a refused transition into ``Conflict`` naming the current state.

Ownership: a referring physician sees only the orders they requested; any
other order is ``NotFound`` to them (not theirs to know about).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, select, text
from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingCenter, ImagingRequest, Modality
from dicom_node.db.query import person_name_condition
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import ModalityStatus, Priority, RequestStatus, Role
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import Wildcard
from dicom_node.domain.uids import new_uid
from dicom_node.domain.vr import (
    PATIENT_SEXES,
    dicom_date,
    long_string,
    modality_code,
    person_name,
)
from dicom_node.services.audit.record import acting, record_audit_event
from dicom_node.services.listing import Listed, SortColumn, count_of, order_by


def _fold_procedure(value: str | None) -> str:
    """Case- and spacing-insensitive form of a procedure description."""
    return " ".join(unicodedata.normalize("NFC", value or "").casefold().split())


# --------------------------------------------------------------------------- public shape


@dataclass(frozen=True, slots=True)
class OrderInfo:
    id: int
    status: RequestStatus
    priority: Priority
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str | None
    patient_sex: str | None
    requested_modality: str | None
    study_description: str | None
    clinical_indication: str | None
    referring_physician_name: str | None
    requesting_physician: str | None
    scheduled_performing_physician_name: str | None
    requested_by_id: int | None
    imaging_center_id: int | None
    scheduled_modality_id: int | None
    scheduled_at: datetime | None
    accession_number: str | None
    accession_issuer: str
    study_instance_uid: str | None
    requested_procedure_id: str | None
    scheduled_procedure_step_id: str | None
    cancel_reason: str | None
    scheduled_on: datetime | None
    exam_started_at: datetime | None
    exam_completed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        """JSON-ready copy (the ``existing`` order of a duplicate answer)."""
        result: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            result[name] = value.isoformat() if isinstance(value, datetime) else value
        result["status"] = self.status.value
        result["priority"] = self.priority.value
        return result


def order_info(order: ImagingRequest) -> OrderInfo:
    return OrderInfo(
        id=order.id,
        status=RequestStatus(order.status),
        priority=Priority(order.priority),
        patient_id=order.patient_id,
        issuer_of_patient_id=order.issuer_of_patient_id or "",
        patient_name=order.patient_name,
        patient_birth_date=order.patient_birth_date,
        patient_sex=order.patient_sex,
        requested_modality=order.requested_modality,
        study_description=order.study_description,
        clinical_indication=order.clinical_indication,
        referring_physician_name=order.referring_physician_name,
        requesting_physician=order.requesting_physician,
        scheduled_performing_physician_name=order.scheduled_performing_physician_name,
        requested_by_id=order.requested_by_id,
        imaging_center_id=order.imaging_center_id,
        scheduled_modality_id=order.scheduled_modality_id,
        scheduled_at=order.scheduled_at,
        accession_number=order.accession_number,
        accession_issuer=order.accession_issuer or "",
        study_instance_uid=order.study_instance_uid,
        requested_procedure_id=order.requested_procedure_id,
        scheduled_procedure_step_id=order.scheduled_procedure_step_id,
        cancel_reason=order.cancel_reason,
        scheduled_on=order.scheduled_on,
        exam_started_at=order.exam_started_at,
        exam_completed_at=order.exam_completed_at,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


OPEN_STATUSES = (RequestStatus.REQUESTED, RequestStatus.SCHEDULED, RequestStatus.IN_PROGRESS)

# --------------------------------------------------------------------------- transitions


def advance_order(
    session: Session,
    order: ImagingRequest,
    to: RequestStatus,
    *,
    allowed_from: Iterable[RequestStatus],
    actor: str,
    reason: str,
    actor_user_id: int | None = None,
    actor_role: str | None = None,
    source_address: str | None = None,
) -> bool:
    """Move ``order`` to ``to`` if it is in one of ``allowed_from``; True if moved.

    The status is re-read under a row lock (PostgreSQL; SQLite writers are
    serialised anyway), so two transitions racing on one order (MPPS on one
    association, the first image or the stability job on another) never both
    pass the check on the same old status.
    """
    session.flush()  # the caller's own pending changes first: refresh keeps them
    session.refresh(order, attribute_names=["status"], with_for_update=True)
    if order.status not in {status.value for status in allowed_from}:
        return False
    before = order.status
    order.status = to.value
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action=f"order_{to.value}",
            actor=actor,
            actor_user_id=actor_user_id,
            actor_role=actor_role,
            source_address=source_address,
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=order.patient_id,
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession_number,
            reason=reason,
            details={"before": {"status": before}, "after": {"status": order.status}},
        ),
    )
    return True


def schedule_order(
    session: Session,
    order: ImagingRequest,
    *,
    modality: Modality,
    scheduled_at: datetime,
    actor: str,
    now: datetime | None = None,
    actor_user_id: int | None = None,
    actor_role: str | None = None,
    source_address: str | None = None,
) -> ImagingRequest:
    """Schedule (or reschedule) an order on a modality at a time.

    The AccessionNumber and StudyInstanceUID (``2.25.<uuid as integer>``) are
    assigned the first time only: a reschedule keeps them, so images made with
    an earlier worklist answer still match. Requested/step IDs likewise. A
    first scheduling moves the order requested -> scheduled (audited); a
    reschedule of a scheduled order is audited with the old and new slot.
    An order in any other state is a ``Conflict`` naming that state.
    """
    if scheduled_at.tzinfo is None:
        raise InvalidValue("scheduled_at needs a time zone", field="scheduled_at")
    if order.id is not None:
        # the state as committed, under a row lock: a cancel racing with this
        # schedule cannot slip between the check and the change
        session.flush()
        session.refresh(order, attribute_names=["status"], with_for_update=True)
    if order.status not in (RequestStatus.REQUESTED.value, RequestStatus.SCHEDULED.value):
        raise Conflict(f"an order that is {order.status} cannot be scheduled", current=order.status)
    moment = now or datetime.now(UTC)
    if order.id is None:
        session.flush()  # the id goes into the accession number
    before = {"scheduled_at": _iso(order.scheduled_at), "modality_id": order.scheduled_modality_id}
    order.accession_number = order.accession_number or f"A{moment:%y%m%d}{order.id:07d}"
    order.study_instance_uid = order.study_instance_uid or new_uid()
    order.requested_procedure_id = order.requested_procedure_id or f"RP{order.id}"
    order.scheduled_procedure_step_id = order.scheduled_procedure_step_id or f"SPS{order.id}"
    order.requested_modality = order.requested_modality or modality.type
    order.scheduled_modality_id = modality.id
    order.imaging_center_id = order.imaging_center_id or modality.imaging_center_id
    order.scheduled_at = scheduled_at
    order.scheduled_on = order.scheduled_on or moment
    after = {"scheduled_at": _iso(scheduled_at), "modality_id": modality.id}
    who: dict[str, Any] = {
        "actor_user_id": actor_user_id,
        "actor_role": actor_role,
        "source_address": source_address,
    }
    if not advance_order(
        session,
        order,
        RequestStatus.SCHEDULED,
        allowed_from=(RequestStatus.REQUESTED,),
        actor=actor,
        reason="scheduled",
        **who,
    ):
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.ORDER_RECORD,
                action="order_rescheduled",
                actor=actor,
                target_class="ImagingRequest",
                target_id=str(order.id),
                patient_id=order.patient_id,
                study_instance_uid=order.study_instance_uid,
                accession_number=order.accession_number,
                details={"before": before, "after": after},
                **who,
            ),
        )
    return order


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --------------------------------------------------------------------------- HTTP use cases


@dataclass(frozen=True, slots=True)
class NewOrder:
    patient_id: str
    patient_name: str
    requested_modality: str
    study_description: str
    issuer_of_patient_id: str = ""
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    priority: str = Priority.ROUTINE.value
    clinical_indication: str | None = None
    referring_physician_name: str | None = None
    # the Modality Worklist's RequestingPhysician and ScheduledPerformingPhysicianName
    requesting_physician: str | None = None
    scheduled_performing_physician_name: str | None = None
    imaging_center_id: int | None = None


def _priority(value: str, *, field: str = "priority") -> Priority:
    try:
        return Priority(value)
    except ValueError:
        options = ", ".join(member.value for member in Priority)
        raise InvalidValue(f"unknown priority {value!r} (one of: {options})", field=field) from None


def _sex(value: str | None) -> str | None:
    sex = (value or "").strip().upper() or None
    if sex is not None and sex not in PATIENT_SEXES:
        raise InvalidValue("patient_sex is M, F or O", field="patient_sex")
    return sex


def _center(session: Session, center_id: int | None) -> int | None:
    if center_id is not None and session.get(ImagingCenter, center_id) is None:
        raise NotFound(f"no imaging center {center_id} (imaging_center_id)")
    return center_id


def lock_patient_orders(session: Session, patient_id: str, issuer: str) -> None:
    """Serialise order creation per patient on PostgreSQL, so two concurrent
    requests (a new order, an order made from a study) cannot both pass the
    duplicate check (SQLite has one writer)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"order-duplicates|{issuer}|{patient_id}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def find_duplicate_order(
    session: Session,
    *,
    patient_id: str,
    issuer_of_patient_id: str,
    requested_modality: str,
    study_description: str,
    window: timedelta,
    now: datetime,
) -> ImagingRequest | None:
    """The newest open order of this patient for the same modality and procedure
    (case-insensitive) created within ``window`` before ``now``; None if the
    window is zero."""
    if window <= timedelta(0):
        return None
    candidates = session.scalars(
        select(ImagingRequest)
        .where(
            ImagingRequest.patient_id == patient_id,
            ImagingRequest.issuer_of_patient_id == issuer_of_patient_id,
            ImagingRequest.requested_modality == requested_modality,
            ImagingRequest.status.in_([status.value for status in OPEN_STATUSES]),
            ImagingRequest.created_at >= now - window,
        )
        .order_by(ImagingRequest.created_at.desc(), ImagingRequest.id.desc())
    ).all()
    wanted = _fold_procedure(study_description)
    return next((c for c in candidates if _fold_procedure(c.study_description) == wanted), None)


def create_order(
    session: Session,
    new: NewOrder,
    *,
    principal: Principal,
    duplicate_window: timedelta,
    force: bool = False,
    force_reason: str | None = None,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """A new order in state requested, requested by ``principal``.

    Duplicate prevention: an open order of the same patient for the same
    modality and procedure created within ``duplicate_window`` is a Conflict
    carrying that order (``existing``), unless ``force`` with a reason, which
    is audited with the existing order's id.
    """
    moment = now or datetime.now(UTC)
    patient_id = long_string(new.patient_id, field="patient_id", required=True)
    issuer = long_string(new.issuer_of_patient_id, field="issuer_of_patient_id") or ""
    name = person_name(new.patient_name, field="patient_name", required=True)
    modality = modality_code(new.requested_modality, field="requested_modality")
    description = long_string(new.study_description, field="study_description", required=True)
    assert patient_id is not None and name is not None and description is not None
    reason = (force_reason or "").strip()
    if force and not reason:
        raise InvalidValue("force needs a force_reason", field="force_reason")
    order = ImagingRequest(
        patient_id=patient_id,
        issuer_of_patient_id=issuer,
        patient_name=name,  # its folded copy follows (db/models.py)
        patient_birth_date=dicom_date(new.patient_birth_date, field="patient_birth_date"),
        patient_sex=_sex(new.patient_sex),
        requested_modality=modality,
        study_description=description,
        priority=_priority(new.priority).value,
        status=RequestStatus.REQUESTED.value,
        clinical_indication=(new.clinical_indication or "").strip() or None,
        referring_physician_name=person_name(
            new.referring_physician_name, field="referring_physician_name"
        ),
        requesting_physician=person_name(new.requesting_physician, field="requesting_physician"),
        scheduled_performing_physician_name=person_name(
            new.scheduled_performing_physician_name, field="scheduled_performing_physician_name"
        ),
        requested_by_id=principal.user_id,
        imaging_center_id=_center(session, new.imaging_center_id),
        created_at=moment,
        updated_at=moment,
    )
    lock_patient_orders(session, patient_id, issuer)
    existing = find_duplicate_order(
        session,
        patient_id=patient_id,
        issuer_of_patient_id=issuer,
        requested_modality=modality,
        study_description=description,
        window=duplicate_window,
        now=moment,
    )
    if existing is not None and not force:
        if not _visible_to(existing, principal):
            # Another physician's order: its content is not this caller's to see
            # (GET would be 404). Saying that one exists is the point of the rule.
            raise Conflict(
                f"patient {patient_id} already has an open {modality} order for this "
                "procedure, placed by someone else; contact scheduling, or send force with "
                "a force_reason to order it again"
            )
        raise Conflict(
            f"patient {patient_id} already has an open {modality} order for this procedure "
            f"(order {existing.id}, {existing.status}); send force with a force_reason to "
            "order it again",
            existing=order_info(existing).as_json(),
        )
    session.add(order)
    session.flush()
    info = order_info(order)
    details: dict[str, Any] = {"after": _audited(order)}
    if existing is not None:
        details["duplicate_override"] = {"existing_order_id": existing.id, "reason": reason}
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action="order_created",
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=patient_id,
            reason=reason if existing is not None else None,
            details=details,
            **acting(principal, source_address),
        ),
    )
    if existing is not None:
        audit_duplicate_forced(
            session,
            order,
            existing,
            reason=reason,
            principal=principal,
            source_address=source_address,
        )
    return info


def audit_duplicate_forced(
    session: Session,
    order: ImagingRequest,
    existing: ImagingRequest,
    *,
    reason: str,
    principal: Principal,
    source_address: str | None,
) -> None:
    """An order made despite an open one of the same patient: its own event, so
    an auditor can list every override, wherever it was made."""
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action="order_duplicate_forced",
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=order.patient_id,
            reason=reason,
            details={"existing_order_id": existing.id, "new_order_id": order.id},
            **acting(principal, source_address),
        ),
    )


_AUDITED_FIELDS = (
    "status",
    "priority",
    "patient_id",
    "issuer_of_patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "requested_modality",
    "study_description",
    "clinical_indication",
    "referring_physician_name",
    "requesting_physician",
    "scheduled_performing_physician_name",
    "requested_by_id",
    "imaging_center_id",
)


def _audited(order: ImagingRequest, fields: Iterable[str] = _AUDITED_FIELDS) -> dict[str, Any]:
    return {name: getattr(order, name) for name in fields}


def _visible_to(order: ImagingRequest, principal: Principal) -> bool:
    return principal.role is not Role.REFERRING_PHYSICIAN or order.requested_by_id == (
        principal.user_id
    )


def load_order(
    session: Session, order_id: int, *, principal: Principal, lock: bool = False
) -> ImagingRequest:
    """The order, if the principal may see it; NotFound otherwise."""
    query = select(ImagingRequest).where(ImagingRequest.id == order_id)
    order = session.scalar(query.with_for_update() if lock else query)
    if order is None or not _visible_to(order, principal):
        raise NotFound(f"no order {order_id}")
    return order


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
    query = select(ImagingRequest)
    if principal.role is Role.REFERRING_PHYSICIAN:
        query = query.where(ImagingRequest.requested_by_id == principal.user_id)
    if filters.status:
        for value in filters.status:
            _status(value)
        query = query.where(ImagingRequest.status.in_(filters.status))
    if filters.priority:
        query = query.where(
            ImagingRequest.priority.in_([_priority(p).value for p in filters.priority])
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
            AuditRecord(
                event_code=AuditEventCode.QUERY,
                action="orders_queried",
                target_class="ImagingRequest",
                patient_id=filters.patient_id,
                details={"query": {**filters.query_keys(), "sort": sort}, "matches": total},
                **acting(principal, source_address),
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
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.PATIENT_RECORD,
            action="order_read",
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=order.patient_id,
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession_number,
            **acting(principal, source_address),
        ),
    )
    return order_info(order)


EDITABLE_FIELDS = frozenset(
    {
        "priority",
        "clinical_indication",
        "study_description",
        "referring_physician_name",
        "requesting_physician",
        "scheduled_performing_physician_name",
        "requested_modality",
        "imaging_center_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
    }
)
_EDITABLE_STATES = (RequestStatus.REQUESTED.value, RequestStatus.SCHEDULED.value)
# optional PN fields of an order, edited alike
_PERSON_NAMES = (
    "referring_physician_name",
    "requesting_physician",
    "scheduled_performing_physician_name",
)


def update_order(
    session: Session,
    order_id: int,
    *,
    changes: Mapping[str, Any],
    principal: Principal,
    source_address: str | None = None,
) -> OrderInfo:
    """Edit an order while it is requested or scheduled (else Conflict).

    A referring physician edits only their own orders, only while requested
    (Forbidden once scheduled). The requested modality cannot change once a
    modality is booked. Audited with the changed fields before and after.
    """
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise InvalidValue(f"not editable: {', '.join(sorted(unknown))}", field=min(unknown))
    order = load_order(session, order_id, principal=principal, lock=True)
    if order.status not in _EDITABLE_STATES:
        raise Conflict(f"an order that is {order.status} cannot be edited", current=order.status)
    if principal.role is Role.REFERRING_PHYSICIAN and order.status != RequestStatus.REQUESTED.value:
        raise Forbidden("a referring physician may edit an order only while it is requested")
    before = _audited(order, sorted(changes))
    for name, value in changes.items():
        if name == "priority":
            order.priority = _priority(str(value)).value
        elif name == "study_description":
            order.study_description = long_string(value, field=name, required=True)
        elif name == "clinical_indication":
            order.clinical_indication = (value or "").strip() or None
        elif name in _PERSON_NAMES:
            setattr(order, name, person_name(value, field=name))
        elif name == "patient_name":
            new_name = person_name(value, field=name, required=True)
            assert new_name is not None
            order.patient_name = new_name  # its folded copy follows (db/models.py)
        elif name == "patient_birth_date":
            order.patient_birth_date = dicom_date(value, field=name)
        elif name == "patient_sex":
            order.patient_sex = _sex(value)
        elif name == "imaging_center_id":
            order.imaging_center_id = _center(session, value)
        elif name == "requested_modality":
            code = modality_code(str(value or ""), field=name)
            if order.scheduled_modality_id is not None and code != order.requested_modality:
                raise Conflict(
                    "the requested modality cannot change once a modality is booked",
                    current=order.status,
                )
            order.requested_modality = code
    after = _audited(order, sorted(changes))
    changed = [name for name in after if after[name] != before[name]]
    if changed:
        session.flush()
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.ORDER_RECORD,
                action="order_updated",
                target_class="ImagingRequest",
                target_id=str(order.id),
                patient_id=order.patient_id,
                study_instance_uid=order.study_instance_uid,
                accession_number=order.accession_number,
                details={
                    "before": {name: before[name] for name in changed},
                    "after": {name: after[name] for name in changed},
                },
                **acting(principal, source_address),
            ),
        )
    return order_info(order)


def schedule_order_by_id(
    session: Session,
    order_id: int,
    *,
    modality_id: int,
    scheduled_at: datetime,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """Schedule or reschedule (same call) on a modality of the requested type.

    NotFound for an unknown modality; Conflict for a retired one or one of
    another type than the order asks for."""
    order = load_order(session, order_id, principal=principal)
    modality = session.get(Modality, modality_id)
    if modality is None:
        raise NotFound(f"no modality {modality_id} (modality_id)")
    if modality.status == ModalityStatus.RETIRED.value:
        raise Conflict(f"modality {modality.dicom_ae_title} is retired", current=modality.status)
    if order.requested_modality and modality.type != order.requested_modality:
        raise Conflict(
            f"modality {modality.dicom_ae_title} is {modality.type}, the order asks for "
            f"{order.requested_modality}"
        )
    schedule_order(
        session,
        order,
        modality=modality,
        scheduled_at=scheduled_at,
        actor=principal.username,
        now=now,
        actor_user_id=principal.user_id,
        actor_role=principal.role.value,
        source_address=source_address,
    )
    session.flush()
    return order_info(order)


def cancel_order(
    session: Session,
    order_id: int,
    *,
    reason: str,
    principal: Principal,
    source_address: str | None = None,
) -> OrderInfo:
    """requested/scheduled -> cancelled, with the reason stored and audited.

    A referring physician cancels only their own order (others: NotFound) and
    only while it is requested (scheduled: Forbidden, ask the scheduler).
    """
    text_reason = (reason or "").strip()
    if not text_reason:
        raise InvalidValue("a cancellation needs a reason", field="reason")
    order = load_order(session, order_id, principal=principal)
    referrer = principal.role is Role.REFERRING_PHYSICIAN
    if referrer and order.status == RequestStatus.SCHEDULED.value:
        raise Forbidden("a referring physician may cancel an order only while it is requested")
    # the status read above was not locked: advance_order re-checks under the row
    # lock, so a scheduling that commits in between still stops a referrer's cancel
    allowed = (
        (RequestStatus.REQUESTED,)
        if referrer
        else (
            RequestStatus.REQUESTED,
            RequestStatus.SCHEDULED,
        )
    )
    if not advance_order(
        session,
        order,
        RequestStatus.CANCELLED,
        allowed_from=allowed,
        reason=text_reason,
        **acting(principal, source_address),
    ):
        raise Conflict(f"an order that is {order.status} cannot be cancelled", current=order.status)
    order.cancel_reason = text_reason
    session.flush()
    return order_info(order)


def start_order(
    session: Session,
    order_id: int,
    *,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """scheduled -> in_progress (the technologist starts the exam)."""
    order = _exam_step(
        session,
        order_id,
        RequestStatus.IN_PROGRESS,
        RequestStatus.SCHEDULED,
        "started",
        principal=principal,
        source_address=source_address,
    )
    order.exam_started_at = order.exam_started_at or now or datetime.now(UTC)
    session.flush()
    return order_info(order)


def complete_order(
    session: Session,
    order_id: int,
    *,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> OrderInfo:
    """in_progress -> performed (the technologist ends the exam)."""
    order = _exam_step(
        session,
        order_id,
        RequestStatus.PERFORMED,
        RequestStatus.IN_PROGRESS,
        "completed",
        principal=principal,
        source_address=source_address,
    )
    order.exam_completed_at = order.exam_completed_at or now or datetime.now(UTC)
    session.flush()
    return order_info(order)


def _exam_step(
    session: Session,
    order_id: int,
    to: RequestStatus,
    from_: RequestStatus,
    verb: str,
    *,
    principal: Principal,
    source_address: str | None,
) -> ImagingRequest:
    order = load_order(session, order_id, principal=principal)
    if not advance_order(
        session,
        order,
        to,
        allowed_from=(from_,),
        reason=f"exam {verb}",
        **acting(principal, source_address),
    ):
        raise Conflict(f"an order that is {order.status} cannot be {verb}", current=order.status)
    return order
