"""The report row as every reporting module loads and audits it: the row
locked for a change, and the audit event about it (110110 Patient Record,
actor the signed-in user, subject the report's study)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, Report
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
) -> None:
    """A user wrote or read ``report`` (or, with ``target``, a record of it)."""
    kind, target_id = target or (TargetKind.REPORT, report.id)
    record_audit_event(
        session,
        patient_record_event(
            action,
            user_actor(principal, source_address),
            kind,
            target_id,
            report_subject(session, report),
            reason=reason,
            details=details,
        ),
    )
