"""Tying a newly seen study to the order it fulfils (docs/domain.md#matching-images-to-orders,
reconciliation)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, ImagingRequest
from dicom_node.domain.audit import Actor, Subject, TargetKind, procedure_event
from dicom_node.domain.dataset_header import InstanceHeader
from dicom_node.domain.enums import AuditOutcome, MetadataStatus, RequestStatus
from dicom_node.domain.matching import Demographics, demographic_mismatches
from dicom_node.domain.transitions import STUDY_METADATA
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.workflow.orders import take_trigger

log = logging.getLogger("dicom_node.matching")

# An order can receive images unless it was cancelled before anything happened.
_OPEN_FOR_IMAGES = [
    RequestStatus.REQUESTED.value,
    RequestStatus.SCHEDULED.value,
    RequestStatus.IN_PROGRESS.value,
    RequestStatus.PERFORMED.value,
    RequestStatus.DISCONTINUED.value,
]


def find_order(session: Session, header: InstanceHeader) -> tuple[ImagingRequest | None, str]:
    """The order for these images, by the docs/domain.md#match-keys-and-precedence precedence, and
    what matched:
    the images' StudyInstanceUID (pre-assigned by scheduling), their
    AccessionNumber (+ issuer), then each RequestAttributesSequence item's
    StudyInstanceUID and AccessionNumber."""
    order = _by_study_uid(session, header.study_instance_uid)
    if order is not None:
        return order, "StudyInstanceUID"
    order, ambiguous = _by_accession(session, header.accession_number, header.accession_issuer)
    if order is not None or ambiguous:
        return order, "AccessionNumber" if order is not None else "ambiguous"
    for item in header.request_attributes:
        order = _by_study_uid(session, item.study_instance_uid)
        if order is None:
            order, ambiguous = _by_accession(session, item.accession_number, item.accession_issuer)
            if ambiguous:
                return None, "ambiguous"
        if order is not None:
            return order, "RequestAttributesSequence"
    return None, ""


def _by_study_uid(session: Session, uid: str | None) -> ImagingRequest | None:
    if not uid:
        return None
    return session.scalar(
        select(ImagingRequest).where(
            ImagingRequest.study_instance_uid == uid,
            ImagingRequest.status.in_(_OPEN_FOR_IMAGES),
        )
    )


def _by_accession(
    session: Session, accession: str | None, issuer: str
) -> tuple[ImagingRequest | None, bool]:
    """The one open order with this accession number; (None, True) if several fit."""
    if not accession:
        return None, False
    query = select(ImagingRequest).where(
        ImagingRequest.accession_number == accession,
        ImagingRequest.status.in_(_OPEN_FOR_IMAGES),
    )
    if issuer:
        query = query.where(ImagingRequest.accession_issuer.in_([issuer, ""]))
    orders = session.scalars(query.order_by(ImagingRequest.id).limit(2)).all()
    if len(orders) > 1:
        # The same accession under several issuers and none on the images: a
        # person must pick the order (reconciliation), never the lowest id.
        log.warning("accession number matches several orders: left unmatched")
        return None, True
    return (orders[0] if orders else None), False


def match_new_study(
    session: Session,
    *,
    study_id: int,
    header: InstanceHeader,
    now: datetime,
    actor: Actor,
) -> MetadataStatus:
    """Set the study's metadata status and link it to its order; audit the result.

    A new study (``pending``) becomes matched, unmatched or conflict; an
    ``unmatched`` one the re-matching job retries becomes matched or conflict
    (STUDY_METADATA). One made a conflict earlier in the same transaction (an
    instance of another patient) stays a conflict. ``actor``: the calling AE
    (``Actor.peer``, with its address) for images, the scheduler for the job.
    """
    study = session.get(DicomStudy, study_id)
    assert study is not None
    before = {
        "metadata_status": study.metadata_status,
        "imaging_request_id": study.imaging_request_id,
    }
    order, matched_by = find_order(session, header)
    if order is None:  # no order, or an ambiguous accession number
        status, mismatches = MetadataStatus.UNMATCHED, []
    else:
        mismatches = demographic_mismatches(
            Demographics(
                order.patient_id,
                order.issuer_of_patient_id,
                order.patient_name,
                order.patient_birth_date,
                order.patient_sex,
            ),
            Demographics(
                header.patient_id,
                header.issuer_of_patient_id,
                header.patient_name,
                header.patient_birth_date,
                header.patient_sex,
            ),
        )
        status = MetadataStatus.CONFLICT if mismatches else MetadataStatus.MATCHED
        # Linked either way: a conflict is reviewed against the order it claims.
        study.imaging_request_id = order.id
    current = MetadataStatus(study.metadata_status)
    if current is MetadataStatus.CONFLICT:
        status = MetadataStatus.CONFLICT
    elif status is not current:
        trigger = status.value if current is MetadataStatus.PENDING else f"rematch_{status.value}"
        study.metadata_status = STUDY_METADATA.require(trigger, current).value

    if order is not None and status is MetadataStatus.MATCHED:
        _start_exam(session, order, now=now, actor=actor)
    record_audit_event(
        session,
        procedure_event(
            f"study_{status.value}",
            actor,
            TargetKind.STUDY,
            study.id,
            Subject(
                patient_id=header.patient_id,
                study_instance_uid=header.study_instance_uid,
                accession_number=header.accession_number,
            ),
            outcome=AuditOutcome.SUCCESS
            if status is MetadataStatus.MATCHED
            else AuditOutcome.MINOR_FAILURE,
            details={
                "before": before,
                "after": {
                    "metadata_status": study.metadata_status,
                    "imaging_request_id": study.imaging_request_id,
                },
                "order_id": order.id if order else None,
                "matched_by": matched_by or None,
                "mismatched_attributes": mismatches,
            },
        ),
    )
    return status


def _start_exam(session: Session, order: ImagingRequest, *, now: datetime, actor: Actor) -> None:
    """First image of a requested or scheduled order: the exam is in progress."""
    if take_trigger(session, order, "first_image", actor=actor, reason="first image received"):
        order.exam_started_at = order.exam_started_at or now
