"""The reconciliation list (docs/domain.md#reconciliation-item-states): the
studies no order claims (unmatched) or that disagree with the order they claim
(conflict), then the open reconciliation items with no such study (an
unscheduled exam an MPPS reported), paged as one list; and how one entry of
it reads. Resolving them is ``reconciliation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, Patient, PerformedProcedureStep, WorklistItem
from dicom_node.domain.audit import AuditEventCode, Subject, TargetKind, audit_event
from dicom_node.domain.enums import OPEN_WORKLIST_STATUSES, MetadataStatus, QueueType
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.listing import Listed, SortColumn, count_of, order_by

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
            study_entry(study, patient, item, item_status.get(item))
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
            entries.append(item_entry(item, study, patient, step))
    if patient_id is not None:
        record_audit_event(
            session,
            audit_event(
                AuditEventCode.QUERY,
                "reconciliation_queried",
                user_actor(principal, source_address),
                TargetKind.STUDY,
                None,
                Subject(patient_id=patient_id),
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


def modality_of(study: DicomStudy) -> str | None:
    if study.modality_type:
        return study.modality_type
    return (study.modalities_in_study or "").split("\\")[0] or None


def study_entry(
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
        modality=modality_of(study),
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


def item_entry(
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
        modality=modality_of(study) if study else None,
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
