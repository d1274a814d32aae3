"""Critical results: the record that a critical finding was told to someone,
its deadline, and its acknowledgement (docs/domain.md#critical-result-communication-states).

Setting ``critical_flag`` on a report opens a communication record with
``deadline_at = identified_at + critical_result_deadline_minutes``. Submitting
or finalizing a report with ``critical_flag`` requires at least one record with
``communicated_at`` (who told whom, how, when): otherwise 422 naming the
missing ``critical_communication``. A record made when the communication is
recorded (no pending one) is identified at min(now, communicated_at); filling
a pending record with a communicated_at before its identified_at is 422
(``communicated_at``): a finding is never told before it was identified.

A record past its deadline with nothing communicated is *missed*
(``missed_deadlines``): listed by ``overdue_critical_communications`` and
escalated once by ``reporting/escalation.py``, which opens a ``critical_comm``
work item for the study; recording the communication completes that item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from dicom_node.db.models import CriticalResultCommunication, Report
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import TargetKind
from dicom_node.domain.enums import QueueType, ReportStatus, WorklistStatus
from dicom_node.domain.errors import Conflict, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.reporting.records import audit_report_event, locked_report
from dicom_node.services.workflow.work_items import close_items


class CommunicationMethod(StrEnum):
    PHONE = "phone"
    IN_PERSON = "in_person"
    SECURE_MESSAGE = "secure_message"
    OTHER = "other"


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
class CommunicationInput:
    finding: str
    communicated_to: str
    method: CommunicationMethod
    communicated_at: datetime
    acknowledged_at: datetime | None = None


def communication_info(
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


def communications(session: Session, report_id: int) -> list[CriticalResultCommunication]:
    """The report's records, oldest first."""
    return list(
        session.scalars(
            select(CriticalResultCommunication)
            .where(CriticalResultCommunication.report_id == report_id)
            .order_by(CriticalResultCommunication.id)
        )
    )


def signed_communication(row: CriticalResultCommunication, signed_at: datetime | None) -> bool:
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


def signed_critical_flag(report: Report) -> bool:
    """The flag a referring physician sees.

    A ReportVersion does not keep the flag, so the value signed last is only
    known for certain while the report is final (content frozen); during an
    addendum cycle the working flag may be unsigned and is shown as False (the
    signed text itself still states the finding)."""
    return report.critical_flag and report.status == ReportStatus.FINAL.value


def critical_finding(report: Report) -> str:
    """What a record opened by the flag names: the impression, else the findings."""
    return (report.impression or report.findings or "critical finding")[:2000]


def open_critical(
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


def told_since_signed(session: Session, report: Report) -> bool:
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


def require_communicated(session: Session, report: Report) -> None:
    """A flagged report is submitted or signed only once the finding was told
    (422 naming ``critical_communication`` otherwise)."""
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


def record_communication(
    session: Session,
    report: Report,
    communication: CommunicationInput,
    *,
    principal: Principal,
    deadline_minutes: int,
    source_address: str | None,
) -> CriticalResultCommunication:
    """Fill the report's pending record (or a new one) with who told whom,
    how and when; audited ``critical_result_communicated``. The caller holds
    the report locked."""
    if communication.communicated_at > utcnow() + timedelta(minutes=5):
        raise InvalidValue("communicated_at is in the future", field="communicated_at")
    if (
        communication.acknowledged_at is not None
        and communication.acknowledged_at < communication.communicated_at
    ):
        raise InvalidValue("acknowledged_at is before communicated_at", field="acknowledged_at")
    # made now, the finding was identified at the latest when it was told:
    # identified_at never after communicated_at (no negative turnaround)
    row = open_critical(
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
    audit_report_event(
        session,
        principal,
        source_address,
        action="critical_result_communicated",
        report=report,
        target=(TargetKind.CRITICAL_COMMUNICATION, row.id),
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
    _complete_critical_item(session, report, principal=principal, source_address=source_address)
    return row


def _complete_critical_item(
    session: Session, report: Report, *, principal: Principal, source_address: str | None
) -> None:
    """The study's critical_comm item (opened by escalation, reporting/escalation.py)
    is done once no escalated finding of the report is left untold: completed
    by whoever recorded the communication (``worklist_item_completed``). Left
    open, it stayed in the queue for ever and kept retention from purging
    the study."""
    still_missed = session.scalar(
        select(CriticalResultCommunication.id)
        .where(
            CriticalResultCommunication.report_id == report.id,
            CriticalResultCommunication.communicated_at.is_(None),
            CriticalResultCommunication.escalated_at.is_not(None),
        )
        .limit(1)
    )
    if still_missed is not None:
        return
    close_items(
        session,
        study_id=report.dicom_study_id,
        queue=QueueType.CRITICAL_COMM,
        to=WorklistStatus.COMPLETED,
        actor=user_actor(principal, source_address),
        reason=f"critical result of report {report.id} communicated",
    )


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
    report = locked_report(session, report_id)
    row = record_communication(
        session,
        report,
        communication,
        principal=principal,
        deadline_minutes=deadline_minutes,
        source_address=source_address,
    )
    return communication_info(row, utcnow())


def acknowledge_critical_communication(
    session: Session,
    *,
    report_id: int,
    communication_id: int,
    principal: Principal,
    acknowledged_at: datetime | None = None,
    source_address: str | None = None,
) -> CriticalCommunicationInfo:
    """communicated -> acknowledged (the recipient confirmed), once."""
    report = locked_report(session, report_id)
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
    audit_report_event(
        session,
        principal,
        source_address,
        action="critical_result_acknowledged",
        report=report,
        target=(TargetKind.CRITICAL_COMMUNICATION, row.id),
        details={
            "before": {"acknowledged_at": None},
            "after": {"acknowledged_at": moment.isoformat()},
            "report_id": report.id,
        },
    )
    return communication_info(row, utcnow())


def missed_deadlines(now: datetime) -> Select[CriticalResultCommunication]:
    """The records of flagged reports past their deadline at ``now`` and never
    communicated, oldest deadline first: the one selection the listing and
    the escalation use. The report is tested with EXISTS, not joined, so a
    caller locking the records (FOR UPDATE) locks no report row."""
    flagged_report = exists().where(
        Report.id == CriticalResultCommunication.report_id, Report.critical_flag.is_(True)
    )
    return (
        select(CriticalResultCommunication)
        .where(
            flagged_report,
            CriticalResultCommunication.communicated_at.is_(None),
            CriticalResultCommunication.deadline_at < now,
        )
        .order_by(CriticalResultCommunication.deadline_at, CriticalResultCommunication.id)
    )


def overdue_critical_communications(
    session: Session, now: datetime
) -> list[CriticalCommunicationInfo]:
    """Critical findings of flagged reports past their deadline and never
    communicated, oldest deadline first."""
    return [communication_info(row, now) for row in session.scalars(missed_deadlines(now))]
