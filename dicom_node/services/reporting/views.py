"""Reading reports: what each reader sees of a report, its versions and the
report list, every read audited.

Admins, auditors and radiologists read every report and its working text. A
referring physician reads only reports of the orders the visibility rule
(``services/access/visibility.py``) lets them see, only once the report has
been final at least once, and then only signed text (the latest ``final``
version; drafts, returns and unsigned addenda stay hidden); anything else is
404 to them. Their ``critical_flag`` is the report's only while it is final
(a version does not store the flag, so during an addendum cycle it reads
False), and they see only communications recorded by the last signing, none
during an addendum cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingRequest,
    Report,
    ReportVersion,
)
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditEventCode, TargetKind, audit_event
from dicom_node.domain.enums import ReportStatus
from dicom_node.domain.errors import NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.services.access.visibility import may_see_order, sees_every_order, study_condition
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.reporting.critical_results import (
    CriticalCommunicationInfo,
    communication_info,
    communications,
    signed_communication,
    signed_critical_flag,
)
from dicom_node.services.reporting.records import audit_report_event, reports_with_subjects
from dicom_node.services.reporting.versions import (
    AMENDMENTS,
    ReportVersionInfo,
    VersionKind,
    latest_final,
    version_info,
)
from dicom_node.services.workflow.reading_worklist import current_report_author


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


def report_info(
    session: Session,
    report: Report,
    *,
    content: ReportVersion | None = None,
    signed_only: bool = False,
) -> ReportInfo:
    """The report; ``signed_only`` (referring physicians): flag and
    communications as signed, nothing from an unsigned addendum cycle."""
    session.flush()
    study = session.get(DicomStudy, report.dicom_study_id)
    assert study is not None  # a report's study is a foreign key
    now = utcnow()
    rows = communications(session, report.id)
    if signed_only:
        rows = (
            [row for row in rows if signed_communication(row, report.signed_at)]
            if report.status == ReportStatus.FINAL.value
            else []
        )
    return ReportInfo(
        id=report.id,
        study_id=report.dicom_study_id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        order_id=study.imaging_request_id,
        status=report.status,
        findings=content.findings if content is not None else report.findings,
        impression=content.impression if content is not None else report.impression,
        critical_flag=signed_critical_flag(report) if signed_only else report.critical_flag,
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
        critical_communications=[communication_info(row, now) for row in rows],
    )


def _signed_only(principal: Principal) -> bool:
    """Whether ``principal`` reads signed text only: whoever the visibility
    rule narrows (a referring physician) sees a report as signed, never the
    work on it."""
    return not sees_every_order(principal)


def _readable_report(session: Session, report_id: int, principal: Principal) -> Report:
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound(f"no report {report_id}")
    if _signed_only(principal):
        study = session.get(DicomStudy, report.dicom_study_id)
        order_id = study.imaging_request_id if study is not None else None
        order = session.get(ImagingRequest, order_id) if order_id is not None else None
        if order is None or not may_see_order(principal, order) or report.signed_at is None:
            # not theirs, or nothing signed yet: not theirs to know about
            raise NotFound(f"no report {report.id}")
    return report


def get_report(
    session: Session, *, report_id: int, principal: Principal, source_address: str | None = None
) -> ReportInfo:
    """The report (signed text only for a referring physician); audited."""
    report = _readable_report(session, report_id, principal)
    signed_only = _signed_only(principal)
    content = latest_final(session, report.id) if signed_only else None
    info = report_info(session, report, content=content, signed_only=signed_only)
    audit_report_event(
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
    report = _readable_report(session, report_id, principal)
    query = select(ReportVersion).where(ReportVersion.report_id == report.id)
    if _signed_only(principal):
        query = query.where(ReportVersion.kind == VersionKind.FINAL.value)
    versions = [version_info(row) for row in session.scalars(query.order_by(ReportVersion.version))]
    audit_report_event(
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
    if _signed_only(principal):
        conditions += [study_condition(principal), Report.signed_at.is_not(None)]
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
        audit_event(
            AuditEventCode.QUERY,
            "reports_queried",
            user_actor(principal, source_address),
            TargetKind.REPORT,
            None,
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
    if _signed_only(principal):
        # the flag as signed (see signed_critical_flag): only a final report's
        items = [
            replace(
                item, critical_flag=item.critical_flag and item.status == ReportStatus.FINAL.value
            )
            for item in items
        ]
    return ReportSummaryPage(items=items, total=total)


# --------------------------------------------------------------------------- batches
# For the GraphQL batch loaders: many reports in one statement, the reader's
# view of each (the rule above) applied in SQL, so a page of 50 worklist items
# with their reports costs one query, not 50.


@dataclass(frozen=True, slots=True)
class ReportCore:
    """A report as ``get_report`` shows it, without its communications (a
    batch loads those separately: ``communications_by_report``)."""

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
    current_author_id: int
    reviewer_id: int | None
    signed_at: datetime | None
    version: int
    preliminary_at: datetime | None
    first_addendum_at: datetime | None
    created_at: datetime
    updated_at: datetime
    content_version: int | None


def _core_rows(session: Session, principal: Principal, *conditions: Any) -> list[ReportCore]:
    signed_only = _signed_only(principal)
    amendment_author = (
        select(ReportVersion.author_id)
        .where(ReportVersion.report_id == Report.id, ReportVersion.kind.in_(AMENDMENTS))
        .order_by(ReportVersion.version.desc())
        .limit(1)
        .correlate(Report)
        .scalar_subquery()
    )
    # the same rule as current_report_author, as a column
    current_author = case(
        (Report.first_addendum_at.is_(None), Report.radiologist_id),
        else_=func.coalesce(amendment_author, Report.radiologist_id),
    )
    query = select(
        Report,
        DicomStudy.study_instance_uid,
        DicomStudy.accession_number,
        DicomStudy.imaging_request_id,
        current_author,
    ).join(DicomStudy, DicomStudy.id == Report.dicom_study_id)
    signed = aliased(ReportVersion)
    if signed_only:
        # the text signed last (latest_final), joined in the same statement
        last_final = (
            select(func.max(ReportVersion.version))
            .where(
                ReportVersion.report_id == Report.id,
                ReportVersion.kind == VersionKind.FINAL.value,
            )
            .correlate(Report)
            .scalar_subquery()
        )
        query = query.add_columns(signed.findings, signed.impression, signed.version).outerjoin(
            signed, (signed.report_id == Report.id) & (signed.version == last_final)
        )
        conditions += (study_condition(principal), Report.signed_at.is_not(None))
    cores: list[ReportCore] = []
    for row in session.execute(query.where(*conditions)).all():
        report: Report = row[0]
        findings, impression, content_version = (
            (row[5], row[6], row[7])
            if signed_only and row[7] is not None
            else (report.findings, report.impression, None)
        )
        cores.append(
            ReportCore(
                id=report.id,
                study_id=report.dicom_study_id,
                study_instance_uid=row[1],
                accession_number=row[2],
                order_id=row[3],
                status=report.status,
                findings=findings,
                impression=impression,
                critical_flag=(
                    signed_critical_flag(report) if signed_only else report.critical_flag
                ),
                author_id=report.radiologist_id,
                current_author_id=row[4],
                reviewer_id=report.reviewer_id,
                signed_at=report.signed_at,
                version=report.version,
                preliminary_at=report.preliminary_at,
                first_addendum_at=report.first_addendum_at,
                created_at=report.created_at,
                updated_at=report.updated_at,
                content_version=content_version,
            )
        )
    return cores


def reports_by_id(
    session: Session, report_ids: Sequence[int], principal: Principal
) -> dict[int, ReportCore]:
    """The reports of ``report_ids`` that ``principal`` may read (as
    ``get_report`` shows them: signed text only to a referring physician), in
    one statement; not audited (the caller reached them through a record it
    read: a listing or a detail that is)."""
    if not report_ids:
        return {}
    return {
        core.id: core
        for core in _core_rows(session, principal, Report.id.in_(list(set(report_ids))))
    }


def reports_of_studies(
    session: Session, study_ids: Sequence[int], principal: Principal
) -> dict[int, ReportCore]:
    """Each study's report that ``principal`` may read (the latest, should a
    study have more than one), in one statement; not audited (as ``reports_by_id``)."""
    if not study_ids:
        return {}
    found: dict[int, ReportCore] = {}
    rows = _core_rows(session, principal, Report.dicom_study_id.in_(list(set(study_ids))))
    for core in sorted(rows, key=lambda core: core.id):
        found[core.study_id] = core
    return found


def communications_by_report(
    session: Session, report_ids: Sequence[int], principal: Principal
) -> dict[int, list[CriticalCommunicationInfo]]:
    """The critical communications of reports ``principal`` may read
    (``reports_by_id``), oldest first, as ``get_report`` shows them, in one
    statement."""
    found: dict[int, list[CriticalCommunicationInfo]] = {key: [] for key in report_ids}
    if not report_ids:
        return found
    signed_only = _signed_only(principal)
    now = utcnow()
    rows = session.execute(
        select(CriticalResultCommunication, Report.status, Report.signed_at)
        .join(Report, Report.id == CriticalResultCommunication.report_id)
        .where(CriticalResultCommunication.report_id.in_(list(set(report_ids))))
        .order_by(CriticalResultCommunication.id)
    ).all()
    for row, status, signed_at in rows:
        if signed_only and not (
            status == ReportStatus.FINAL.value and signed_communication(row, signed_at)
        ):
            continue
        found[row.report_id].append(communication_info(row, now))
    return found


def versions_by_report(
    session: Session,
    report_ids: Sequence[int],
    principal: Principal,
    source_address: str | None = None,
) -> dict[int, list[ReportVersionInfo]]:
    """``report_versions`` for many reports ``principal`` may read: the
    versions in one statement, each report's read audited as REST audits it."""
    found: dict[int, list[ReportVersionInfo]] = {key: [] for key in report_ids}
    if not report_ids:
        return found
    query = select(ReportVersion).where(ReportVersion.report_id.in_(list(set(report_ids))))
    if _signed_only(principal):
        query = query.where(ReportVersion.kind == VersionKind.FINAL.value)
    for row in session.scalars(query.order_by(ReportVersion.report_id, ReportVersion.version)):
        found[row.report_id].append(version_info(row))
    for report, subject in reports_with_subjects(session, list(found)):
        audit_report_event(
            session,
            principal,
            source_address,
            action="report_versions_read",
            report=report,
            details={"versions": [version.version for version in found[report.id]]},
            subject=subject,
        )
    return found


def record_report_reads(
    session: Session,
    reads: Sequence[tuple[int, int | None]],
    principal: Principal,
    source_address: str | None = None,
) -> None:
    """``report_read`` for each ``(report_id, content_version)`` whose text
    ``principal`` was shown through a batch (``reports_by_id``), as
    ``get_report`` records it: a report's text is read with an audit trail
    whichever way it is reached."""
    shown = dict(reads)
    if not shown:
        return
    for report, subject in reports_with_subjects(session, list(shown)):
        audit_report_event(
            session,
            principal,
            source_address,
            action="report_read",
            report=report,
            details={"status": report.status, "content_version": shown[report.id]},
            subject=subject,
        )
