"""The audit vocabulary's link to the index: the Actor of a signed-in user and
the Subject (patient, study, accession) of an order, a study or an MPPS row.

The builders themselves are pure (``domain/audit.py``); these read what they
need from ORM rows so no service fills the patient fields of an event by hand.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, ImagingRequest, Patient, PerformedProcedureStep
from dicom_node.domain.audit import Actor, Subject
from dicom_node.domain.permissions import Principal


def user_actor(principal: Principal, source_address: str | None) -> Actor:
    """The actor of what a signed-in user did, from ``source_address``."""
    return Actor.user(principal.user_id, principal.username, principal.role.value, source_address)


def order_subject(order: ImagingRequest) -> Subject:
    return Subject(
        patient_id=order.patient_id,
        study_instance_uid=order.study_instance_uid,
        accession_number=order.accession_number,
    )


def study_subject(session: Session, study: DicomStudy) -> Subject:
    """The study's patient is a separate row: one SELECT by primary key."""
    patient_id = session.scalar(select(Patient.patient_id).where(Patient.id == study.patient_pk))
    return Subject(
        patient_id=patient_id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
    )


def step_subject(step: PerformedProcedureStep, order: ImagingRequest | None) -> Subject:
    """An MPPS names its study and accession; its patient is the order's (the
    step's own attributes carry no PatientID the node keeps)."""
    return Subject(
        patient_id=order.patient_id if order else None,
        study_instance_uid=step.study_instance_uid,
        accession_number=step.accession_number,
    )
