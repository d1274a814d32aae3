"""Reports: draft -> in_review -> final, returns, addenda.

The state machine is the REPORT table (``domain/transitions.py``,
docs/domain.md#report-states); this module enforces who may fire each
trigger and what it writes:

- ``draft``: created by the radiologist holding the study's claimed reading
  item; only its author edits it. One report per study: later changes are
  addenda or corrections of that report, never a second report. A first-cycle
  draft (never final) follows the reading item: claiming or reassigning the
  item makes the new holder its author (services/workflow/reading_worklist.py), and editing or
  submitting it needs the claimed reading item (403 otherwise).
- A study that is rejected, unmatched or in conflict and not released to
  reading cannot be reported, submitted or finalized (409, ``current_state``
  = the metadata status).
- ``draft``/``revised`` -> ``in_review`` (submit, author only): the submitted
  text is stored as an immutable version (``preliminary`` the first time round,
  ``addendum``/``correction`` in an addendum cycle); a review-queue item is
  opened for the study.
- ``in_review`` -> ``draft`` (return, by a reviewer, with a required comment):
  a ``returned`` version keeps the text and the comment (its author is the
  reviewer). In an addendum cycle the report returns to ``revised``.
- ``in_review`` -> ``final`` (finalize, by a reviewer who is not the author
  unless ``report_self_review``): ``signed_at``, ``reviewer_id``, a ``final``
  version; the study becomes ``reported`` (STUDY_READING ``finalize_report``),
  its reading and review items ``completed``. Final text is never edited again.
- ``final`` -> ``revised`` (addendum or correction, by any radiologist): a new
  version with the new text; the addendum's writer is the author of that cycle
  (submits it, may not finalize it), and the cycle goes through submit and
  finalize again.

A trigger the table refuses in the report's state is 409 naming that state.
Versions: ``reporting/versions.py``; critical results (the flag, the
communication a flagged report needs before it is submitted or signed):
``reporting/critical_results.py``; reading: ``reporting/views.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomStudy, Report, WorklistItem
from dicom_node.db.types import utcnow
from dicom_node.domain.enums import QueueType, ReportStatus, WorklistStatus
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import REPORT, TransitionRefused
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.reporting.critical_results import (
    CommunicationInput,
    critical_finding,
    open_critical,
    record_communication,
    require_communicated,
    told_since_signed,
)
from dicom_node.services.reporting.records import (
    audit_report_event,
    locked_report,
    report_state,
)
from dicom_node.services.reporting.versions import VersionKind, amendment_kind, store_version
from dicom_node.services.reporting.views import ReportInfo, report_info
from dicom_node.services.workflow.reading_worklist import (
    current_report_author,
    holds_reading_item,
    is_first_cycle_draft,
    require_readable_study,
)
from dicom_node.services.workflow.study_reading import advance_study_reading
from dicom_node.services.workflow.work_items import close_items, ensure_review_item, open_items

# --------------------------------------------------------------------------- checks


def _require_transition(report: Report, trigger: str, doing: str) -> ReportStatus:
    """The state ``trigger`` leads to; 409 naming the report's state if the
    REPORT table refuses it there."""
    if not REPORT.allows(trigger, report.status):
        raise TransitionRefused(
            f"a {report.status} report cannot be {doing}",
            current=report.status,
            existing={"id": report.id, "status": report.status, "version": report.version},
        )
    return REPORT.target(trigger)


def _require_author(session: Session, report: Report, principal: Principal, doing: str) -> int:
    author = current_report_author(session, report)
    if author != principal.user_id:
        raise Forbidden(f"only the report's author may {doing} it")
    return author


def _require_reading_holder(
    session: Session, report: Report, principal: Principal, doing: str
) -> None:
    """A first-cycle draft is written by whoever holds the study's claimed
    reading item (the draft follows the item: services/workflow/reading_worklist.py)."""
    if is_first_cycle_draft(report) and not holds_reading_item(
        session, study_id=report.dicom_study_id, user_id=principal.user_id
    ):
        raise Forbidden(
            f"only the radiologist holding the study's claimed reading item may {doing} the draft"
        )


def _require_reviewer(
    session: Session, report: Report, principal: Principal, *, allow_self_review: bool
) -> int:
    author = current_report_author(session, report)
    if author == principal.user_id and not allow_self_review:
        raise Forbidden("the author of a report may not review it (report_self_review is off)")
    for item in open_items(session, study_id=report.dicom_study_id, queue=QueueType.REVIEW):
        if item.status == WorklistStatus.CLAIMED.value and item.assigned_to_id not in (
            None,
            principal.user_id,
        ):
            raise Conflict(
                f"the review of report {report.id} is claimed by another radiologist",
                current=item.status,
                existing={"worklist_item_id": item.id, "assigned_to_id": item.assigned_to_id},
            )
    return author


# --------------------------------------------------------------------------- writing


def create_report(
    session: Session,
    *,
    study_id: int,
    findings: str,
    impression: str,
    critical_flag: bool,
    principal: Principal,
    deadline_minutes: int,
    source_address: str | None = None,
) -> ReportInfo:
    """A draft by the radiologist holding the study's claimed reading item."""
    if session.get(DicomStudy, study_id) is None:
        raise NotFound(f"no study {study_id}")
    require_readable_study(session, study_id=study_id, doing="reported")
    held = session.scalar(
        select(WorklistItem.id)
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.READING.value,
            WorklistItem.status == WorklistStatus.CLAIMED.value,
            WorklistItem.assigned_to_id == principal.user_id,
        )
        .with_for_update()  # two creates by the same holder queue here
    )
    if held is None:
        raise Forbidden(
            "only the radiologist holding the study's claimed reading item may report it"
        )
    existing = session.scalar(
        select(Report).where(Report.dicom_study_id == study_id).order_by(Report.id).limit(1)
    )
    if existing is not None:
        hint = " (add an addendum to it)" if existing.status == ReportStatus.FINAL.value else ""
        raise Conflict(
            f"study {study_id} already has report {existing.id}{hint}",
            current=existing.status,
            existing={"id": existing.id, "status": existing.status, "version": existing.version},
        )
    report = Report(
        dicom_study_id=study_id,
        radiologist_id=principal.user_id,
        status=REPORT.initial.value,
        findings=findings,
        impression=impression,
        critical_flag=critical_flag,
        version=1,
    )
    session.add(report)
    session.flush()
    if critical_flag:
        open_critical(
            session, report, finding=critical_finding(report), deadline_minutes=deadline_minutes
        )
    audit_report_event(
        session,
        principal,
        source_address,
        action="report_created",
        report=report,
        details={"before": None, "after": report_state(report)},
    )
    return report_info(session, report)


def edit_report(
    session: Session,
    *,
    report_id: int,
    principal: Principal,
    deadline_minutes: int,
    findings: str | None = None,
    impression: str | None = None,
    critical_flag: bool | None = None,
    expected_updated_at: datetime | None = None,
    source_address: str | None = None,
) -> ReportInfo:
    """Change the working text of a draft (or of an addendum being written).

    ``expected_updated_at``: the ``updated_at`` the editor last read; a report
    changed since (the same author saving from another tab, a draft moved to
    another radiologist) is a Conflict instead of a silent overwrite. Checked
    under the report's row lock, so of two saves from the same text one wins.
    """
    report = locked_report(session, report_id)
    _require_author(session, report, principal, "edit")
    # an addendum being written is edited as revised, a first-cycle draft as draft
    in_amendment = amendment_kind(session, report) is not None
    _require_transition(report, "edit_revised" if in_amendment else "edit_draft", "edited")
    _require_reading_holder(session, report, principal, "edit")
    if expected_updated_at is not None and report.updated_at != expected_updated_at:
        raise Conflict(
            "the report was changed since you read it (saved elsewhere); "
            "reload it to see the current text",
            current=report.status,
        )
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in (
        ("findings", findings),
        ("impression", impression),
        ("critical_flag", critical_flag),
    ):
        if value is not None and getattr(report, name) != value:
            before[name] = getattr(report, name)
            after[name] = value
            setattr(report, name, value)
    if after.get("critical_flag") is True and not told_since_signed(session, report):
        open_critical(
            session, report, finding=critical_finding(report), deadline_minutes=deadline_minutes
        )
    if after:
        audit_report_event(
            session,
            principal,
            source_address,
            action="report_edited",
            report=report,
            details={"before": before, "after": after},
        )
    return report_info(session, report)


def submit_report(
    session: Session,
    *,
    report_id: int,
    principal: Principal,
    deadline_minutes: int,
    communication: CommunicationInput | None = None,
    source_address: str | None = None,
) -> ReportInfo:
    """draft/revised -> in_review, storing the submitted text as a version."""
    report = locked_report(session, report_id)
    author = _require_author(session, report, principal, "submit")
    submitted = _require_transition(report, "submit", "submitted")
    # a rejected study's reading item is cancelled: say why (409), not 403
    require_readable_study(session, study_id=report.dicom_study_id, doing="submitted")
    _require_reading_holder(session, report, principal, "submit")
    if communication is not None:
        record_communication(
            session,
            report,
            communication,
            principal=principal,
            deadline_minutes=deadline_minutes,
            source_address=source_address,
        )
    require_communicated(session, report)
    before = report_state(report)
    cycle = amendment_kind(session, report)
    report.status = submitted.value
    version = store_version(
        session, report, kind=cycle or VersionKind.PRELIMINARY, author_id=author
    )
    if cycle is None and report.preliminary_at is None:
        report.preliminary_at = utcnow()
    ensure_review_item(
        session, study_id=report.dicom_study_id, actor=user_actor(principal, source_address)
    )
    audit_report_event(
        session,
        principal,
        source_address,
        action="report_submitted",
        report=report,
        details={"before": before, "after": report_state(report), "stored_kind": version.kind},
    )
    return report_info(session, report)


def return_report(
    session: Session,
    *,
    report_id: int,
    comment: str,
    principal: Principal,
    allow_self_review: bool,
    source_address: str | None = None,
) -> ReportInfo:
    """in_review -> draft (revised in an addendum cycle), with the reviewer's comment."""
    if not comment.strip():
        raise InvalidValue("returning a report needs a comment", field="comment")
    report = locked_report(session, report_id)
    _require_reviewer(session, report, principal, allow_self_review=allow_self_review)
    in_amendment = amendment_kind(session, report) is not None
    returned = _require_transition(
        report, "return_addendum" if in_amendment else "return_first", "returned"
    )
    before = report_state(report)
    report.status = returned.value
    store_version(
        session, report, kind=VersionKind.RETURNED, author_id=principal.user_id, comment=comment
    )
    # the resubmission opens a fresh review item
    close_items(
        session,
        study_id=report.dicom_study_id,
        queue=QueueType.REVIEW,
        to=WorklistStatus.CANCELLED,
        actor=user_actor(principal, source_address),
        reason="report returned to its author",
    )
    audit_report_event(
        session,
        principal,
        source_address,
        action="report_returned",
        report=report,
        reason=comment,
        details={"before": before, "after": report_state(report), "comment": comment},
    )
    return report_info(session, report)


def finalize_report(
    session: Session,
    *,
    report_id: int,
    principal: Principal,
    allow_self_review: bool,
    source_address: str | None = None,
) -> ReportInfo:
    """in_review -> final: signed by a reviewer; the study is reported."""
    report = locked_report(session, report_id)
    author = _require_reviewer(session, report, principal, allow_self_review=allow_self_review)
    final = _require_transition(report, "finalize", "finalized")
    require_readable_study(session, study_id=report.dicom_study_id, doing="finalized")
    require_communicated(session, report)
    before = report_state(report)
    report.status = final.value
    report.signed_at = utcnow()
    report.reviewer_id = principal.user_id
    store_version(
        session, report, kind=VersionKind.FINAL, author_id=author, signed_by_id=principal.user_id
    )
    finalizer = user_actor(principal, source_address)
    advance_study_reading(
        session,
        study_id=report.dicom_study_id,
        trigger="finalize_report",
        actor=finalizer,
        reason=f"report {report.id} final",
    )
    for queue in (QueueType.READING, QueueType.REVIEW):
        close_items(
            session,
            study_id=report.dicom_study_id,
            queue=queue,
            to=WorklistStatus.COMPLETED,
            actor=finalizer,
            reason=f"report {report.id} final",
        )
    audit_report_event(
        session,
        principal,
        source_address,
        action="report_finalized",
        report=report,
        details={
            "before": before,
            "after": report_state(report),
            "signed_at": report.signed_at.isoformat(),
        },
    )
    return report_info(session, report)


def add_addendum(
    session: Session,
    *,
    report_id: int,
    kind: VersionKind,
    principal: Principal,
    findings: str | None = None,
    impression: str | None = None,
    source_address: str | None = None,
) -> ReportInfo:
    """final -> revised: the new text as a new version; earlier ones stay."""
    if kind not in (VersionKind.ADDENDUM, VersionKind.CORRECTION):
        raise InvalidValue("kind is addendum or correction", field="kind")
    if findings is None and impression is None:
        raise InvalidValue("an addendum needs findings or impression", field="findings")
    report = locked_report(session, report_id)
    revised = _require_transition(report, "addendum", "amended")
    before = report_state(report)
    report.status = revised.value
    if findings is not None:
        report.findings = findings
    if impression is not None:
        report.impression = impression
    report.first_addendum_at = report.first_addendum_at or utcnow()
    store_version(session, report, kind=kind, author_id=principal.user_id)
    audit_report_event(
        session,
        principal,
        source_address,
        action=f"report_{kind.value}",
        report=report,
        details={
            "before": before,
            "after": report_state(report),
            "findings_changed": findings is not None,
            "impression_changed": impression is not None,
        },
    )
    return report_info(session, report)
