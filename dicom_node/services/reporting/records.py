"""The report row as every reporting module loads and audits it: the row
locked for a change, and the audit event about it (110110 Patient Record,
actor the signed-in user, subject the report's study)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, Patient, Report
from dicom_node.domain.audit import NO_SUBJECT, Subject, TargetKind, patient_record_event
from dicom_node.domain.errors import NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import study_subject, user_actor


def locked_report(session: Session, report_id: int) -> Report:
    """The report, locked for the change (two reviewers finalizing at once
    queue here) and re-read, NotFound if there is none."""
    report = session.get(Report, report_id, with_for_update=True, populate_existing=True)
    if report is None:
        raise NotFound(f"no report {report_id}")
    return report


def report_subject(session: Session, report: Report) -> Subject:
    study = session.get(DicomStudy, report.dicom_study_id)
    return study_subject(session, study) if study is not None else NO_SUBJECT


def report_state(report: Report) -> dict[str, Any]:
    """What a report event's ``before``/``after`` records."""
    return {
        "status": report.status,
        "version": report.version,
        "critical_flag": report.critical_flag,
        "reviewer_id": report.reviewer_id,
    }


def reports_with_subjects(
    session: Session, report_ids: Sequence[int]
) -> list[tuple[Report, Subject]]:
    """The reports of ``report_ids`` each with its audit subject, in one
    statement: a batch read audits every report it shows, and
    ``report_subject`` per report would cost two statements each (the study,
    then its patient)."""
    if not report_ids:
        return []
    rows = session.execute(
        select(
            Report, DicomStudy.study_instance_uid, DicomStudy.accession_number, Patient.patient_id
        )
        .outerjoin(DicomStudy, DicomStudy.id == Report.dicom_study_id)
        .outerjoin(Patient, Patient.id == DicomStudy.patient_pk)
        .where(Report.id.in_(list(set(report_ids))))
        .order_by(Report.id)
    ).all()
    return [
        (
            report,
            # a report without its study (not kept by the schema, but as
            # report_subject): the event names no patient
            NO_SUBJECT
            if uid is None
            else Subject(patient_id=patient_id, study_instance_uid=uid, accession_number=accession),
        )
        for report, uid, accession, patient_id in rows
    ]


def audit_report_event(
    session: Session,
    principal: Principal,
    source_address: str | None,
    *,
    action: str,
    report: Report,
    details: dict[str, Any],
    reason: str | None = None,
    target: tuple[TargetKind, int] | None = None,
    subject: Subject | None = None,
) -> None:
    """A user wrote or read ``report`` (or, with ``target``, a record of it);
    ``subject``: the report's, when the caller loaded it already
    (``reports_with_subjects``)."""
    kind, target_id = target or (TargetKind.REPORT, report.id)
    record_audit_event(
        session,
        patient_record_event(
            action,
            user_actor(principal, source_address),
            kind,
            target_id,
            subject if subject is not None else report_subject(session, report),
            reason=reason,
            details=details,
        ),
    )
