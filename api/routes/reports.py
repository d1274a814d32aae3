"""Reports: draft, edit, submit, return, finalize, addendum, versions, critical results.

The state machine and who may do what are in services/reporting/reports.py; an invalid
transition is 409 with ``current_state``. A referring physician reads only
signed text of reports on orders they placed or are the referrer of (404
otherwise; the one rule of services/access/visibility.py). Every read and
every change is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.reports import (
    AcknowledgeRequest,
    AddendumCreate,
    CriticalCommunicationCreate,
    CriticalCommunicationPublic,
    ReportCreate,
    ReportPublic,
    ReportSummaryPublic,
    ReportUpdate,
    ReportVersionPublic,
    ReturnRequest,
    SubmitRequest,
)
from dicom_node.domain.enums import ReportStatus
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.reporting.critical_results import (
    CommunicationInput,
    CommunicationMethod,
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
from dicom_node.services.reporting.versions import VersionKind
from dicom_node.services.reporting.views import get_report, list_reports, report_versions

router = APIRouter(prefix="/api", tags=["reports"])

ReportId = Annotated[int, Path(ge=1, le=MAX_ID, description="report id")]
CommunicationId = Annotated[int, Path(ge=1, le=MAX_ID, description="communication id")]
Reader = Annotated[Principal, Depends(require(Permission.REPORTS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.REPORTS_WRITE))]
Finalizer = Annotated[Principal, Depends(require(Permission.REPORTS_FINALIZE))]
Communicator = Annotated[Principal, Depends(require(Permission.CRITICAL_COMMUNICATE))]

WRITE_ERRORS = {**AUTH_ERRORS, **NOT_FOUND, **CONFLICT}


def _communication(body: CriticalCommunicationCreate) -> CommunicationInput:
    return CommunicationInput(
        finding=body.finding,
        communicated_to=body.communicated_to,
        method=CommunicationMethod(body.method),
        communicated_at=body.communicated_at,
        acknowledged_at=body.acknowledged_at,
    )


@router.get("/reports", response_model=Page[ReportSummaryPublic], responses=AUTH_ERRORS)
def list_all(
    context: Context,
    user: Reader,
    request: Request,
    study_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: Annotated[ReportStatus | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[ReportSummaryPublic]:
    """Reports (without text), newest first; audited as a query (110112)."""
    with context.db.unit_of_work() as session:
        page = list_reports(
            session,
            principal=user,
            offset=offset,
            limit=limit,
            study_id=study_id,
            status=status,
            source_address=client_address(request),
        )
    return Page[ReportSummaryPublic](
        items=[ReportSummaryPublic.of(item) for item in page.items],
        total=page.total,
        offset=offset,
        limit=limit,
    )


@router.post("/reports", status_code=201, response_model=ReportPublic, responses=WRITE_ERRORS)
def create(context: Context, user: Writer, body: ReportCreate, request: Request) -> ReportPublic:
    """A draft, by the radiologist holding the study's claimed reading item
    (403 otherwise); one report per study (409 with the ``existing`` one)."""
    with context.db.unit_of_work() as session:
        info = create_report(
            session,
            study_id=body.study_id,
            findings=body.findings,
            impression=body.impression,
            critical_flag=body.critical_flag,
            principal=user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.get(
    "/reports/{report_id}", response_model=ReportPublic, responses={**AUTH_ERRORS, **NOT_FOUND}
)
def read(context: Context, user: Reader, report_id: ReportId, request: Request) -> ReportPublic:
    """The report with its critical communications (deadline met / overdue);
    audited. A referring physician gets the latest signed text."""
    with context.db.unit_of_work() as session:
        info = get_report(
            session, report_id=report_id, principal=user, source_address=client_address(request)
        )
    return ReportPublic.of(info)


@router.get(
    "/reports/{report_id}/versions",
    response_model=list[ReportVersionPublic],
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def versions(
    context: Context, user: Reader, report_id: ReportId, request: Request
) -> list[ReportVersionPublic]:
    """Every stored version, oldest first (final ones only for a referring
    physician); audited."""
    with context.db.unit_of_work() as session:
        rows = report_versions(
            session, report_id=report_id, principal=user, source_address=client_address(request)
        )
    return [ReportVersionPublic.of(row) for row in rows]


@router.patch("/reports/{report_id}", response_model=ReportPublic, responses=WRITE_ERRORS)
def edit(
    context: Context, user: Writer, report_id: ReportId, body: ReportUpdate, request: Request
) -> ReportPublic:
    """Edit a draft (or an addendum being written): author only (403); any
    other state is 409 with ``current_state`` (final text is immutable). With
    ``expected_updated_at``, a report changed since that time is 409 too."""
    with context.db.unit_of_work() as session:
        info = edit_report(
            session,
            report_id=report_id,
            principal=user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            findings=body.findings,
            impression=body.impression,
            critical_flag=body.critical_flag,
            expected_updated_at=body.expected_updated_at,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.post("/reports/{report_id}/submit", response_model=ReportPublic, responses=WRITE_ERRORS)
def submit(
    context: Context,
    user: Writer,
    report_id: ReportId,
    request: Request,
    body: SubmitRequest | None = None,
) -> ReportPublic:
    """draft/revised -> in_review (author only). With ``critical_flag`` a
    communication must be recorded first or sent here (422 on
    ``critical_communication`` otherwise)."""
    communication = body.critical_communication if body else None
    with context.db.unit_of_work() as session:
        info = submit_report(
            session,
            report_id=report_id,
            principal=user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            communication=_communication(communication) if communication else None,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.post("/reports/{report_id}/return", response_model=ReportPublic, responses=WRITE_ERRORS)
def send_back(
    context: Context, user: Finalizer, report_id: ReportId, body: ReturnRequest, request: Request
) -> ReportPublic:
    """in_review -> draft, with a required comment (kept as a ``returned`` version)."""
    with context.db.unit_of_work() as session:
        info = return_report(
            session,
            report_id=report_id,
            comment=body.comment,
            principal=user,
            allow_self_review=context.settings.report_self_review,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.post("/reports/{report_id}/finalize", response_model=ReportPublic, responses=WRITE_ERRORS)
def finalize(
    context: Context, user: Finalizer, report_id: ReportId, request: Request
) -> ReportPublic:
    """in_review -> final by a reviewer who is not the author (unless
    ``report_self_review``; 403 otherwise); the study becomes reported."""
    with context.db.unit_of_work() as session:
        info = finalize_report(
            session,
            report_id=report_id,
            principal=user,
            allow_self_review=context.settings.report_self_review,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.post(
    "/reports/{report_id}/addendum",
    status_code=201,
    response_model=ReportPublic,
    responses=WRITE_ERRORS,
)
def addendum(
    context: Context, user: Writer, report_id: ReportId, body: AddendumCreate, request: Request
) -> ReportPublic:
    """After final only: a new version (status revised) that is submitted and
    finalized again; earlier versions stay readable."""
    with context.db.unit_of_work() as session:
        info = add_addendum(
            session,
            report_id=report_id,
            kind=VersionKind(body.kind),
            principal=user,
            findings=body.findings,
            impression=body.impression,
            source_address=client_address(request),
        )
    return ReportPublic.of(info)


@router.post(
    "/reports/{report_id}/critical-communications",
    status_code=201,
    response_model=CriticalCommunicationPublic,
    responses=WRITE_ERRORS,
)
def communicate(
    context: Context,
    user: Communicator,
    report_id: ReportId,
    body: CriticalCommunicationCreate,
    request: Request,
) -> CriticalCommunicationPublic:
    """Record who told whom about a critical finding, how and when."""
    with context.db.unit_of_work() as session:
        info = record_critical_communication(
            session,
            report_id=report_id,
            communication=_communication(body),
            principal=user,
            deadline_minutes=context.settings.critical_result_deadline_minutes,
            source_address=client_address(request),
        )
    return CriticalCommunicationPublic.of(info)


@router.patch(
    "/reports/{report_id}/critical-communications/{communication_id}/acknowledge",
    response_model=CriticalCommunicationPublic,
    responses=WRITE_ERRORS,
)
def acknowledge(
    context: Context,
    user: Communicator,
    report_id: ReportId,
    communication_id: CommunicationId,
    request: Request,
    body: AcknowledgeRequest | None = None,
) -> CriticalCommunicationPublic:
    """The recipient acknowledged the communicated finding."""
    with context.db.unit_of_work() as session:
        info = acknowledge_critical_communication(
            session,
            report_id=report_id,
            communication_id=communication_id,
            principal=user,
            acknowledged_at=body.acknowledged_at if body else None,
            source_address=client_address(request),
        )
    return CriticalCommunicationPublic.of(info)
