"""A report's stored versions: every submit, return, finalize and addendum
keeps the text it acted on as an immutable ``ReportVersion``; earlier
versions stay readable (docs/domain.md#report-states).

``Report.version`` is the number of the latest stored version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import Report, ReportVersion


class VersionKind(StrEnum):
    PRELIMINARY = "preliminary"
    RETURNED = "returned"
    FINAL = "final"
    ADDENDUM = "addendum"
    CORRECTION = "correction"


AMENDMENTS = (VersionKind.ADDENDUM.value, VersionKind.CORRECTION.value)


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


def version_info(row: ReportVersion) -> ReportVersionInfo:
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


def amendment_kind(session: Session, report: Report) -> VersionKind | None:
    """addendum/correction while an amendment is being made (the report was
    final once and amended since), else None (the first cycle)."""
    if report.first_addendum_at is None:
        return None
    kind = session.scalar(
        select(ReportVersion.kind)
        .where(ReportVersion.report_id == report.id, ReportVersion.kind.in_(AMENDMENTS))
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )
    return VersionKind(kind) if kind is not None else None


def store_version(
    session: Session,
    report: Report,
    *,
    kind: VersionKind,
    author_id: int,
    signed_by_id: int | None = None,
    comment: str | None = None,
) -> ReportVersion:
    """The report's current text and status as the next version."""
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


def latest_final(session: Session, report_id: int) -> ReportVersion | None:
    """The text signed last (what a referring physician reads)."""
    return session.scalar(
        select(ReportVersion)
        .where(ReportVersion.report_id == report_id, ReportVersion.kind == VersionKind.FINAL.value)
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )
