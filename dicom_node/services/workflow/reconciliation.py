"""Reconciliation: studies no order claims (unmatched) or that disagree with the
order they claim (conflict), and the unscheduled exams an MPPS reported.

A scheduler or admin links such a study to an order, or creates an order from
the study (docs/domain.md#reconciliation-by-a-person "Matching images to orders"). Either way the
study then
goes the way a study matched on arrival goes, through the same functions: the
order starts (and is performed when the acquisition is already complete) and a
complete study joins the reading worklist; the study's open reconciliation
item is closed, and so is the item of an MPPS that reported the same
StudyInstanceUID (the step then performs the order). A cancelled order is
linked only with ``force`` and a reason, which reinstates it. An item an MPPS
opened with no study ever arriving is resolved on its own, with a reason.
Every step is audited with before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Patient,
    PerformedProcedureStep,
    WorklistItem,
)
from dicom_node.domain.audit import (
    Actor,
    Subject,
    TargetKind,
    order_event,
    procedure_event,
)
from dicom_node.domain.enums import (
    Completeness,
    MetadataStatus,
    Priority,
    QueueType,
    ReportStatus,
    RequestStatus,
    WorklistStatus,
)
from dicom_node.domain.errors import Conflict, InvalidValue, NotFound
from dicom_node.domain.matching import Demographics, SlaPolicy, demographic_mismatches
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import ORDER, STUDY_METADATA, WORK_ITEM
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, study_subject, user_actor
from dicom_node.services.workflow.completeness import blocking_report, perform_order
from dicom_node.services.workflow.order_duplicates import (
    OPEN_STATUSES,
    audit_duplicate_forced,
    lock_patient_orders,
)

# The steps a study matched on arrival or completed goes through; reused, not
# repeated, so a reconciled study ends exactly where a matched one would.
from dicom_node.services.workflow.order_referrer import matched_referrer
from dicom_node.services.workflow.orders import OrderInfo, order_info, take_trigger
from dicom_node.services.workflow.reconciliation_listing import (
    ReconciliationEntry,
    item_entry,
    modality_of,
    study_entry,
)
from dicom_node.services.workflow.work_items import (
    close_item,
    close_reconciliation_items,
    ensure_review_item,
    ensure_worklist_item,
    open_item_id,
)

# the WORK_ITEM trigger of each way a person resolves an item
_CLOSING = {WorklistStatus.COMPLETED: "complete", WorklistStatus.CANCELLED: "cancel"}


@dataclass(frozen=True, slots=True)
class ReleasedStudy:
    entry: ReconciliationEntry
    reading_item_id: int | None


@dataclass(frozen=True, slots=True)
class ReconciledStudy:
    entry: ReconciliationEntry
    order: OrderInfo
    reading_item_id: int | None


# --------------------------------------------------------------------------- resolving


def _reason(reason: str | None) -> str:
    text_reason = (reason or "").strip()
    if not text_reason:
        raise InvalidValue("reconciliation needs a reason", field="reason")
    return text_reason


def _study_to_reconcile(session: Session, study_id: int) -> DicomStudy:
    study = session.scalar(select(DicomStudy).where(DicomStudy.id == study_id).with_for_update())
    if study is None:
        raise NotFound(f"no study {study_id}")
    if not STUDY_METADATA.allows("link", study.metadata_status):
        raise Conflict(
            f"a study whose metadata is {study.metadata_status} is not to be reconciled",
            current=study.metadata_status,
        )
    return study


def release_to_reading(
    session: Session,
    study_id: int,
    *,
    reason: str,
    priority: Priority,
    principal: Principal,
    sla: SlaPolicy,
    source_address: str | None = None,
    now: datetime | None = None,
) -> ReleasedStudy:
    """Put an unmatched study on the reading worklist before any order claims it
    (docs/domain.md#reconciliation-by-a-person: unmatched studies stay off it unless explicitly
    released): a
    trauma scan sent without an order is read now, the order found later.

    Only an unmatched study: a conflict's patient is in doubt and must be linked
    first. Its reconciliation item stays open, since the study still needs an
    order; linking it later keeps the reading item. The reading item is made
    now if the acquisition is complete, else when it completes; due from then
    at ``priority``. A study whose patient later turns out in doubt (a conflict)
    loses the release with its reading item.
    """
    text_reason = _reason(reason)
    study = _study_to_reconcile(session, study_id)
    if study.metadata_status != MetadataStatus.UNMATCHED.value:
        raise Conflict(
            f"study {study.id} is in conflict with the order it claims: link it to the "
            "right order instead of releasing it",
            current=study.metadata_status,
        )
    if study.released_to_reading:
        raise Conflict(f"study {study.id} is released to reading already", current="released")
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    moment = now or datetime.now(UTC)
    study.released_to_reading = True
    study.release_priority = priority.value
    reading_item_id = None
    if (
        study.completeness == Completeness.COMPLETE.value
        and blocking_report(session, study.id) is None
    ):
        ensure_worklist_item(
            session,
            study,
            None,
            queue=QueueType.READING,
            priority=priority,
            # read from now: a study complete for hours is not overdue at once
            due_at=sla.due(priority, moment),
            actor=user_actor(principal, source_address),
        )
        session.flush()
        reading_item_id = open_item_id(session, study_id=study.id, queue=QueueType.READING)
    record_audit_event(
        session,
        procedure_event(
            "study_released_to_reading",
            user_actor(principal, source_address),
            TargetKind.STUDY,
            study.id,
            study_subject(session, study),
            reason=text_reason,
            details={
                "before": {"released_to_reading": False},
                "after": {"released_to_reading": True},
                "priority": priority.value,
                "reading_item_id": reading_item_id,
            },
        ),
    )
    session.flush()
    item_id = open_item_id(session, study_id=study.id, queue=QueueType.RECONCILIATION)
    item = session.get(WorklistItem, item_id) if item_id is not None else None
    return ReleasedStudy(
        entry=study_entry(study, patient, item.id if item else None, item.status if item else None),
        reading_item_id=reading_item_id,
    )


def link_study(
    session: Session,
    study_id: int,
    *,
    order_id: int,
    reason: str,
    force: bool = False,
    principal: Principal,
    sla: SlaPolicy,
    source_address: str | None = None,
    now: datetime | None = None,
) -> ReconciledStudy:
    """Link an unmatched or conflicting study to an order.

    Conflict when the study is not to be reconciled (matched, corrected,
    rejected), or, unless ``force``, when the order was cancelled or is for
    another patient (PatientID or issuer differ). Forced, the override and the
    differing attributes are audited with the reason; a cancelled order is
    reinstated (cancelled -> in_progress, audited ``order_reinstated``): the
    images prove the exam took place after all.
    """
    text_reason = _reason(reason)
    study = _study_to_reconcile(session, study_id)
    order = session.scalar(
        select(ImagingRequest).where(ImagingRequest.id == order_id).with_for_update()
    )
    if order is None:
        raise NotFound(f"no order {order_id} (order_id)")
    reinstate = ORDER.allows("reinstate", order.status)
    if reinstate and not force:
        raise Conflict(
            f"order {order.id} was cancelled; send force with the reason to reinstate it "
            "and link the study",
            current=order.status,
        )
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    mismatches = demographic_mismatches(
        Demographics(
            order.patient_id,
            order.issuer_of_patient_id,
            order.patient_name,
            order.patient_birth_date,
            order.patient_sex,
        ),
        Demographics(
            patient.patient_id,
            patient.issuer_of_patient_id,
            patient.patient_name,
            patient.patient_birth_date,
            patient.patient_sex,
        ),
    )
    other_patient = bool({"PatientID", "IssuerOfPatientID"} & set(mismatches))
    if other_patient and not force:
        raise Conflict(
            f"order {order.id} is for patient {order.patient_id}, the study for "
            f"{patient.patient_id}; send force with the reason to link anyway",
            existing=order_info(order).as_json(),
        )
    extra = {"mismatched_attributes": mismatches, "forced": bool(force and other_patient)}
    moment = now or datetime.now(UTC)
    if reinstate:
        extra["reinstated_order"] = True
        _reinstate(
            session,
            order,
            now=study.first_received_at or moment,
            reason=text_reason,
            study=study,
            principal=principal,
            source_address=source_address,
        )
    return _link(
        session,
        study,
        patient,
        order,
        reason=text_reason,
        action="study_linked",
        extra=extra,
        principal=principal,
        sla=sla,
        source_address=source_address,
        now=moment,
    )


def _reinstate(
    session: Session,
    order: ImagingRequest,
    *,
    now: datetime,
    reason: str,
    study: DicomStudy,
    principal: Principal,
    source_address: str | None,
) -> None:
    """cancelled -> in_progress: the exam was performed on a cancelled order."""
    before = {"status": order.status, "cancel_reason": order.cancel_reason}
    order.status = ORDER.require("reinstate", order.status).value
    order.cancel_reason = None
    order.exam_started_at = order.exam_started_at or now
    record_audit_event(
        session,
        order_event(
            "order_reinstated",
            user_actor(principal, source_address),
            order.id,
            order_subject(order),
            reason=reason,
            details={
                "before": before,
                "after": {"status": order.status, "cancel_reason": None},
                "study_id": study.id,
            },
        ),
    )


def create_order_from_study(
    session: Session,
    study_id: int,
    *,
    reason: str,
    priority: Priority = Priority.ROUTINE,
    imaging_center_id: int | None = None,
    duplicate_window: timedelta = timedelta(0),
    force: bool = False,
    principal: Principal,
    sla: SlaPolicy,
    source_address: str | None = None,
    now: datetime | None = None,
) -> ReconciledStudy:
    """A new order carrying the study's patient, accession, StudyInstanceUID,
    modality and description, linked to it. Conflict if an order already holds
    that StudyInstanceUID or accession number (link to that one instead; a
    cancelled one with ``force``, which reinstates it), and, unless ``force``,
    if an open order of the same patient and modality was created within
    ``duplicate_window``: the order the images were meant for, most likely,
    with a mistyped accession (link to it; a second order would be billed and
    worked twice). Forced, the override is audited with that order's id."""
    text_reason = _reason(reason)
    moment = now or datetime.now(UTC)
    study = _study_to_reconcile(session, study_id)
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    same: list[ColumnElement[bool]] = [
        ImagingRequest.study_instance_uid == study.study_instance_uid
    ]
    if study.accession_number:
        same.append(
            and_(
                ImagingRequest.accession_number == study.accession_number,
                ImagingRequest.accession_issuer == (study.accession_issuer or ""),
            )
        )
    holder = session.scalar(select(ImagingRequest).where(or_(*same)).limit(1))
    if holder is not None:
        how = (
            "link the study to it with force and a reason, which reinstates it"
            if holder.status == RequestStatus.CANCELLED.value
            else "link the study to it"
        )
        raise Conflict(
            f"order {holder.id} ({holder.status}) already carries this study's UID or "
            f"accession number; {how}",
            current=holder.status,
            existing=order_info(holder).as_json(),
        )
    if imaging_center_id is not None and session.get(ImagingCenter, imaging_center_id) is None:
        raise NotFound(f"no imaging center {imaging_center_id} (imaging_center_id)")
    # the same lock as a new order's duplicate check: two at once cannot both pass
    lock_patient_orders(session, patient.patient_id, patient.issuer_of_patient_id or "")
    open_order = _open_order_of_patient(
        session, patient, modality_of(study), duplicate_window, moment
    )
    if open_order is not None and not force:
        raise Conflict(
            f"order {open_order.id} ({open_order.status}) is open for patient "
            f"{patient.patient_id} and {open_order.requested_modality}: link the study to it, "
            "or send force with the reason to create another order",
            current=open_order.status,
            existing=order_info(open_order).as_json(),
        )
    name = patient.patient_name or ""
    order = ImagingRequest(
        patient_id=patient.patient_id,
        issuer_of_patient_id=patient.issuer_of_patient_id or "",
        patient_name=name,
        patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex,
        accession_number=study.accession_number or None,
        accession_issuer=study.accession_issuer or "",
        study_instance_uid=study.study_instance_uid,
        study_description=study.study_description,
        requested_modality=modality_of(study),
        priority=priority.value,
        status=ORDER.initial.value,
        requested_by_id=principal.user_id,
        referring_physician_name=study.referring_physician_name,
        imaging_center_id=imaging_center_id,
        clinical_indication=None,
        created_at=moment,
        updated_at=moment,
    )
    # the study's ReferringPhysicianName names the physician as a booked order's
    # would (services/workflow/order_referrer.py)
    order.referring_physician_id = matched_referrer(
        session, order.referring_physician_name, by=principal
    )
    session.add(order)
    session.flush()
    order.requested_procedure_id = f"RP{order.id}"
    record_audit_event(
        session,
        order_event(
            "order_created",
            user_actor(principal, source_address),
            order.id,
            order_subject(order),
            reason=text_reason,
            details={
                "after": {
                    "status": order.status,
                    "patient_id": order.patient_id,
                    "issuer_of_patient_id": order.issuer_of_patient_id,
                    "accession_number": order.accession_number,
                    "study_instance_uid": order.study_instance_uid,
                    "requested_modality": order.requested_modality,
                    "study_description": order.study_description,
                    "priority": order.priority,
                },
                "from_study_id": study.id,
                **(
                    {
                        "duplicate_override": {
                            "existing_order_id": open_order.id,
                            "reason": text_reason,
                        }
                    }
                    if open_order is not None
                    else {}
                ),
            },
        ),
    )
    if open_order is not None:
        audit_duplicate_forced(
            session,
            order,
            open_order,
            reason=text_reason,
            principal=principal,
            source_address=source_address,
        )
    return _link(
        session,
        study,
        patient,
        order,
        reason=text_reason,
        action="study_linked_to_new_order",
        extra={},
        principal=principal,
        sla=sla,
        source_address=source_address,
        now=moment,
    )


def _open_order_of_patient(
    session: Session,
    patient: Patient,
    modality: str | None,
    window: timedelta,
    now: datetime,
) -> ImagingRequest | None:
    """The newest open order of the patient for ``modality`` created within
    ``window`` (none when the window is zero, as for new orders)."""
    if window <= timedelta(0) or not modality:
        return None
    return session.scalar(
        select(ImagingRequest)
        .where(
            ImagingRequest.patient_id == patient.patient_id,
            ImagingRequest.issuer_of_patient_id == (patient.issuer_of_patient_id or ""),
            ImagingRequest.requested_modality == modality,
            ImagingRequest.status.in_([status.value for status in OPEN_STATUSES]),
            ImagingRequest.created_at >= now - window,
        )
        .order_by(ImagingRequest.created_at.desc(), ImagingRequest.id.desc())
        .limit(1)
    )


def _link(
    session: Session,
    study: DicomStudy,
    patient: Patient,
    order: ImagingRequest,
    *,
    reason: str,
    action: str,
    extra: dict[str, Any],
    principal: Principal,
    sla: SlaPolicy,
    source_address: str | None,
    now: datetime,
) -> ReconciledStudy:
    before = {
        "metadata_status": study.metadata_status,
        "imaging_request_id": study.imaging_request_id,
    }
    who = user_actor(principal, source_address)
    study.imaging_request_id = order.id
    study.metadata_status = STUDY_METADATA.require("link", study.metadata_status).value
    record_audit_event(
        session,
        procedure_event(
            action,
            who,
            TargetKind.STUDY,
            study.id,
            study_subject(session, study),
            reason=reason,
            details={
                "before": before,
                "after": {
                    "metadata_status": study.metadata_status,
                    "imaging_request_id": order.id,
                },
                "order_id": order.id,
                **extra,
            },
        ),
    )
    # what a study matched on arrival goes through, done in the person's name
    # and with their reason: the exam has started ...
    if take_trigger(
        session, order, "link_study", actor=who, reason=f"study {study.id} reconciled: {reason}"
    ):
        order.exam_started_at = order.exam_started_at or study.first_received_at or now
    reading_item_id = None
    if study.completeness == Completeness.COMPLETE.value:
        # ... and, the acquisition being over, the order is performed and the
        # study is read (due from when it completed, as for a matched study)
        perform_order(
            session,
            order,
            now=study.completed_at or now,
            reason=f"study {study.id} complete, reconciled: {reason}",
            actor=who,
        )
        reading_item_id = _queue_for_reading(session, study, order, sla=sla, now=now, actor=who)
    close_reconciliation_items(session, study, order, reason=reason, now=now, actor=who)
    session.flush()
    return ReconciledStudy(
        entry=study_entry(study, patient, None, None),
        order=order_info(order),
        reading_item_id=reading_item_id,
    )


def _queue_for_reading(
    session: Session,
    study: DicomStudy,
    order: ImagingRequest,
    *,
    sla: SlaPolicy,
    now: datetime,
    actor: Actor,
) -> int | None:
    """The reading item, as for a matched study; none when the study's report
    is past draft (its review item is re-opened if it is in review)."""
    report = blocking_report(session, study.id)
    if report is None:
        priority = Priority(order.priority)
        ensure_worklist_item(
            session,
            study,
            order,
            queue=QueueType.READING,
            priority=priority,
            due_at=sla.due(priority, study.completed_at or now),
            actor=actor,
        )
        session.flush()
        return open_item_id(session, study_id=study.id, queue=QueueType.READING)
    if report.status == ReportStatus.IN_REVIEW.value:
        ensure_review_item(session, study_id=study.id, actor=actor)
    return None


def resolve_reconciliation_item(
    session: Session,
    item_id: int,
    *,
    reason: str,
    outcome: WorklistStatus = WorklistStatus.CANCELLED,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> ReconciliationEntry:
    """Close a reconciliation item that only an MPPS opened (no study): cancelled
    (e.g. a test exam, images never sent) or completed (handled elsewhere).
    A study's item is resolved through its study (link, create order, reject)."""
    text_reason = _reason(reason)
    if outcome not in (WorklistStatus.CANCELLED, WorklistStatus.COMPLETED):
        raise InvalidValue("outcome is cancelled or completed", field="outcome")
    item = session.scalar(select(WorklistItem).where(WorklistItem.id == item_id).with_for_update())
    if item is None or item.queue_type != QueueType.RECONCILIATION.value:
        raise NotFound(f"no reconciliation item {item_id}")
    if item.dicom_study_id is not None:
        raise Conflict(
            f"reconciliation item {item_id} is study {item.dicom_study_id}'s: link the study, "
            "create an order from it, or reject it",
            current=item.status,
        )
    if not WORK_ITEM.allows(_CLOSING[outcome], item.status):
        raise Conflict(f"reconciliation item {item_id} is {item.status}", current=item.status)
    step = (
        session.get(PerformedProcedureStep, item.performed_procedure_step_id)
        if item.performed_procedure_step_id is not None
        else None
    )
    close_item(
        session,
        item,
        to=outcome,
        actor=user_actor(principal, source_address),
        subject=Subject(
            study_instance_uid=step.study_instance_uid if step else None,
            accession_number=step.accession_number if step else None,
        ),
        reason=text_reason,
        now=now or datetime.now(UTC),
        details={
            "performed_procedure_step": step.sop_instance_uid if step else None,
            "resolved_without_study": True,
        },
    )
    return item_entry(item, None, None, step)
