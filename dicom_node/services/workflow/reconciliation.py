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

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Patient,
    PerformedProcedureStep,
    WorklistItem,
)
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import (
    OPEN_WORKLIST_STATUSES,
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
from dicom_node.services.audit.record import acting, record_audit_event
from dicom_node.services.listing import Listed, SortColumn, count_of, order_by

# The steps a study matched on arrival or completed goes through; reused, not
# repeated, so a reconciled study ends exactly where a matched one would.
from dicom_node.services.workflow.completeness import (
    blocking_report,
    ensure_worklist_item,
    perform_order,
)
from dicom_node.services.workflow.order_duplicates import (
    OPEN_STATUSES,
    audit_duplicate_forced,
    lock_patient_orders,
)
from dicom_node.services.workflow.orders import OrderInfo, advance_order, order_info
from dicom_node.services.workflow.reading_worklist import ensure_review_item

TO_RECONCILE = (MetadataStatus.UNMATCHED.value, MetadataStatus.CONFLICT.value)


@dataclass(frozen=True, slots=True)
class ReconciliationEntry:
    """One thing to reconcile: a study (``kind`` "study") or an unscheduled exam
    known only from its MPPS so far (``kind`` "procedure_step")."""

    kind: str
    study_id: int | None
    study_instance_uid: str | None
    metadata_status: str | None
    completeness: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    modality: str | None
    study_date: str | None
    study_description: str | None
    instance_count: int | None
    linked_order_id: int | None
    worklist_item_id: int | None
    worklist_status: str | None
    performed_procedure_step_id: int | None
    performed_station_ae_title: str | None
    created_at: datetime
    released_to_reading: bool | None = None


@dataclass(frozen=True, slots=True)
class ReleasedStudy:
    entry: ReconciliationEntry
    reading_item_id: int | None


@dataclass(frozen=True, slots=True)
class ReconciledStudy:
    entry: ReconciliationEntry
    order: OrderInfo
    reading_item_id: int | None


RECONCILIATION_SORTS: dict[str, SortColumn] = {
    "id": DicomStudy.id,
    "created_at": DicomStudy.created_at,
    "last_received_at": DicomStudy.last_received_at,
    "study_date": DicomStudy.study_date,
    "metadata_status": DicomStudy.metadata_status,
    "patient_id": Patient.patient_id,
    "accession_number": DicomStudy.accession_number,
}


def _open_item_id(study_id: Any) -> Any:
    return (
        select(func.min(WorklistItem.id))
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.RECONCILIATION.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
        )
        .correlate(DicomStudy)
        .scalar_subquery()
    )


def list_reconciliation(
    session: Session,
    *,
    principal: Principal,
    metadata_status: str | None = None,
    patient_id: str | None = None,
    sort: str | None = None,
    offset: int = 0,
    limit: int = 50,
    source_address: str | None = None,
) -> Listed[ReconciliationEntry]:
    """Studies to reconcile (sorted by ``sort``), then open reconciliation items
    that have no such study (oldest first): one list, paged as a whole.

    Narrowed to a patient, the listing is audited as a Query (110112).
    """
    statuses: tuple[str, ...] = TO_RECONCILE
    if metadata_status is not None:
        if metadata_status not in TO_RECONCILE:
            raise InvalidValue(
                f"metadata_status is one of: {', '.join(TO_RECONCILE)}", field="metadata_status"
            )
        statuses = (metadata_status,)
    item_id = _open_item_id(DicomStudy.id).label("item_id")
    studies = (
        select(DicomStudy, Patient, item_id)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(DicomStudy.metadata_status.in_(statuses))
    )
    if patient_id is not None:
        studies = studies.where(Patient.patient_id == patient_id)
    items = (
        select(WorklistItem, DicomStudy, Patient, PerformedProcedureStep)
        .outerjoin(DicomStudy, WorklistItem.dicom_study_id == DicomStudy.id)
        .outerjoin(Patient, DicomStudy.patient_pk == Patient.id)
        .outerjoin(
            PerformedProcedureStep,
            WorklistItem.performed_procedure_step_id == PerformedProcedureStep.id,
        )
        .where(
            WorklistItem.queue_type == QueueType.RECONCILIATION.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
            or_(
                WorklistItem.dicom_study_id.is_(None),
                DicomStudy.metadata_status.not_in(TO_RECONCILE),
            ),
        )
    )
    if patient_id is not None:
        items = items.where(Patient.patient_id == patient_id)
    with_items = metadata_status is None
    study_total = count_of(session, studies)
    item_total = count_of(session, items) if with_items else 0

    # validated even when the page lies past the studies
    clauses = order_by(sort, RECONCILIATION_SORTS, default="created_at", tiebreak=DicomStudy.id)
    entries: list[ReconciliationEntry] = []
    if offset < study_total:
        rows = session.execute(studies.order_by(*clauses).offset(offset).limit(limit)).all()
        item_status = _item_statuses(session, [row[2] for row in rows if row[2] is not None])
        entries.extend(
            _study_entry(study, patient, item, item_status.get(item))
            for study, patient, item in rows
        )
    remaining = limit - len(entries)
    if with_items and remaining > 0:
        item_offset = max(0, offset - study_total)
        for item, study, patient, step in session.execute(
            items.order_by(WorklistItem.created_at, WorklistItem.id)
            .offset(item_offset)
            .limit(remaining)
        ).all():
            entries.append(_item_entry(item, study, patient, step))
    if patient_id is not None:
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.QUERY,
                action="reconciliation_queried",
                actor=principal.username,
                actor_user_id=principal.user_id,
                actor_role=principal.role.value,
                source_address=source_address,
                target_class="DicomStudy",
                patient_id=patient_id,
                details={
                    "query": {"patient_id": patient_id, "metadata_status": metadata_status},
                    "matches": study_total + item_total,
                },
            ),
        )
    return Listed(items=entries, total=study_total + item_total)


def _item_statuses(session: Session, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(WorklistItem.id, WorklistItem.status).where(WorklistItem.id.in_(ids))
    ).all()
    return {row[0]: row[1] for row in rows}


def _modality(study: DicomStudy) -> str | None:
    if study.modality_type:
        return study.modality_type
    return (study.modalities_in_study or "").split("\\")[0] or None


def _study_entry(
    study: DicomStudy, patient: Patient, item_id: int | None, item_status: str | None
) -> ReconciliationEntry:
    return ReconciliationEntry(
        kind="study",
        study_id=study.id,
        study_instance_uid=study.study_instance_uid,
        metadata_status=study.metadata_status,
        completeness=study.completeness,
        patient_id=patient.patient_id,
        issuer_of_patient_id=patient.issuer_of_patient_id,
        patient_name=patient.patient_name,
        patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex,
        accession_number=study.accession_number,
        modality=_modality(study),
        study_date=study.study_date,
        study_description=study.study_description,
        instance_count=study.instance_count,
        linked_order_id=study.imaging_request_id,
        worklist_item_id=item_id,
        worklist_status=item_status,
        performed_procedure_step_id=None,
        performed_station_ae_title=None,
        created_at=study.created_at,
        released_to_reading=study.released_to_reading,
    )


def _item_entry(
    item: WorklistItem,
    study: DicomStudy | None,
    patient: Patient | None,
    step: PerformedProcedureStep | None,
) -> ReconciliationEntry:
    return ReconciliationEntry(
        kind="study" if study is not None else "procedure_step",
        study_id=study.id if study else None,
        study_instance_uid=study.study_instance_uid
        if study
        else (step.study_instance_uid if step else None),
        metadata_status=study.metadata_status if study else None,
        completeness=study.completeness if study else None,
        patient_id=patient.patient_id if patient else None,
        issuer_of_patient_id=patient.issuer_of_patient_id if patient else None,
        patient_name=patient.patient_name if patient else None,
        patient_birth_date=patient.patient_birth_date if patient else None,
        patient_sex=patient.patient_sex if patient else None,
        accession_number=study.accession_number
        if study
        else (step.accession_number if step else None),
        modality=_modality(study) if study else None,
        study_date=study.study_date if study else None,
        study_description=study.study_description if study else None,
        instance_count=study.instance_count if study else None,
        linked_order_id=item.imaging_request_id,
        worklist_item_id=item.id,
        worklist_status=item.status,
        performed_procedure_step_id=item.performed_procedure_step_id,
        performed_station_ae_title=step.performed_station_ae_title if step else None,
        created_at=item.created_at,
        released_to_reading=study.released_to_reading if study else None,
    )


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
    if study.metadata_status not in TO_RECONCILE:
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
            **acting(principal, source_address),
        )
        session.flush()
        reading_item_id = session.scalar(
            select(WorklistItem.id).where(
                WorklistItem.dicom_study_id == study.id,
                WorklistItem.queue_type == QueueType.READING.value,
                WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
            )
        )
    _study_event(
        session,
        study,
        patient,
        "study_released_to_reading",
        principal=principal,
        source_address=source_address,
        reason=text_reason,
        details={
            "before": {"released_to_reading": False},
            "after": {"released_to_reading": True},
            "priority": priority.value,
            "reading_item_id": reading_item_id,
        },
    )
    session.flush()
    item = session.scalar(
        select(WorklistItem)
        .where(
            WorklistItem.dicom_study_id == study.id,
            WorklistItem.queue_type == QueueType.RECONCILIATION.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
        )
        .order_by(WorklistItem.id)
        .limit(1)
    )
    return ReleasedStudy(
        entry=_study_entry(
            study, patient, item.id if item else None, item.status if item else None
        ),
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
    reinstate = order.status == RequestStatus.CANCELLED.value
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
    order.status = RequestStatus.IN_PROGRESS.value
    order.cancel_reason = None
    order.exam_started_at = order.exam_started_at or now
    _order_event(
        session,
        order,
        "order_reinstated",
        principal=principal,
        source_address=source_address,
        reason=reason,
        details={
            "before": before,
            "after": {"status": order.status, "cancel_reason": None},
            "study_id": study.id,
        },
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
        session, patient, _modality(study), duplicate_window, moment
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
        requested_modality=_modality(study),
        priority=priority.value,
        status=RequestStatus.REQUESTED.value,
        requested_by_id=principal.user_id,
        referring_physician_name=study.referring_physician_name,
        imaging_center_id=imaging_center_id,
        clinical_indication=None,
        created_at=moment,
        updated_at=moment,
    )
    session.add(order)
    session.flush()
    order.requested_procedure_id = f"RP{order.id}"
    _order_event(
        session,
        order,
        "order_created",
        principal=principal,
        source_address=source_address,
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
    study.imaging_request_id = order.id
    study.metadata_status = MetadataStatus.MATCHED.value
    _study_event(
        session,
        study,
        patient,
        action,
        principal=principal,
        source_address=source_address,
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
    )
    # what a study matched on arrival goes through, done in the person's name
    # and with their reason: the exam has started ...
    who = acting(principal, source_address)
    if advance_order(
        session,
        order,
        RequestStatus.IN_PROGRESS,
        allowed_from=(RequestStatus.REQUESTED, RequestStatus.SCHEDULED),
        reason=f"study {study.id} reconciled: {reason}",
        **who,
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
            **who,
        )
        reading_item_id = _queue_for_reading(
            session, study, order, sla=sla, now=now, principal=principal, who=who
        )
    close_reconciliation_items(
        session, study, patient, order, reason=reason, now=now, principal=principal, who=who
    )
    session.flush()
    return ReconciledStudy(
        entry=_study_entry(study, patient, None, None),
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
    principal: Principal,
    who: dict[str, Any],
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
            **who,
        )
        session.flush()
        return session.scalar(
            select(WorklistItem.id).where(
                WorklistItem.dicom_study_id == study.id,
                WorklistItem.queue_type == QueueType.READING.value,
                WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
            )
        )
    if report.status == ReportStatus.IN_REVIEW.value:
        ensure_review_item(
            session,
            study_id=study.id,
            principal=principal,
            source_address=who["source_address"],
        )
    return None


def _steps_of(session: Session, study: DicomStudy) -> list[PerformedProcedureStep]:
    return list(
        session.scalars(
            select(PerformedProcedureStep)
            .where(PerformedProcedureStep.study_instance_uid == study.study_instance_uid)
            .order_by(PerformedProcedureStep.id)
            .with_for_update()
        )
    )


def close_reconciliation_items(
    session: Session,
    study: DicomStudy,
    patient: Patient,
    order: ImagingRequest,
    *,
    reason: str,
    now: datetime,
    principal: Principal,
    who: dict[str, Any],
) -> None:
    """The study's open reconciliation items, and those an MPPS of the same
    StudyInstanceUID opened (an unscheduled exam, or one for a closed order):
    completed. Those steps now perform this order."""
    steps = _steps_of(session, study)
    for step in steps:
        if step.imaging_request_id == order.id:
            continue
        before_order = step.imaging_request_id
        step.imaging_request_id = order.id
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.PROCEDURE_RECORD,
                action="procedure_step_linked",
                actor=who["actor"],
                actor_user_id=who["actor_user_id"],
                actor_role=who["actor_role"],
                source_address=who["source_address"],
                target_class="PerformedProcedureStep",
                target_id=step.sop_instance_uid,
                patient_id=patient.patient_id,
                study_instance_uid=step.study_instance_uid,
                accession_number=step.accession_number,
                reason=reason,
                details={
                    "before": {"imaging_request_id": before_order},
                    "after": {"imaging_request_id": order.id},
                    "study_id": study.id,
                },
            ),
        )
    tied = [WorklistItem.dicom_study_id == study.id]
    if steps:
        tied.append(WorklistItem.performed_procedure_step_id.in_([step.id for step in steps]))
    for item in session.scalars(
        select(WorklistItem)
        .where(
            or_(*tied),
            WorklistItem.queue_type == QueueType.RECONCILIATION.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
        )
        .order_by(WorklistItem.id)
        .with_for_update()
    ):
        item_before = item.status
        item.status = WorklistStatus.COMPLETED.value
        item.completed_at = now
        item.imaging_request_id = order.id
        item.version += 1
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.PROCEDURE_RECORD,
                action="worklist_item_completed",
                target_class="WorklistItem",
                target_id=str(item.id),
                patient_id=patient.patient_id,
                study_instance_uid=study.study_instance_uid,
                reason=reason,
                details={
                    "before": {"status": item_before},
                    "after": {"status": item.status, "imaging_request_id": order.id},
                    "study_id": study.id,
                    "performed_procedure_step_id": item.performed_procedure_step_id,
                },
                **who,
            ),
        )


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
    if item.status not in OPEN_WORKLIST_STATUSES:
        raise Conflict(f"reconciliation item {item_id} is {item.status}", current=item.status)
    step = (
        session.get(PerformedProcedureStep, item.performed_procedure_step_id)
        if item.performed_procedure_step_id is not None
        else None
    )
    before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
    item.status = outcome.value
    if outcome is WorklistStatus.COMPLETED:
        item.completed_at = now or datetime.now(UTC)
        item.assigned_to_id = item.assigned_to_id or principal.user_id
    item.version += 1
    session.flush()
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.PROCEDURE_RECORD,
            action=f"worklist_item_{outcome.value}",
            **acting(principal, source_address),
            target_class="WorklistItem",
            target_id=str(item.id),
            study_instance_uid=step.study_instance_uid if step else None,
            accession_number=step.accession_number if step else None,
            reason=text_reason,
            details={
                "before": before,
                "after": {"status": item.status, "assigned_to_id": item.assigned_to_id},
                "performed_procedure_step": step.sop_instance_uid if step else None,
                "resolved_without_study": True,
            },
        ),
    )
    return _item_entry(item, None, None, step)


def _study_event(
    session: Session,
    study: DicomStudy,
    patient: Patient,
    action: str,
    *,
    principal: Principal,
    source_address: str | None,
    reason: str,
    details: dict[str, Any],
) -> None:
    """A Procedure Record audit event for a reconciliation step on ``study``."""
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.PROCEDURE_RECORD,
            action=action,
            **acting(principal, source_address),
            target_class="DicomStudy",
            target_id=str(study.id),
            patient_id=patient.patient_id,
            study_instance_uid=study.study_instance_uid,
            accession_number=study.accession_number,
            reason=reason,
            details=details,
        ),
    )


def _order_event(
    session: Session,
    order: ImagingRequest,
    action: str,
    *,
    principal: Principal,
    source_address: str | None,
    reason: str,
    details: dict[str, Any],
) -> None:
    """An Order Record audit event for a reconciliation step on ``order``."""
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action=action,
            **acting(principal, source_address),
            target_class="ImagingRequest",
            target_id=str(order.id),
            patient_id=order.patient_id,
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession_number,
            reason=reason,
            details=details,
        ),
    )
