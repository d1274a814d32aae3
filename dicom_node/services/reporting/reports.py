"""Reports: draft -> in_review -> final, returns, addenda, critical results.

The state machine (docs/domain.md#report-states), as enforced here:

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
  version; the study becomes ``reported``, its reading and review items
  ``completed``. Final text is never edited again.
- ``final`` -> ``revised`` (addendum or correction, by any radiologist): a new
  version with the new text; the addendum's writer is the author of that cycle
  (submits it, may not finalize it), and the cycle goes through submit and
  finalize again.

``Report.version`` is the number of the latest stored version (every submit,
return, finalize and addendum stores one); earlier versions stay readable.

Critical results: setting ``critical_flag`` opens a communication record with
``deadline_at = identified_at + critical_result_deadline_minutes``. Submitting
or finalizing a report with ``critical_flag`` requires at least one record with
``communicated_at`` (who told whom, how, when): otherwise 422 naming the
missing ``critical_communication``. A record made when the communication is
recorded (no pending one) is identified at min(now, communicated_at); filling
a pending record with a communicated_at before its identified_at is 422
(``communicated_at``): a finding is never told before it was identified.
``overdue_critical_communications`` lists the records past their deadline
that were never communicated (for the escalation job).

Who reads what: admins, auditors and radiologists read every report and its
working text. A referring physician reads only reports of orders they placed,
only once the report has been final at least once, and then only signed text
(the latest ``final`` version; drafts, returns and unsigned addenda stay
hidden); anything else is 404 to them. Their ``critical_flag`` is the report's
only while it is final (a version does not store the flag, so during an
addendum cycle it reads False), and they see only communications recorded by
the last signing, none during an addendum cycle. Every read is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
    ReportVersion,
    WorklistItem,
)
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import QueueType, ReportStatus, Role, StudyStatus, WorklistStatus
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.workflow.reading_worklist import (
    close_items,
    current_report_author,
    ensure_review_item,
    holds_reading_item,
    is_first_cycle_draft,
    move_study_status,
    open_items,
    require_readable_study,
)


class VersionKind(StrEnum):
    PRELIMINARY = "preliminary"
    RETURNED = "returned"
    FINAL = "final"
    ADDENDUM = "addendum"
    CORRECTION = "correction"


class CommunicationMethod(StrEnum):
    PHONE = "phone"
    IN_PERSON = "in_person"
    SECURE_MESSAGE = "secure_message"
    OTHER = "other"


_EDITABLE = (ReportStatus.DRAFT.value, ReportStatus.REVISED.value)
_AMENDMENTS = (VersionKind.ADDENDUM.value, VersionKind.CORRECTION.value)


@dataclass(frozen=True, slots=True)
class CriticalCommunicationInfo:
    id: int
    report_id: int
    finding: str
    identified_at: datetime
    deadline_at: datetime
    communicated_by_id: int | None
    communicated_to: str | None
    method: str | None
    communicated_at: datetime | None
    acknowledged_at: datetime | None
    escalated_at: datetime | None
    # None until communicated; then whether it was on time
    deadline_met: bool | None
    # not communicated and past the deadline now
    overdue: bool


@dataclass(frozen=True, slots=True)
class ReportInfo:
    id: int
    study_id: int
    study_instance_uid: str
    accession_number: str | None
    order_id: int | None
    status: str
    findings: str
    impression: str
    critical_flag: bool
    author_id: int
    # who writes the current text (the addendum writer in an addendum cycle)
    current_author_id: int
    reviewer_id: int | None
    signed_at: datetime | None
    version: int
    preliminary_at: datetime | None
    first_addendum_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # the stored version whose text is shown; None = the working text
    content_version: int | None
    critical_communications: list[CriticalCommunicationInfo]


@dataclass(frozen=True, slots=True)
class ReportSummary:
    id: int
    study_id: int
    study_instance_uid: str
    accession_number: str | None
    status: str
    critical_flag: bool
    author_id: int
    reviewer_id: int | None
    signed_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReportSummaryPage:
    items: list[ReportSummary]
    total: int


@dataclass(frozen=True, slots=True)
class ReportVersionInfo:
    id: int
    report_id: int
    version: int
    kind: str
    status: str
    findings: str
    impression: str
    author_id: int
    signed_by_id: int | None
    comment: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CommunicationInput:
    finding: str
    communicated_to: str
    method: CommunicationMethod
    communicated_at: datetime
    acknowledged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _StudyContext:
    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    order_id: int | None
    requested_by_id: int | None


# --------------------------------------------------------------------------- helpers


def _study_context(session: Session, study_id: int) -> _StudyContext | None:
    row = session.execute(
        select(
            DicomStudy.study_instance_uid,
            DicomStudy.accession_number,
            Patient.patient_id,
            DicomStudy.imaging_request_id,
            ImagingRequest.requested_by_id,
        )
        .join(Patient, Patient.id == DicomStudy.patient_pk)
        .outerjoin(ImagingRequest, ImagingRequest.id == DicomStudy.imaging_request_id)
        .where(DicomStudy.id == study_id)
    ).first()
    if row is None:
        return None
    return _StudyContext(*row)


def _locked_report(session: Session, report_id: int) -> Report:
    report = session.get(Report, report_id, with_for_update=True, populate_existing=True)
    if report is None:
        raise NotFound(f"no report {report_id}")
    return report


def _cycle_kind(session: Session, report: Report) -> VersionKind | None:
    """addendum/correction while an amendment is being made, else None."""
    if report.first_addendum_at is None:
        return None
    kind = session.scalar(
        select(ReportVersion.kind)
        .where(ReportVersion.report_id == report.id, ReportVersion.kind.in_(_AMENDMENTS))
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )
    return VersionKind(kind) if kind is not None else None


def _snapshot(
    session: Session,
    report: Report,
    *,
    kind: VersionKind,
    author_id: int,
    signed_by_id: int | None = None,
    comment: str | None = None,
) -> ReportVersion:
    # no autoflush: the report's new status and version go out in one flush,
    # so the change feed gets one entry for the transition, not two
    with session.no_autoflush:
        latest = session.scalar(
            select(func.max(ReportVersion.version)).where(ReportVersion.report_id == report.id)
        )
    number = int(latest or 0) + 1
    version = ReportVersion(
        report_id=report.id,
        version=number,
        kind=kind.value,
        status=report.status,
        findings=report.findings,
        impression=report.impression,
        author_id=author_id,
        signed_by_id=signed_by_id,
        comment=comment,
    )
    session.add(version)
    report.version = number
    return version


def _state(report: Report) -> dict[str, Any]:
    return {
        "status": report.status,
        "version": report.version,
        "critical_flag": report.critical_flag,
        "reviewer_id": report.reviewer_id,
    }


def _audit(
    session: Session,
    principal: Principal,
    source_address: str | None,
    *,
    action: str,
    report: Report,
    details: dict[str, Any],
    reason: str | None = None,
    code: AuditEventCode = AuditEventCode.PATIENT_RECORD,
    target: tuple[str, int] | None = None,
) -> None:
    context = _study_context(session, report.dicom_study_id)
    target_class, target_id = target or ("Report", report.id)
    record_audit_event(
        session,
        AuditRecord(
            event_code=code,
            action=action,
            actor=principal.username,
            actor_user_id=principal.user_id,
            actor_role=principal.role.value,
            source_address=source_address,
            target_class=target_class,
            target_id=str(target_id),
            patient_id=context.patient_id if context else None,
            study_instance_uid=context.study_instance_uid if context else None,
            accession_number=context.accession_number if context else None,
            reason=reason,
            details=details,
        ),
    )


def _communication_info(
    row: CriticalResultCommunication, now: datetime
) -> CriticalCommunicationInfo:
    return CriticalCommunicationInfo(
        id=row.id,
        report_id=row.report_id,
        finding=row.finding,
        identified_at=row.identified_at,
        deadline_at=row.deadline_at,
        communicated_by_id=row.communicated_by_id,
        communicated_to=row.communicated_to,
        method=row.method,
        communicated_at=row.communicated_at,
        acknowledged_at=row.acknowledged_at,
        escalated_at=row.escalated_at,
        deadline_met=(
            row.communicated_at <= row.deadline_at if row.communicated_at is not None else None
        ),
        overdue=row.communicated_at is None and now > row.deadline_at,
    )


def _communications(session: Session, report_id: int) -> list[CriticalResultCommunication]:
    return list(
        session.scalars(
            select(CriticalResultCommunication)
            .where(CriticalResultCommunication.report_id == report_id)
            .order_by(CriticalResultCommunication.id)
        )
    )


def _signed_communication(row: CriticalResultCommunication, signed_at: datetime | None) -> bool:
    """A communication that was on record when the report was last signed.

    The table has no creation time: identified_at (set when the record is
    made, or the earlier communication time) and communicated_at both at or
    before signed_at stand for it; pending records are internal work, never
    shown to a referrer."""
    return (
        signed_at is not None
        and row.communicated_at is not None
        and row.identified_at <= signed_at
        and row.communicated_at <= signed_at
    )


def _signed_critical_flag(report: Report) -> bool:
    """The flag a referring physician sees.

    A ReportVersion does not keep the flag, so the value signed last is only
    known for certain while the report is final (content frozen); during an
    addendum cycle the working flag may be unsigned and is shown as False (the
    signed text itself still states the finding)."""
    return report.critical_flag and report.status == ReportStatus.FINAL.value


def _info(
    session: Session,
    report: Report,
    *,
    content: ReportVersion | None = None,
    signed_only: bool = False,
) -> ReportInfo:
    """The report; ``signed_only`` (referring physicians): flag and
    communications as signed, nothing from an unsigned addendum cycle."""
    session.flush()
    context = _study_context(session, report.dicom_study_id)
    assert context is not None  # a report's study is a foreign key
    now = utcnow()
    communications = _communications(session, report.id)
    if signed_only:
        communications = (
            [row for row in communications if _signed_communication(row, report.signed_at)]
            if report.status == ReportStatus.FINAL.value
            else []
        )
    return ReportInfo(
        id=report.id,
        study_id=report.dicom_study_id,
        study_instance_uid=context.study_instance_uid,
        accession_number=context.accession_number,
        order_id=context.order_id,
        status=report.status,
        findings=content.findings if content is not None else report.findings,
        impression=content.impression if content is not None else report.impression,
        critical_flag=_signed_critical_flag(report) if signed_only else report.critical_flag,
        author_id=report.radiologist_id,
        current_author_id=current_report_author(session, report),
        reviewer_id=report.reviewer_id,
        signed_at=report.signed_at,
        version=report.version,
        preliminary_at=report.preliminary_at,
        first_addendum_at=report.first_addendum_at,
        created_at=report.created_at,
        updated_at=report.updated_at,
        content_version=content.version if content is not None else None,
        critical_communications=[_communication_info(row, now) for row in communications],
    )


def _version_info(row: ReportVersion) -> ReportVersionInfo:
    return ReportVersionInfo(
        id=row.id,
        report_id=row.report_id,
        version=row.version,
        kind=row.kind,
        status=row.status,
        findings=row.findings,
        impression=row.impression,
        author_id=row.author_id,
        signed_by_id=row.signed_by_id,
        comment=row.comment,
        created_at=row.created_at,
    )


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


def _require_status(report: Report, allowed: Sequence[str], doing: str) -> None:
    if report.status not in allowed:
        raise Conflict(
            f"a {report.status} report cannot be {doing}",
            current=report.status,
            existing={"id": report.id, "status": report.status, "version": report.version},
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


def _require_communicated(session: Session, report: Report) -> None:
    if not report.critical_flag:
        return
    pending = session.scalar(
        select(CriticalResultCommunication.id)
        .where(
            CriticalResultCommunication.report_id == report.id,
            CriticalResultCommunication.communicated_at.is_(None),
        )
        .limit(1)
    )
    if pending is not None:
        # opened by flagging this text: signing it would leave the record to be
        # escalated as overdue on a signed report
        raise InvalidValue(
            f"critical result communication {pending} is not recorded yet (who told whom, "
            f"how, when): POST /api/reports/{report.id}/critical-communications or send "
            "critical_communication",
            field="critical_communication",
        )
    communicated = session.scalar(
        select(CriticalResultCommunication.id)
        .where(
            CriticalResultCommunication.report_id == report.id,
            CriticalResultCommunication.communicated_at.is_not(None),
        )
        .limit(1)
    )
    if communicated is None:
        raise InvalidValue(
            "the report has critical_flag set but no critical result communication is "
            "recorded (who told whom, how, when): POST "
            f"/api/reports/{report.id}/critical-communications or send critical_communication",
            field="critical_communication",
        )


def _open_critical(
    session: Session,
    report: Report,
    *,
    finding: str,
    deadline_minutes: int,
    identified_at: datetime | None = None,
) -> CriticalResultCommunication:
    """The report's pending (not yet communicated) record, made with its
    deadline if there is none: the clock starts when the flag is set (or at
    ``identified_at`` when the record is made as the communication is told)."""
    pending = session.scalar(
        select(CriticalResultCommunication)
        .where(
            CriticalResultCommunication.report_id == report.id,
            CriticalResultCommunication.communicated_at.is_(None),
        )
        .order_by(CriticalResultCommunication.id)
        .limit(1)
    )
    if pending is not None:
        return pending
    identified = identified_at or utcnow()
    row = CriticalResultCommunication(
        report_id=report.id,
        finding=finding,
        identified_at=identified,
        deadline_at=identified + timedelta(minutes=deadline_minutes),
    )
    session.add(row)
    session.flush()
    return row


def _told_since_signed(session: Session, report: Report) -> bool:
    """A communication was recorded for the text being written (since the last
    signing, or ever for a first draft): flagging the report afterwards (the
    radiologist phoned first) needs no second record, which nobody would
    communicate and which would be escalated as overdue."""
    query = select(CriticalResultCommunication.id).where(
        CriticalResultCommunication.report_id == report.id,
        CriticalResultCommunication.communicated_at.is_not(None),
    )
    if report.signed_at is not None:
        query = query.where(CriticalResultCommunication.communicated_at > report.signed_at)
    return session.scalar(query.limit(1)) is not None


def _critical_finding(report: Report) -> str:
    return (report.impression or report.findings or "critical finding")[:2000]


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
        status=ReportStatus.DRAFT.value,
        findings=findings,
        impression=impression,
        critical_flag=critical_flag,
        version=1,
    )
    session.add(report)
    session.flush()
    if critical_flag:
        _open_critical(
            session, report, finding=_critical_finding(report), deadline_minutes=deadline_minutes
        )
    _audit(
        session,
        principal,
        source_address,
        action="report_created",
        report=report,
        details={"before": None, "after": _state(report)},
    )
    return _info(session, report)


def edit_report(
    session: Session,
    *,
    report_id: int,
    principal: Principal,
    deadline_minutes: int,
    findings: str | None = None,
    impression: str | None = None,
    critical_flag: bool | None = None,
    source_address: str | None = None,
) -> ReportInfo:
    """Change the working text of a draft (or of an addendum being written)."""
    report = _locked_report(session, report_id)
    _require_author(session, report, principal, "edit")
    _require_status(report, _EDITABLE, "edited")
    _require_reading_holder(session, report, principal, "edit")
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
    if after.get("critical_flag") is True and not _told_since_signed(session, report):
        _open_critical(
            session, report, finding=_critical_finding(report), deadline_minutes=deadline_minutes
        )
    if after:
        _audit(
            session,
            principal,
            source_address,
            action="report_edited",
            report=report,
            details={"before": before, "after": after},
        )
    return _info(session, report)


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
    report = _locked_report(session, report_id)
    author = _require_author(session, report, principal, "submit")
    _require_status(report, _EDITABLE, "submitted")
    # a rejected study's reading item is cancelled: say why (409), not 403
    require_readable_study(session, study_id=report.dicom_study_id, doing="submitted")
    _require_reading_holder(session, report, principal, "submit")
    if communication is not None:
        _record_communication(
            session,
            report,
            communication,
            principal=principal,
            deadline_minutes=deadline_minutes,
            source_address=source_address,
        )
    _require_communicated(session, report)
    before = _state(report)
    cycle = _cycle_kind(session, report)
    report.status = ReportStatus.IN_REVIEW.value
    version = _snapshot(session, report, kind=cycle or VersionKind.PRELIMINARY, author_id=author)
    if cycle is None and report.preliminary_at is None:
        report.preliminary_at = utcnow()
    ensure_review_item(
        session, study_id=report.dicom_study_id, principal=principal, source_address=source_address
    )
    _audit(
        session,
        principal,
        source_address,
        action="report_submitted",
        report=report,
        details={"before": before, "after": _state(report), "stored_kind": version.kind},
    )
    return _info(session, report)


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
    report = _locked_report(session, report_id)
    _require_reviewer(session, report, principal, allow_self_review=allow_self_review)
    _require_status(report, (ReportStatus.IN_REVIEW.value,), "returned")
    before = _state(report)
    in_amendment = _cycle_kind(session, report) is not None
    report.status = (ReportStatus.REVISED if in_amendment else ReportStatus.DRAFT).value
    _snapshot(
        session, report, kind=VersionKind.RETURNED, author_id=principal.user_id, comment=comment
    )
    # the resubmission opens a fresh review item
    close_items(
        session,
        study_id=report.dicom_study_id,
        queue=QueueType.REVIEW,
        to=WorklistStatus.CANCELLED,
        principal=principal,
        source_address=source_address,
        reason="report returned to its author",
    )
    _audit(
        session,
        principal,
        source_address,
        action="report_returned",
        report=report,
        reason=comment,
        details={"before": before, "after": _state(report), "comment": comment},
    )
    return _info(session, report)


def finalize_report(
    session: Session,
    *,
    report_id: int,
    principal: Principal,
    allow_self_review: bool,
    source_address: str | None = None,
) -> ReportInfo:
    """in_review -> final: signed by a reviewer; the study is reported."""
    report = _locked_report(session, report_id)
    author = _require_reviewer(session, report, principal, allow_self_review=allow_self_review)
    _require_status(report, (ReportStatus.IN_REVIEW.value,), "finalized")
    require_readable_study(session, study_id=report.dicom_study_id, doing="finalized")
    _require_communicated(session, report)
    before = _state(report)
    report.status = ReportStatus.FINAL.value
    report.signed_at = utcnow()
    report.reviewer_id = principal.user_id
    _snapshot(
        session, report, kind=VersionKind.FINAL, author_id=author, signed_by_id=principal.user_id
    )
    move_study_status(
        session,
        study_id=report.dicom_study_id,
        to=StudyStatus.REPORTED,
        allowed_from=(StudyStatus.ACQUIRED, StudyStatus.READING),
        principal=principal,
        source_address=source_address,
        reason=f"report {report.id} final",
    )
    for queue in (QueueType.READING, QueueType.REVIEW):
        close_items(
            session,
            study_id=report.dicom_study_id,
            queue=queue,
            to=WorklistStatus.COMPLETED,
            principal=principal,
            source_address=source_address,
            reason=f"report {report.id} final",
        )
    _audit(
        session,
        principal,
        source_address,
        action="report_finalized",
        report=report,
        details={
            "before": before,
            "after": _state(report),
            "signed_at": report.signed_at.isoformat(),
        },
    )
    return _info(session, report)


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
    report = _locked_report(session, report_id)
    _require_status(report, (ReportStatus.FINAL.value,), "amended")
    before = _state(report)
    report.status = ReportStatus.REVISED.value
    if findings is not None:
        report.findings = findings
    if impression is not None:
        report.impression = impression
    report.first_addendum_at = report.first_addendum_at or utcnow()
    _snapshot(session, report, kind=kind, author_id=principal.user_id)
    _audit(
        session,
        principal,
        source_address,
        action=f"report_{kind.value}",
        report=report,
        details={
            "before": before,
            "after": _state(report),
            "findings_changed": findings is not None,
            "impression_changed": impression is not None,
        },
    )
    return _info(session, report)


# --------------------------------------------------------------------------- critical results


def _record_communication(
    session: Session,
    report: Report,
    communication: CommunicationInput,
    *,
    principal: Principal,
    deadline_minutes: int,
    source_address: str | None,
) -> CriticalResultCommunication:
    if communication.communicated_at > utcnow() + timedelta(minutes=5):
        raise InvalidValue("communicated_at is in the future", field="communicated_at")
    if (
        communication.acknowledged_at is not None
        and communication.acknowledged_at < communication.communicated_at
    ):
        raise InvalidValue("acknowledged_at is before communicated_at", field="acknowledged_at")
    # made now, the finding was identified at the latest when it was told:
    # identified_at never after communicated_at (no negative turnaround)
    row = _open_critical(
        session,
        report,
        finding=communication.finding,
        deadline_minutes=deadline_minutes,
        identified_at=min(utcnow(), communication.communicated_at),
    )
    if communication.communicated_at < row.identified_at:
        raise InvalidValue(
            "communicated_at is before the critical finding was identified "
            f"({row.identified_at.isoformat()})",
            field="communicated_at",
        )
    before = {"communicated_at": None, "finding": row.finding}
    row.finding = communication.finding
    row.communicated_to = communication.communicated_to
    row.method = communication.method.value
    row.communicated_at = communication.communicated_at
    row.communicated_by_id = principal.user_id
    row.acknowledged_at = communication.acknowledged_at
    session.flush()
    _audit(
        session,
        principal,
        source_address,
        action="critical_result_communicated",
        report=report,
        target=("CriticalResultCommunication", row.id),
        details={
            "before": before,
            "after": {
                "finding": row.finding,
                "communicated_to": row.communicated_to,
                "method": row.method,
                "communicated_at": row.communicated_at.isoformat(),
                "acknowledged_at": row.acknowledged_at.isoformat() if row.acknowledged_at else None,
            },
            "report_id": report.id,
            "deadline_at": row.deadline_at.isoformat(),
            "deadline_met": row.communicated_at <= row.deadline_at,
        },
    )
    return row


def record_critical_communication(
    session: Session,
    *,
    report_id: int,
    communication: CommunicationInput,
    principal: Principal,
    deadline_minutes: int,
    source_address: str | None = None,
) -> CriticalCommunicationInfo:
    """Record that a critical finding was told to someone (fills the record the
    flag opened, or adds another one); allowed in any report state."""
    report = _locked_report(session, report_id)
    row = _record_communication(
        session,
        report,
        communication,
        principal=principal,
        deadline_minutes=deadline_minutes,
        source_address=source_address,
    )
    return _communication_info(row, utcnow())


def acknowledge_critical_communication(
    session: Session,
    *,
    report_id: int,
    communication_id: int,
    principal: Principal,
    acknowledged_at: datetime | None = None,
    source_address: str | None = None,
) -> CriticalCommunicationInfo:
    report = _locked_report(session, report_id)
    row = session.get(CriticalResultCommunication, communication_id, with_for_update=True)
    if row is None or row.report_id != report.id:
        raise NotFound(f"no critical communication {communication_id} on report {report_id}")
    if row.communicated_at is None:
        raise Conflict(
            "the finding has not been communicated yet",
            current="not_communicated",
        )
    if row.acknowledged_at is not None:
        raise Conflict(
            f"already acknowledged at {row.acknowledged_at.isoformat()}", current="acknowledged"
        )
    moment = acknowledged_at or utcnow()
    if moment < row.communicated_at:
        raise InvalidValue("acknowledged_at is before communicated_at", field="acknowledged_at")
    row.acknowledged_at = moment
    session.flush()
    _audit(
        session,
        principal,
        source_address,
        action="critical_result_acknowledged",
        report=report,
        target=("CriticalResultCommunication", row.id),
        details={
            "before": {"acknowledged_at": None},
            "after": {"acknowledged_at": moment.isoformat()},
            "report_id": report.id,
        },
    )
    return _communication_info(row, utcnow())


def overdue_critical_communications(
    session: Session, now: datetime
) -> list[CriticalCommunicationInfo]:
    """Critical findings of flagged reports past their deadline and never
    communicated, oldest deadline first (for the escalation job)."""
    rows = session.scalars(
        select(CriticalResultCommunication)
        .join(Report, Report.id == CriticalResultCommunication.report_id)
        .where(
            Report.critical_flag.is_(True),
            CriticalResultCommunication.communicated_at.is_(None),
            CriticalResultCommunication.deadline_at < now,
        )
        .order_by(CriticalResultCommunication.deadline_at, CriticalResultCommunication.id)
    )
    return [_communication_info(row, now) for row in rows]


# --------------------------------------------------------------------------- reading


def _latest_final(session: Session, report_id: int) -> ReportVersion | None:
    return session.scalar(
        select(ReportVersion)
        .where(ReportVersion.report_id == report_id, ReportVersion.kind == VersionKind.FINAL.value)
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )


def _readable(session: Session, report: Report, principal: Principal) -> _StudyContext:
    context = _study_context(session, report.dicom_study_id)
    assert context is not None
    if principal.role is Role.REFERRING_PHYSICIAN and (
        context.requested_by_id != principal.user_id or report.signed_at is None
    ):
        # not theirs, or nothing signed yet: not theirs to know about
        raise NotFound(f"no report {report.id}")
    return context


def get_report(
    session: Session, *, report_id: int, principal: Principal, source_address: str | None = None
) -> ReportInfo:
    """The report (signed text only for a referring physician); audited."""
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound(f"no report {report_id}")
    _readable(session, report, principal)
    referrer = principal.role is Role.REFERRING_PHYSICIAN
    content = _latest_final(session, report.id) if referrer else None
    info = _info(session, report, content=content, signed_only=referrer)
    _audit(
        session,
        principal,
        source_address,
        action="report_read",
        report=report,
        details={"status": report.status, "content_version": info.content_version},
    )
    return info


def report_versions(
    session: Session, *, report_id: int, principal: Principal, source_address: str | None = None
) -> list[ReportVersionInfo]:
    """Every stored version, oldest first (final ones only for a referring
    physician); audited."""
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound(f"no report {report_id}")
    _readable(session, report, principal)
    query = select(ReportVersion).where(ReportVersion.report_id == report.id)
    if principal.role is Role.REFERRING_PHYSICIAN:
        query = query.where(ReportVersion.kind == VersionKind.FINAL.value)
    versions = [
        _version_info(row) for row in session.scalars(query.order_by(ReportVersion.version))
    ]
    _audit(
        session,
        principal,
        source_address,
        action="report_versions_read",
        report=report,
        details={"versions": [version.version for version in versions]},
    )
    return versions


def list_reports(
    session: Session,
    *,
    principal: Principal,
    offset: int,
    limit: int,
    study_id: int | None = None,
    status: ReportStatus | None = None,
    source_address: str | None = None,
) -> ReportSummaryPage:
    """Reports without their text, newest first; audited as one query (110112)."""
    conditions: list[Any] = []
    if study_id is not None:
        conditions.append(Report.dicom_study_id == study_id)
    if status is not None:
        conditions.append(Report.status == status.value)
    base = select(Report.id).join(DicomStudy, DicomStudy.id == Report.dicom_study_id)
    if principal.role is Role.REFERRING_PHYSICIAN:
        base = base.join(ImagingRequest, ImagingRequest.id == DicomStudy.imaging_request_id)
        conditions += [
            ImagingRequest.requested_by_id == principal.user_id,
            Report.signed_at.is_not(None),
        ]
    total = int(
        session.scalar(select(func.count()).select_from(base.where(*conditions).subquery())) or 0
    )
    rows = session.execute(
        base.add_columns(
            Report.dicom_study_id,
            DicomStudy.study_instance_uid,
            DicomStudy.accession_number,
            Report.status,
            Report.critical_flag,
            Report.radiologist_id,
            Report.reviewer_id,
            Report.signed_at,
            Report.version,
            Report.created_at,
            Report.updated_at,
        )
        .where(*conditions)
        .order_by(Report.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.QUERY,
            action="reports_queried",
            actor=principal.username,
            actor_user_id=principal.user_id,
            actor_role=principal.role.value,
            source_address=source_address,
            target_class="Report",
            details={
                "query": {
                    "study_id": study_id,
                    "status": status.value if status else None,
                    "offset": offset,
                    "limit": limit,
                }
            },
        ),
    )
    items = [ReportSummary(*row) for row in rows]
    if principal.role is Role.REFERRING_PHYSICIAN:
        # the flag as signed (see _signed_critical_flag): only a final report's
        items = [
            replace(
                item, critical_flag=item.critical_flag and item.status == ReportStatus.FINAL.value
            )
            for item in items
        ]
    return ReportSummaryPage(items=items, total=total)
