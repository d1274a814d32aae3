"""The escalation job: overdue worklist items and missed critical-result deadlines,
each escalated once, audited, and in the change feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    ChangeLogEntry,
    CriticalResultCommunication,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
    User,
    WorklistItem,
)
from dicom_node.jobs.escalation import EscalationResult, run_escalation

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _study(session: Session, number: int) -> tuple[int, int, str]:
    """(order id, study id, study UID) of a new order with its study."""
    order = ImagingRequest(
        patient_id=f"P{number}",
        patient_name="DOE^JANE",
        patient_name_folded="doe^jane",
        accession_number=f"A{number}",
        requested_modality="CT",
        status="performed",
    )
    patient = Patient(patient_id=f"P{number}", patient_name="DOE^JANE")
    session.add_all([order, patient])
    session.flush()
    uid = generate_uid()
    study = DicomStudy(
        study_instance_uid=uid,
        patient_pk=patient.id,
        imaging_request_id=order.id,
        accession_number=f"A{number}",
    )
    session.add(study)
    session.flush()
    return order.id, study.id, uid


def _item(session: Session, study_id: int, order_id: int, *, status: str, due_at: datetime) -> int:
    item = WorklistItem(
        imaging_request_id=order_id,
        dicom_study_id=study_id,
        queue_type="reading",
        status=status,
        priority="routine",
        priority_rank=2,
        due_at=due_at,
    )
    session.add(item)
    session.flush()
    return item.id


def _critical_report(
    session: Session, study_id: int, *, deadline_at: datetime, communicated: bool = False
) -> tuple[int, int]:
    """(report id, communication id) of a final critical report."""
    radiologist = User(
        username=f"rad-{study_id}", password_hash="x", role="radiologist", display_name="R"
    )
    session.add(radiologist)
    session.flush()
    report = Report(
        dicom_study_id=study_id,
        radiologist_id=radiologist.id,
        status="final",
        critical_flag=True,
        signed_at=deadline_at - timedelta(minutes=60),
    )
    session.add(report)
    session.flush()
    communication = CriticalResultCommunication(
        report_id=report.id,
        finding="tension pneumothorax",
        identified_at=deadline_at - timedelta(minutes=60),
        deadline_at=deadline_at,
        communicated_by_id=radiologist.id if communicated else None,
        communicated_to="Dr. Ward" if communicated else None,
        method="phone" if communicated else None,
        communicated_at=deadline_at - timedelta(minutes=5) if communicated else None,
    )
    session.add(communication)
    session.flush()
    return report.id, communication.id


def _events(db: Database, action: str) -> list[AuditEvent]:
    with db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def _item_changes(db: Database, item_id: int) -> list[ChangeLogEntry]:
    with db.read() as session:
        return list(
            session.scalars(
                select(ChangeLogEntry)
                .where(
                    ChangeLogEntry.entity == "worklist_item", ChangeLogEntry.entity_id == item_id
                )
                .order_by(ChangeLogEntry.seq)
            )
        )


def test_open_items_past_due_are_flagged_overdue_once_with_audit_and_change_feed(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        order_id, study_id, uid = _study(session, 1)
        pending = _item(session, study_id, order_id, status="pending", due_at=NOW - timedelta(1))
        claimed = _item(
            session, study_id, order_id, status="claimed", due_at=NOW - timedelta(minutes=1)
        )
        not_yet_due = _item(
            session, study_id, order_id, status="pending", due_at=NOW + timedelta(minutes=1)
        )
        completed = _item(
            session, study_id, order_id, status="completed", due_at=NOW - timedelta(1)
        )

    result = run_escalation(db, now=NOW)

    assert result == EscalationResult(
        items_flagged_overdue=2, critical_escalated=0, critical_items_opened=0
    )
    with db.read() as session:
        overdue = {item.id: item.overdue for item in session.scalars(select(WorklistItem))}
    assert overdue == {pending: True, claimed: True, not_yet_due: False, completed: False}
    events = _events(db, "worklist_item_overdue")
    assert [e.target_id for e in events] == [str(pending), str(claimed)]
    assert events[0].target_class == "WorklistItem"
    assert events[0].details["before"] == {"overdue": False}
    assert events[0].details["after"] == {"overdue": True}
    assert (events[0].study_instance_uid, events[0].accession_number, events[0].patient_id) == (
        uid,
        "A1",
        "P1",
    )
    for item_id in (pending, claimed):
        feed = _item_changes(db, item_id)
        assert [(c.action, c.payload["overdue"]) for c in feed] == [
            ("created", False),
            ("updated", True),
        ]
    assert [c.action for c in _item_changes(db, not_yet_due)] == ["created"]

    # a second run at the same time, or later, flags nothing again
    assert run_escalation(db, now=NOW) == EscalationResult(0, 0, 0)
    assert run_escalation(db, now=NOW + timedelta(seconds=30)) == EscalationResult(0, 0, 0)
    assert len(_events(db, "worklist_item_overdue")) == 2
    assert len(_item_changes(db, pending)) == 2


def test_a_critical_result_past_its_deadline_is_escalated_once_with_a_critical_comm_item(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        order_id, study_id, uid = _study(session, 2)
        report_id, missed = _critical_report(
            session, study_id, deadline_at=NOW - timedelta(minutes=1)
        )
        _, study_in_time, _ = _study(session, 3)
        _, not_yet = _critical_report(session, study_in_time, deadline_at=NOW + timedelta(1))
        _, study_told, _ = _study(session, 4)
        _, communicated = _critical_report(
            session, study_told, deadline_at=NOW - timedelta(minutes=1), communicated=True
        )

    result = run_escalation(db, now=NOW)

    assert result == EscalationResult(
        items_flagged_overdue=0, critical_escalated=1, critical_items_opened=1
    )
    with db.read() as session:
        escalated = {
            c.id: c.escalated_at for c in session.scalars(select(CriticalResultCommunication))
        }
        items = session.scalars(select(WorklistItem)).all()
        item = items[0]
        assert len(items) == 1
        assert (item.queue_type, item.status, item.priority, item.priority_rank) == (
            "critical_comm",
            "pending",
            "stat",
            0,
        )
        assert (item.dicom_study_id, item.imaging_request_id, item.due_at) == (
            study_id,
            order_id,
            NOW,
        )
    assert escalated == {missed: NOW, not_yet: None, communicated: None}
    events = _events(db, "critical_result_escalated")
    assert len(events) == 1
    event = events[0]
    assert (event.target_class, event.target_id, event.outcome) == (
        "CriticalResultCommunication",
        str(missed),
        "minor_failure",
    )
    assert event.details["report_id"] == report_id
    assert event.details["critical_comm_item_id"] == item.id
    assert datetime.fromisoformat(event.details["deadline_at"]) == NOW - timedelta(minutes=1)
    assert (event.study_instance_uid, event.accession_number, event.patient_id) == (uid, "A2", "P2")
    assert [c.action for c in _item_changes(db, item.id)] == ["created"]
    # the item is made where every work item is made, and audited as one
    (created,) = _events(db, "worklist_item_created")
    assert (created.target_class, created.target_id, created.actor) == (
        "WorklistItem",
        str(item.id),
        "scheduler",
    )
    assert created.details["after"]["queue_type"] == "critical_comm"
    assert created.study_instance_uid == uid

    # a second run at the same time is a no-op
    assert run_escalation(db, now=NOW) == EscalationResult(0, 0, 0)
    assert len(_events(db, "critical_result_escalated")) == 1
    with db.read() as session:
        assert len(session.scalars(select(WorklistItem)).all()) == 1


def test_a_second_missed_deadline_on_a_study_reuses_its_open_critical_comm_item(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        _, study_id, _ = _study(session, 5)
        _critical_report(session, study_id, deadline_at=NOW - timedelta(minutes=2))
    assert run_escalation(db, now=NOW) == EscalationResult(0, 1, 1)
    with db.unit_of_work() as session:
        report = session.scalars(select(Report)).one()
        session.add(
            CriticalResultCommunication(
                report_id=report.id,
                finding="second finding",
                deadline_at=NOW + timedelta(minutes=1),
            )
        )

    later = NOW + timedelta(minutes=2)
    result = run_escalation(db, now=later)

    # the open critical_comm item (due at NOW) is now overdue itself
    assert result == EscalationResult(1, 1, 0)
    with db.read() as session:
        items = session.scalars(select(WorklistItem)).all()
    assert [(i.queue_type, i.status, i.overdue) for i in items] == [
        ("critical_comm", "pending", True)
    ]
    second = _events(db, "critical_result_escalated")[1]
    assert second.details["critical_comm_item_id"] == items[0].id
