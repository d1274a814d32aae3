"""Rows and principals the service-level reporting tests start from (no
server): users, a complete matched study whose reading item a radiologist
holds, and a report driven to a given state through the services."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, ImagingRequest, Patient, User, WorklistItem
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.reporting.reports import (
    add_addendum,
    create_report,
    finalize_report,
    submit_report,
)
from dicom_node.services.reporting.versions import VersionKind

DEADLINE_MINUTES = 60
_numbers = itertools.count(1)


def add_user(db: Database, role: Role) -> Principal:
    n = next(_numbers)
    with db.unit_of_work() as session:
        user = User(username=f"{role.value}-{n}", password_hash="x", role=role.value)
        session.add(user)
        session.flush()
        return Principal(user_id=user.id, username=user.username, role=role)


@dataclass(frozen=True)
class Study:
    study_id: int
    order_id: int
    reading_item_id: int


def claimed_study(
    db: Database,
    holder: Principal,
    *,
    referring_physician_id: int | None = None,
    requested_by_id: int | None = None,
) -> Study:
    """A complete, matched study of a performed order, its reading item claimed
    by ``holder``."""
    n = next(_numbers)
    with db.unit_of_work() as session:
        patient = Patient(patient_id=f"RS{n}", patient_name=f"PATIENT^{n}")
        order = ImagingRequest(
            patient_id=f"RS{n}",
            patient_name=f"PATIENT^{n}",
            accession_number=f"RSA{n}",
            status="performed",
            requested_modality="CT",
            referring_physician_id=referring_physician_id,
            requested_by_id=requested_by_id,
        )
        session.add_all([patient, order])
        session.flush()
        study = DicomStudy(
            study_instance_uid=generate_uid(),
            patient_pk=patient.id,
            imaging_request_id=order.id,
            accession_number=f"RSA{n}",
            modality_type="CT",
            metadata_status="matched",
            status="reading",
            completeness="complete",
        )
        session.add(study)
        session.flush()
        item = WorklistItem(
            imaging_request_id=order.id,
            dicom_study_id=study.id,
            queue_type="reading",
            status="claimed",
            assigned_to_id=holder.user_id,
            claimed_at=datetime.now(UTC),
            priority="routine",
            priority_rank=2,
            due_at=datetime.now(UTC) + timedelta(hours=4),
        )
        session.add(item)
        session.flush()
        return Study(study.id, order.id, item.id)


def new_report(
    db: Database, study: Study, author: Principal, *, critical_flag: bool = False
) -> int:
    with db.unit_of_work() as session:
        return create_report(
            session,
            study_id=study.study_id,
            findings="Clear lungs.",
            impression="Normal.",
            critical_flag=critical_flag,
            principal=author,
            deadline_minutes=DEADLINE_MINUTES,
        ).id


def submit(session: Session, report_id: int, author: Principal) -> None:
    submit_report(session, report_id=report_id, principal=author, deadline_minutes=DEADLINE_MINUTES)


def finalize(session: Session, report_id: int, reviewer: Principal) -> None:
    finalize_report(session, report_id=report_id, principal=reviewer, allow_self_review=False)


def amend(session: Session, report_id: int, writer: Principal) -> None:
    add_addendum(
        session,
        report_id=report_id,
        kind=VersionKind.ADDENDUM,
        principal=writer,
        impression="Normal. Addendum: small nodule.",
    )


def signed_report(db: Database, study: Study, author: Principal, reviewer: Principal) -> int:
    report_id = new_report(db, study, author)
    with db.unit_of_work() as session:
        submit(session, report_id, author)
    with db.unit_of_work() as session:
        finalize(session, report_id, reviewer)
    return report_id
