"""A study's reading state (``DicomStudy.status``: acquired -> reading ->
reported), moved only through the STUDY_READING table of
``domain/transitions.py`` (docs/domain.md#study-reading-states).

Who moves it: claiming, reassigning and releasing a reading item
(``reading_worklist.py``), cancelling it (``work_items.py``), finalizing a
report (``reporting/reports.py``). Every move is audited ``study_<new state>``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, Report
from dicom_node.domain.audit import Actor, TargetKind, procedure_event
from dicom_node.domain.transitions import STUDY_READING
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import study_subject


def advance_study_reading(
    session: Session, *, study_id: int, trigger: str, actor: Actor, reason: str
) -> bool:
    """Take STUDY_READING ``trigger`` if the study's current state allows it
    (audited); False, and nothing changed, from any other state: the callers are
    side effects of a work item or a report, which never fail on the study's
    reading state."""
    study = session.get(DicomStudy, study_id, with_for_update=True, populate_existing=True)
    if study is None or not STUDY_READING.allows(trigger, study.status):
        return False
    before = study.status
    study.status = STUDY_READING.target(trigger).value
    record_audit_event(
        session,
        procedure_event(
            f"study_{study.status}",
            actor,
            TargetKind.STUDY,
            study.id,
            study_subject(session, study),
            reason=reason,
            details={"before": {"status": before}, "after": {"status": study.status}},
        ),
    )
    return True


def has_report(session: Session, study_id: int) -> bool:
    """Whether the study has a report in any state (someone has read it)."""
    return (
        session.scalar(select(Report.id).where(Report.dicom_study_id == study_id).limit(1))
        is not None
    )
