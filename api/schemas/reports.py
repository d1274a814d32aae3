"""Report shapes: create/update bodies, the report, its versions, critical communications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from api.schemas.worklist import RecordId
from dicom_node.db.types import as_utc
from dicom_node.services.reporting.critical_results import CriticalCommunicationInfo
from dicom_node.services.reporting.versions import ReportVersionInfo
from dicom_node.services.reporting.views import ReportInfo, ReportSummary

MAX_TEXT = 100_000


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here (422), not in the database (500)
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]
ShortText = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)]
Finding = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_no_nul)]
UtcTime = Annotated[AwareDatetime, AfterValidator(as_utc)]
Comment = Annotated[
    str, Field(min_length=1, max_length=10_000, pattern=r"\S"), AfterValidator(_no_nul)
]


class ReportCreate(BaseModel):
    study_id: RecordId
    findings: Text = ""
    impression: Text = ""
    critical_flag: bool = False


class ReportUpdate(BaseModel):
    """Only the fields sent change."""

    findings: Text | None = None
    impression: Text | None = None
    critical_flag: bool | None = None
    expected_updated_at: UtcTime | None = Field(
        default=None,
        description="the updated_at you last read: 409 if the report changed since "
        "(a save from another tab), instead of overwriting it",
    )


class CriticalCommunicationCreate(BaseModel):
    finding: Finding
    communicated_to: ShortText = Field(description="who was told (name, role)")
    method: Literal["phone", "in_person", "secure_message", "other"]
    communicated_at: UtcTime
    acknowledged_at: UtcTime | None = None


class SubmitRequest(BaseModel):
    critical_communication: CriticalCommunicationCreate | None = Field(
        default=None,
        description="record the critical result communication in the same request",
    )


class ReturnRequest(BaseModel):
    comment: Comment = Field(description="why the report goes back to its author")


class AddendumCreate(BaseModel):
    kind: Literal["addendum", "correction"] = "addendum"
    findings: Text | None = Field(default=None, description="the new findings text")
    impression: Text | None = Field(default=None, description="the new impression text")


class AcknowledgeRequest(BaseModel):
    acknowledged_at: UtcTime | None = Field(default=None, description="default: now")


class CriticalCommunicationPublic(BaseModel):
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
    deadline_met: bool | None = Field(description="null until communicated")
    overdue: bool = Field(description="not communicated and past deadline_at")

    @classmethod
    def of(cls, info: CriticalCommunicationInfo) -> CriticalCommunicationPublic:
        return cls(
            id=info.id,
            report_id=info.report_id,
            finding=info.finding,
            identified_at=info.identified_at,
            deadline_at=info.deadline_at,
            communicated_by_id=info.communicated_by_id,
            communicated_to=info.communicated_to,
            method=info.method,
            communicated_at=info.communicated_at,
            acknowledged_at=info.acknowledged_at,
            escalated_at=info.escalated_at,
            deadline_met=info.deadline_met,
            overdue=info.overdue,
        )


class ReportPublic(BaseModel):
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
    current_author_id: int = Field(description="who writes the current text (addendum writer)")
    reviewer_id: int | None
    signed_at: datetime | None
    version: int = Field(description="number of the latest stored version")
    preliminary_at: datetime | None
    first_addendum_at: datetime | None
    created_at: datetime
    updated_at: datetime
    content_version: int | None = Field(
        description="the stored version whose text is shown; null = the working text"
    )
    critical_communications: list[CriticalCommunicationPublic]

    @classmethod
    def of(cls, info: ReportInfo) -> ReportPublic:
        return cls(
            id=info.id,
            study_id=info.study_id,
            study_instance_uid=info.study_instance_uid,
            accession_number=info.accession_number,
            order_id=info.order_id,
            status=info.status,
            findings=info.findings,
            impression=info.impression,
            critical_flag=info.critical_flag,
            author_id=info.author_id,
            current_author_id=info.current_author_id,
            reviewer_id=info.reviewer_id,
            signed_at=info.signed_at,
            version=info.version,
            preliminary_at=info.preliminary_at,
            first_addendum_at=info.first_addendum_at,
            created_at=info.created_at,
            updated_at=info.updated_at,
            content_version=info.content_version,
            critical_communications=[
                CriticalCommunicationPublic.of(row) for row in info.critical_communications
            ],
        )


class ReportSummaryPublic(BaseModel):
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

    @classmethod
    def of(cls, summary: ReportSummary) -> ReportSummaryPublic:
        return cls(
            id=summary.id,
            study_id=summary.study_id,
            study_instance_uid=summary.study_instance_uid,
            accession_number=summary.accession_number,
            status=summary.status,
            critical_flag=summary.critical_flag,
            author_id=summary.author_id,
            reviewer_id=summary.reviewer_id,
            signed_at=summary.signed_at,
            version=summary.version,
            created_at=summary.created_at,
            updated_at=summary.updated_at,
        )


class ReportVersionPublic(BaseModel):
    id: int
    version: int
    kind: str = Field(description="preliminary | returned | final | addendum | correction")
    status: str = Field(description="the report's status this version put it in")
    findings: str
    impression: str
    author_id: int = Field(description="the text's author; for `returned`, the reviewer")
    signed_by_id: int | None
    comment: str | None = Field(description="the reviewer's comment on a `returned` version")
    created_at: datetime

    @classmethod
    def of(cls, info: ReportVersionInfo) -> ReportVersionPublic:
        return cls(
            id=info.id,
            version=info.version,
            kind=info.kind,
            status=info.status,
            findings=info.findings,
            impression=info.impression,
            author_id=info.author_id,
            signed_by_id=info.signed_by_id,
            comment=info.comment,
            created_at=info.created_at,
        )
