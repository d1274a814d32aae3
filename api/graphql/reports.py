"""Reports, their versions and critical-result communications (REST: /api/reports).

The same services as api/routes/reports.py, so the state machine, who may do
what (only the author edits, another radiologist signs) and the audit events
are REST's. A referring physician reads only signed text of reports on their
orders: the services apply that rule, here as on REST (a report outside it is
NOT_FOUND from ``report``, null through an edge).

Inputs are checked with REST's own request models (api/schemas/reports.py), so
a text with NUL, an empty return comment or a time without a zone is refused
the same way (BAD_USER_INPUT naming the field).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.inputs import given, validated
from api.graphql.relay import Connection
from api.schemas.reports import (
    AcknowledgeRequest,
    AddendumCreate,
    CriticalCommunicationCreate,
    ReportCreate,
    ReportUpdate,
    ReturnRequest,
)
from dicom_node.domain.enums import ReportStatus
from dicom_node.domain.permissions import Permission
from dicom_node.services.reporting.critical_results import (
    CommunicationInput,
    CommunicationMethod,
    CriticalCommunicationInfo,
    acknowledge_critical_communication,
    record_critical_communication,
)
from dicom_node.services.reporting.reports import (
    add_addendum,
    create_report,
    edit_report,
    finalize_report,
    return_report,
    submit_report,
)
from dicom_node.services.reporting.versions import ReportVersionInfo, VersionKind
from dicom_node.services.reporting.views import (
    ReportCore,
    ReportInfo,
    communications_by_report,
    get_report,
    list_reports,
    record_report_reads,
    reports_by_id,
    reports_of_studies,
    versions_by_report,
)

if TYPE_CHECKING:
    from api.graphql.admin import User
    from api.graphql.orders import ImagingRequest
    from api.graphql.studies import DicomStudy


@strawberry.type
class CriticalCommunication:
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
    deadline_met: bool | None = strawberry.field(description="null until communicated")
    overdue: bool = strawberry.field(description="not communicated and past deadlineAt")

    @classmethod
    def of(cls, info: CriticalCommunicationInfo) -> CriticalCommunication:
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


@strawberry.type
class ReportVersion:
    id: int
    version: int
    kind: str = strawberry.field(
        description="preliminary | returned | final | addendum | correction"
    )
    status: str = strawberry.field(description="the report's status this version put it in")
    findings: str
    impression: str
    author_id: int = strawberry.field(description="the text's author; for returned, the reviewer")
    signed_by_id: int | None
    comment: str | None
    created_at: datetime

    @classmethod
    def of(cls, info: ReportVersionInfo) -> ReportVersion:
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


@strawberry.type
class Report:
    id: int
    study_id: int
    study_instance_uid: str
    accession_number: str | None
    order_id: int | None
    status: ReportStatus
    critical_flag: bool
    author_id: int
    current_author_id: int = strawberry.field(
        description="who writes the current text (the addendum writer)"
    )
    reviewer_id: int | None
    signed_at: datetime | None
    version: int = strawberry.field(description="number of the latest stored version")
    preliminary_at: datetime | None
    first_addendum_at: datetime | None
    created_at: datetime
    updated_at: datetime
    content_version: int | None = strawberry.field(
        description="the stored version whose text is shown; null = the working text"
    )
    findings_text: strawberry.Private[str]
    impression_text: strawberry.Private[str]
    # set when the text was read by get_report, which recorded report_read itself
    read_recorded: strawberry.Private[bool] = False

    @classmethod
    def of(cls, info: ReportCore | ReportInfo, *, audited: bool = False) -> Report:
        """``audited``: the service that made ``info`` recorded its own event
        (a detail read or a change), so showing its text adds no report_read."""
        return cls(
            id=info.id,
            study_id=info.study_id,
            study_instance_uid=info.study_instance_uid,
            accession_number=info.accession_number,
            order_id=info.order_id,
            status=ReportStatus(info.status),
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
            findings_text=info.findings,
            impression_text=info.impression,
            read_recorded=audited,
        )

    async def _text_read(self, info: Info[GraphQLContext, None]) -> None:
        # REST audits every read of a report's text (report_read); one event
        # per report and operation, however many text fields are asked
        if not self.read_recorded:
            await info.context.loader(_text_reads).load((self.id, self.content_version))

    @strawberry.field(description="signed text only, for a referring physician; audited")
    async def findings(self, info: Info[GraphQLContext, None]) -> str:
        await self._text_read(info)
        return self.findings_text

    @strawberry.field(description="signed text only, for a referring physician; audited")
    async def impression(self, info: Info[GraphQLContext, None]) -> str:
        await self._text_read(info)
        return self.impression_text

    @strawberry.field(
        description="every stored version, oldest first (final ones only for a referring "
        "physician); audited as REST's versions read",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def versions(self, info: Info[GraphQLContext, None]) -> list[ReportVersion]:
        rows = await info.context.loader(_versions).load(self.id)
        return [ReportVersion.of(row) for row in rows]

    @strawberry.field(
        description="critical-result communications (as signed, for a referring physician)",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def critical_communications(
        self, info: Info[GraphQLContext, None]
    ) -> list[CriticalCommunication]:
        # the finding is the report's text: audited as its text is (report_read)
        await self._text_read(info)
        rows = await info.context.loader(_communications).load(self.id)
        return [CriticalCommunication.of(row) for row in rows]

    @strawberry.field(extensions=[requires(Permission.STUDIES_READ)])
    async def study(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[DicomStudy, strawberry.lazy("api.graphql.studies")] | None:
        from api.graphql.studies import study_by_id

        return await study_by_id(info.context, self.study_id)

    @strawberry.field(extensions=[requires(Permission.ORDERS_READ)])
    async def order(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[ImagingRequest, strawberry.lazy("api.graphql.orders")] | None:
        from api.graphql.orders import order_by_id

        return None if self.order_id is None else await order_by_id(info.context, self.order_id)

    @strawberry.field(
        description="the report's author", extensions=[requires(Permission.REPORTS_READ)]
    )
    async def radiologist(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[User, strawberry.lazy("api.graphql.admin")] | None:
        from api.graphql.admin import user_by_id

        return await user_by_id(info.context, self.author_id)

    @strawberry.field(
        description="who signed it, or is reviewing it",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def reviewer(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[User, strawberry.lazy("api.graphql.admin")] | None:
        from api.graphql.admin import user_by_id

        if self.reviewer_id is None:
            return None
        return await user_by_id(info.context, self.reviewer_id)


# --------------------------------------------------------------------------- loaders


async def _reports(context: GraphQLContext, ids: Sequence[int]) -> Sequence[Report | None]:
    found = await context.read(reports_by_id, ids, context.user)
    return [Report.of(found[key]) if key in found else None for key in ids]


async def _study_reports(
    context: GraphQLContext, study_ids: Sequence[int]
) -> Sequence[Report | None]:
    found = await context.read(reports_of_studies, study_ids, context.user)
    return [Report.of(found[key]) if key in found else None for key in study_ids]


async def _communications(
    context: GraphQLContext, report_ids: Sequence[int]
) -> Sequence[list[CriticalCommunicationInfo]]:
    found = await context.read(communications_by_report, report_ids, context.user)
    return [found[key] for key in report_ids]


async def _versions(
    context: GraphQLContext, report_ids: Sequence[int]
) -> Sequence[list[ReportVersionInfo]]:
    # a write: REST audits every versions read, and so does this
    found = await context.write(versions_by_report, report_ids, context.user, context.address)
    return [found[key] for key in report_ids]


async def _text_reads(
    context: GraphQLContext, reads: Sequence[tuple[int, int | None]]
) -> Sequence[None]:
    await context.write(record_report_reads, reads, context.user, context.address)
    return [None] * len(reads)


async def report_by_id(context: GraphQLContext, report_id: int) -> Report | None:
    """A report by id, batched per operation; None when the caller may not see it."""
    return await context.loader(_reports).load(report_id)


async def report_of_study(context: GraphQLContext, study_id: int) -> Report | None:
    """A study's report (the one REST's study detail shows), batched per operation."""
    return await context.loader(_study_reports).load(study_id)


# --------------------------------------------------------------------------- inputs


@strawberry.input
class CreateReportInput:
    study_id: int
    findings: str = ""
    impression: str = ""
    critical_flag: bool = False


@strawberry.input
class UpdateReportInput:
    """Only the fields sent change."""

    findings: str | None = strawberry.UNSET
    impression: str | None = strawberry.UNSET
    critical_flag: bool | None = strawberry.UNSET
    expected_updated_at: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description="the updatedAt you last read: CONFLICT if the report changed since",
    )


@strawberry.input
class CriticalCommunicationInput:
    finding: str
    communicated_to: str = strawberry.field(description="who was told (name, role)")
    method: CommunicationMethod
    communicated_at: datetime
    acknowledged_at: datetime | None = None


@strawberry.input
class AddendumInput:
    kind: VersionKind = strawberry.field(
        default=VersionKind.ADDENDUM, description="addendum or correction"
    )
    findings: str | None = None
    impression: str | None = None


def _communication(given: CriticalCommunicationInput) -> CommunicationInput:
    body = validated(
        CriticalCommunicationCreate,
        {
            "finding": given.finding,
            "communicated_to": given.communicated_to,
            "method": given.method.value,
            "communicated_at": given.communicated_at,
            "acknowledged_at": given.acknowledged_at,
        },
    )
    return CommunicationInput(
        finding=body.finding,
        communicated_to=body.communicated_to,
        method=CommunicationMethod(body.method),
        communicated_at=body.communicated_at,
        acknowledged_at=body.acknowledged_at,
    )


# --------------------------------------------------------------------------- roots


@strawberry.type
class Query:
    @strawberry.field(
        description="Reports, newest first (text included, as each reader may see it); "
        "audited as REST's listing (110112).",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def reports(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        study_id: int | None = None,
        status: ReportStatus | None = None,
    ) -> Connection[Report]:
        context = info.context
        offset, limit = relay.page_window(first, after)
        page = await context.write(
            list_reports,
            principal=context.user,
            offset=offset,
            limit=limit,
            study_id=study_id,
            status=status,
            source_address=context.address,
        )
        loaded = await asyncio.gather(*(report_by_id(context, item.id) for item in page.items))
        # a report is never deleted; one the listing saw is loaded with it
        nodes = [report for report in loaded if report is not None]
        return relay.connection(nodes, total=page.total, offset=offset)

    @strawberry.field(
        description="One report (signed text only for a referring physician); audited.",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def report(self, info: Info[GraphQLContext, None], id: int) -> Report:
        context = info.context
        found = await context.write(
            get_report, report_id=id, principal=context.user, source_address=context.address
        )
        return Report.of(found, audited=True)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A draft, by the radiologist holding the study's claimed reading item.",
        extensions=[requires(Permission.REPORTS_WRITE)],
    )
    async def create_report(
        self, info: Info[GraphQLContext, None], input: CreateReportInput
    ) -> Report:
        context = info.context
        body = validated(
            ReportCreate,
            {
                "study_id": input.study_id,
                "findings": input.findings,
                "impression": input.impression,
                "critical_flag": input.critical_flag,
            },
        )
        created = await context.write(
            create_report,
            study_id=body.study_id,
            findings=body.findings,
            impression=body.impression,
            critical_flag=body.critical_flag,
            principal=context.user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            source_address=context.address,
        )
        return Report.of(created, audited=True)

    @strawberry.mutation(
        description="Edit a draft (author only); with expectedUpdatedAt, CONFLICT when the "
        "report changed since.",
        extensions=[requires(Permission.REPORTS_WRITE)],
    )
    async def update_report(
        self, info: Info[GraphQLContext, None], id: int, input: UpdateReportInput
    ) -> Report:
        context = info.context
        body = validated(
            ReportUpdate,
            given(
                {
                    "findings": input.findings,
                    "impression": input.impression,
                    "critical_flag": input.critical_flag,
                    "expected_updated_at": input.expected_updated_at,
                }
            ),
        )
        edited = await context.write(
            edit_report,
            report_id=id,
            principal=context.user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            findings=body.findings,
            impression=body.impression,
            critical_flag=body.critical_flag,
            expected_updated_at=body.expected_updated_at,
            source_address=context.address,
        )
        return Report.of(edited, audited=True)

    @strawberry.mutation(
        description="draft/revised -> in_review (author only); a critical report needs a "
        "communication recorded first or given here.",
        extensions=[requires(Permission.REPORTS_WRITE)],
    )
    async def submit_report(
        self,
        info: Info[GraphQLContext, None],
        id: int,
        critical_communication: CriticalCommunicationInput | None = None,
    ) -> Report:
        context = info.context
        communication = _communication(critical_communication) if critical_communication else None
        submitted = await context.write(
            submit_report,
            report_id=id,
            principal=context.user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            communication=communication,
            source_address=context.address,
        )
        return Report.of(submitted, audited=True)

    @strawberry.mutation(
        description="in_review -> draft, with a required comment.",
        extensions=[requires(Permission.REPORTS_FINALIZE)],
    )
    async def return_report(
        self, info: Info[GraphQLContext, None], id: int, comment: str
    ) -> Report:
        context = info.context
        body = validated(ReturnRequest, {"comment": comment})
        returned = await context.write(
            return_report,
            report_id=id,
            comment=body.comment,
            principal=context.user,
            allow_self_review=context.settings.report_self_review,
            source_address=context.address,
        )
        return Report.of(returned, audited=True)

    @strawberry.mutation(
        description="in_review -> final, by a radiologist who is not the author (REST's finalize).",
        extensions=[requires(Permission.REPORTS_FINALIZE)],
    )
    async def sign_report(self, info: Info[GraphQLContext, None], id: int) -> Report:
        context = info.context
        signed = await context.write(
            finalize_report,
            report_id=id,
            principal=context.user,
            allow_self_review=context.settings.report_self_review,
            source_address=context.address,
        )
        return Report.of(signed, audited=True)

    @strawberry.mutation(
        description="After final only: an addendum or correction, submitted and signed again.",
        extensions=[requires(Permission.REPORTS_WRITE)],
    )
    async def addendum(
        self, info: Info[GraphQLContext, None], id: int, input: AddendumInput
    ) -> Report:
        context = info.context
        body = validated(
            AddendumCreate,
            {"kind": input.kind.value, "findings": input.findings, "impression": input.impression},
        )
        amended = await context.write(
            add_addendum,
            report_id=id,
            kind=VersionKind(body.kind),
            principal=context.user,
            findings=body.findings,
            impression=body.impression,
            source_address=context.address,
        )
        return Report.of(amended, audited=True)

    @strawberry.mutation(
        description="Record who told whom about a critical finding, how and when.",
        extensions=[requires(Permission.CRITICAL_COMMUNICATE)],
    )
    async def record_critical_communication(
        self, info: Info[GraphQLContext, None], report_id: int, input: CriticalCommunicationInput
    ) -> CriticalCommunication:
        context = info.context
        recorded = await context.write(
            record_critical_communication,
            report_id=report_id,
            communication=_communication(input),
            principal=context.user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            source_address=context.address,
        )
        return CriticalCommunication.of(recorded)

    @strawberry.mutation(
        description="The recipient acknowledged the communicated finding (default: now).",
        extensions=[requires(Permission.CRITICAL_COMMUNICATE)],
    )
    async def acknowledge_critical_communication(
        self,
        info: Info[GraphQLContext, None],
        report_id: int,
        communication_id: int,
        acknowledged_at: datetime | None = None,
    ) -> CriticalCommunication:
        context = info.context
        body = validated(AcknowledgeRequest, {"acknowledged_at": acknowledged_at})
        acknowledged = await context.write(
            acknowledge_critical_communication,
            report_id=report_id,
            communication_id=communication_id,
            principal=context.user,
            acknowledged_at=body.acknowledged_at,
            source_address=context.address,
        )
        return CriticalCommunication.of(acknowledged)
