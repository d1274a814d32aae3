"""ImagingRequest (order) use cases: create, edit and schedule an order, and the
one audited move of its state; the listing is ``order_listing.py``, the steps
after booking (cancel, start, complete) ``order_steps.py``, duplicate
prevention ``order_duplicates.py``, the referrer as a user ``order_referrer.py``.

docs/domain.md#order-states: every state change is a trigger of the ORDER table
(``domain/transitions.py``) taken through ``take_trigger``, the one audited
transition, so for the DICOM side a step that does not apply is a no-op, not an
error (a late image for a performed order changes nothing). The HTTP use cases
turn a refused transition into ``Conflict`` naming the current state.

Visibility: the one rule of ``services/access/visibility.py``; an order outside
it is ``NotFound`` (not theirs to know about). A referring physician changes
only an order they placed themselves, not one they only receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingCenter, ImagingRequest, Modality
from dicom_node.domain.audit import Actor, order_event
from dicom_node.domain.enums import ModalityStatus, Priority, RequestStatus, Role
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import ORDER
from dicom_node.domain.uids import new_uid
from dicom_node.domain.vr import (
    PATIENT_SEXES,
    dicom_date,
    long_string,
    modality_code,
    person_name,
)
from dicom_node.services.access.visibility import may_see_order
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, user_actor
from dicom_node.services.workflow.order_duplicates import (
    audit_duplicate_forced,
    find_duplicate_order,
    lock_patient_orders,
)
from dicom_node.services.workflow.order_referrer import (
    chosen_referrer,
    dicom_name,
    matched_referrer,
)

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
    # the referring physician as a user (order_referrer.py), if known
    referring_physician_id: int | None
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
        referring_physician_id=order.referring_physician_id,
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


# --------------------------------------------------------------------------- transitions


def take_trigger(
    session: Session, order: ImagingRequest, trigger: str, *, actor: Actor, reason: str
) -> bool:
    """Move ``order`` by an ORDER trigger (``domain/transitions.py``), audited:
    True if its state allowed the trigger and it moved, False (nothing changed)
    if not. The one way an order's status changes.

    The status is re-read under a row lock (PostgreSQL; SQLite writers are
    serialised anyway), so two transitions racing on one order (MPPS on one
    association, the first image or the stability job on another) never both
    pass the check on the same old status.
    """
    session.flush()  # the caller's own pending changes first: refresh keeps them
    session.refresh(order, attribute_names=["status"], with_for_update=True)
    if not ORDER.allows(trigger, order.status):
        return False
    before = order.status
    order.status = ORDER.target(trigger).value
    record_audit_event(
        session,
        order_event(
            f"order_{order.status}",
            actor,
            order.id,
            order_subject(order),
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
    if not (ORDER.allows("schedule", order.status) or ORDER.allows("reschedule", order.status)):
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
    who = Actor(name=actor, user_id=actor_user_id, role=actor_role, address=source_address)
    # a first booking moves the order; a reschedule (the status stays) is its own event
    if not take_trigger(session, order, "schedule", actor=who, reason="scheduled"):
        record_audit_event(
            session,
            order_event(
                "order_rescheduled",
                who,
                order.id,
                order_subject(order),
                details={"before": before, "after": after},
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
    # the referring physician chosen from the user list (order_referrer.py)
    referring_physician_id: int | None = None
    # the Modality Worklist's RequestingPhysician and ScheduledPerformingPhysicianName
    requesting_physician: str | None = None
    scheduled_performing_physician_name: str | None = None
    imaging_center_id: int | None = None


def priority_of(value: str, *, field: str = "priority") -> Priority:
    """The Priority named ``value``; InvalidValue on ``field`` otherwise."""
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
    """A new order in state requested, requested by ``principal``, for the
    referring physician chosen by ``referring_physician_id`` (name filled from
    them if not given) or else matched from ``referring_physician_name``.

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
        priority=priority_of(new.priority).value,
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
    if new.referring_physician_id is not None:
        _choose_referrer(session, order, principal, new.referring_physician_id)
    else:
        order.referring_physician_id = matched_referrer(
            session, order.referring_physician_name, by=principal
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
        if not may_see_order(principal, existing):
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
        order_event(
            "order_created",
            user_actor(principal, source_address),
            order.id,
            order_subject(order),
            reason=reason if existing is not None else None,
            details=details,
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
    "referring_physician_id",
    "imaging_center_id",
)


def _audited(order: ImagingRequest, fields: Iterable[str] = _AUDITED_FIELDS) -> dict[str, Any]:
    return {name: getattr(order, name) for name in fields}


def _choose_referrer(
    session: Session, order: ImagingRequest, principal: Principal, user_id: int
) -> None:
    """Link ``order`` to the referring physician chosen from the user list; the
    order's ReferringPhysicianName, when empty, becomes their DICOM name."""
    if principal.role is Role.REFERRING_PHYSICIAN and user_id != principal.user_id:
        raise Forbidden("a referring physician cannot name another physician as the referrer")
    user = chosen_referrer(session, user_id)
    order.referring_physician_id = user.id
    order.referring_physician_name = order.referring_physician_name or dicom_name(user.display_name)


def require_own_order(order: ImagingRequest, principal: Principal, verb: str) -> None:
    """A referring physician changes only an order they placed; one they only
    receive (they are its referrer) they may read, not change (Forbidden)."""
    if principal.role is Role.REFERRING_PHYSICIAN and order.requested_by_id != principal.user_id:
        raise Forbidden(f"only the physician who placed this order may {verb} it")


def load_order(
    session: Session, order_id: int, *, principal: Principal, lock: bool = False
) -> ImagingRequest:
    """The order, if the principal may see it; NotFound otherwise."""
    query = select(ImagingRequest).where(ImagingRequest.id == order_id)
    order = session.scalar(query.with_for_update() if lock else query)
    if order is None or not may_see_order(principal, order):
        raise NotFound(f"no order {order_id}")
    return order


EDITABLE_FIELDS = frozenset(
    {
        "priority",
        "clinical_indication",
        "study_description",
        "referring_physician_name",
        "referring_physician_id",
        "requesting_physician",
        "scheduled_performing_physician_name",
        "requested_modality",
        "imaging_center_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
    }
)
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

    A referring physician edits only orders they placed, only while requested
    (Forbidden once scheduled). The requested modality cannot change once a
    modality is booked. ``referring_physician_id`` links the chosen physician
    (their DICOM name fills ReferringPhysicianName unless the same edit sets
    it), None unlinks; a new ReferringPhysicianName alone links the physician
    it matches (order_referrer.py). Audited with the changed fields before and
    after.
    """
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise InvalidValue(f"not editable: {', '.join(sorted(unknown))}", field=min(unknown))
    order = load_order(session, order_id, principal=principal, lock=True)
    if not (
        ORDER.allows("edit_requested", order.status) or ORDER.allows("edit_scheduled", order.status)
    ):
        raise Conflict(f"an order that is {order.status} cannot be edited", current=order.status)
    if principal.role is Role.REFERRING_PHYSICIAN:
        require_own_order(order, principal, "edit")
        if not ORDER.allows("edit_requested", order.status):
            raise Forbidden("a referring physician may edit an order only while it is requested")
    audited = sorted({*changes, "referring_physician_id", "referring_physician_name"})
    before = _audited(order, audited)
    for name, value in changes.items():
        if name == "priority":
            order.priority = priority_of(str(value)).value
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
    if changes.get("referring_physician_id") is not None:
        if not changes.get("referring_physician_name"):
            order.referring_physician_name = None  # filled from the chosen physician
        _choose_referrer(session, order, principal, int(changes["referring_physician_id"]))
    elif "referring_physician_id" in changes:
        order.referring_physician_id = None
    elif "referring_physician_name" in changes:
        order.referring_physician_id = matched_referrer(
            session, order.referring_physician_name, by=principal
        )
    after = _audited(order, audited)
    changed = [name for name in after if after[name] != before[name]]
    if changed:
        session.flush()
        record_audit_event(
            session,
            order_event(
                "order_updated",
                user_actor(principal, source_address),
                order.id,
                order_subject(order),
                details={
                    "before": {name: before[name] for name in changed},
                    "after": {name: after[name] for name in changed},
                },
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
