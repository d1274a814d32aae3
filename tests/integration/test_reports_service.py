"""Reports at the service level, without a server, on both databases: who
reads a signed report (the one visibility rule), and the critical_comm work
item an escalation opens, completed when the communication is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, CriticalResultCommunication, WorklistItem
from dicom_node.domain.enums import QueueType, Role
from dicom_node.domain.errors import NotFound
from dicom_node.services.reporting.critical_results import (
    CommunicationInput,
    CommunicationMethod,
    record_critical_communication,
)
from dicom_node.services.reporting.escalation import escalate
from dicom_node.services.reporting.reports import submit_report
from dicom_node.services.reporting.views import get_report, list_reports, report_versions
from dicom_node.services.workflow.worklist_listing import (
    WorklistEntry,
    WorklistFilter,
    list_worklist,
)
from tests.builders import (
    DEADLINE_MINUTES,
    add_user,
    claimed_study,
    new_report,
    signed_report,
)

# --------------------------------------------------------------------------- visibility


def test_the_referrer_of_an_order_reads_its_signed_report_and_no_other_physician_does(
    db: Database,
) -> None:
    author = add_user(db, Role.RADIOLOGIST)
    reviewer = add_user(db, Role.RADIOLOGIST)
    referrer = add_user(db, Role.REFERRING_PHYSICIAN)
    other = add_user(db, Role.REFERRING_PHYSICIAN)
    scheduler = add_user(db, Role.SCHEDULER)
    # booked by a scheduler for the referrer: the referrer did not place it
    study = claimed_study(
        db, author, referring_physician_id=referrer.user_id, requested_by_id=scheduler.user_id
    )
    report_id = signed_report(db, study, author, reviewer)

    with db.unit_of_work() as session:
        read = get_report(session, report_id=report_id, principal=referrer)
        versions = report_versions(session, report_id=report_id, principal=referrer)
        listed = list_reports(session, principal=referrer, offset=0, limit=10)
    assert (read.status, read.impression, read.content_version) == ("final", "Normal.", 2)
    assert [(v.kind, v.version) for v in versions] == [("final", 2)]
    assert [item.id for item in listed.items] == [report_id] and listed.total == 1

    with db.unit_of_work() as session:
        with pytest.raises(NotFound):
            get_report(session, report_id=report_id, principal=other)
        with pytest.raises(NotFound):
            report_versions(session, report_id=report_id, principal=other)
        assert list_reports(session, principal=other, offset=0, limit=10).total == 0


# --------------------------------------------------------------------------- critical_comm


def _telephoned() -> CommunicationInput:
    return CommunicationInput(
        finding="Tension pneumothorax",
        communicated_to="Dr Ward, ED attending",
        method=CommunicationMethod.PHONE,
        communicated_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("recorded_by", ["record_critical_communication", "submit_report"])
def test_recording_the_missed_communication_completes_its_critical_comm_item(
    db: Database, recorded_by: str
) -> None:
    author = add_user(db, Role.RADIOLOGIST)
    study = claimed_study(db, author)
    report_id = new_report(db, study, author, critical_flag=True)
    # the deadline passed: set in the past rather than waited for
    with db.unit_of_work() as session:
        session.execute(
            update(CriticalResultCommunication)
            .where(CriticalResultCommunication.report_id == report_id)
            .values(deadline_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    with db.unit_of_work() as session:
        assert escalate(session, now=datetime.now(UTC)).critical_items_opened == 1
        item_id = session.scalar(
            select(WorklistItem.id).where(WorklistItem.queue_type == QueueType.CRITICAL_COMM.value)
        )
        assert item_id is not None
        assert [e.id for e in _critical_queue(session)] == [item_id]

    with db.unit_of_work() as session:
        if recorded_by == "record_critical_communication":
            record_critical_communication(
                session,
                report_id=report_id,
                communication=_telephoned(),
                principal=author,
                deadline_minutes=DEADLINE_MINUTES,
            )
        else:
            submit_report(
                session,
                report_id=report_id,
                principal=author,
                deadline_minutes=DEADLINE_MINUTES,
                communication=_telephoned(),
            )

    with db.read() as session:
        item = session.get(WorklistItem, item_id)
        assert item is not None
        assert (item.status, item.assigned_to_id) == ("completed", author.user_id)
        assert item.completed_at is not None
        assert _critical_queue(session) == []
        completed = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "worklist_item_completed",
                AuditEvent.target_id == str(item_id),
            )
        ).all()
        assert [(e.target_class, e.actor_user_id) for e in completed] == [
            ("WorklistItem", author.user_id)
        ]
    # nothing is left to escalate, and no item is opened again
    with db.unit_of_work() as session:
        later = escalate(session, now=datetime.now(UTC) + timedelta(hours=1))
        assert (later.critical_escalated, later.critical_items_opened) == (0, 0)


def _critical_queue(session: Session) -> list[WorklistEntry]:
    return list_worklist(
        session, query=WorklistFilter(queue=QueueType.CRITICAL_COMM), offset=0, limit=10
    ).items
