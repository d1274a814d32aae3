"""The workflow core at the service level (both databases, no server): a
cancelled reading item gives the study back, an MPPS's reconciliation item is
audited when made, matching names the peer that sent the images, and the
jobs' events name the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime

from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomStudy, ImagingRequest, Patient, WorklistItem
from dicom_node.domain.audit import Actor
from dicom_node.domain.dataset_header import InstanceHeader
from dicom_node.domain.enums import QueueType, Role, WorklistStatus
from dicom_node.services.workflow.completeness import withdraw_from_reading
from dicom_node.services.workflow.matching import match_new_study
from dicom_node.services.workflow.mpps import MppsCreate, ScheduledStepRef, create_mpps
from dicom_node.services.workflow.study_metadata import reject_study
from dicom_node.services.workflow.work_items import close_items
from tests.builders import add_user, claimed_study, new_report


def _status(db: Database, study_id: int) -> str:
    with db.read() as session:
        study = session.get(DicomStudy, study_id)
        assert study is not None
        return study.status


def _items(db: Database, study_id: int, queue: QueueType) -> list[str]:
    with db.read() as session:
        return list(
            session.scalars(
                select(WorklistItem.status)
                .where(
                    WorklistItem.dicom_study_id == study_id,
                    WorklistItem.queue_type == queue.value,
                )
                .order_by(WorklistItem.id)
            )
        )


def _events(db: Database, action: str) -> list[AuditEvent]:
    with db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


# --------------------------------------------------------------------------- bug (a)


def test_a_conflict_cancelling_the_reading_item_gives_the_study_back(db: Database) -> None:
    reader = add_user(db, Role.RADIOLOGIST)
    study = claimed_study(db, reader)
    assert _status(db, study.study_id) == "reading"
    with db.unit_of_work() as session:
        withdraw_from_reading(
            session,
            study.study_id,
            actor=Actor.peer("CT_MAIN_1", "10.0.0.7:104"),
            reason="an instance of another patient",
        )
    assert _items(db, study.study_id, QueueType.READING) == ["cancelled"]
    assert _items(db, study.study_id, QueueType.RECONCILIATION) == ["pending"]
    # nobody is reading it: no report was started
    assert _status(db, study.study_id) == "acquired"
    [moved] = [
        event for event in _events(db, "study_acquired") if event.target_id == str(study.study_id)
    ]
    assert (moved.actor, moved.source_address) == ("CT_MAIN_1", "10.0.0.7:104")
    assert moved.details["before"] == {"status": "reading"}


def test_a_rejection_cancelling_the_reading_item_gives_the_study_back(db: Database) -> None:
    reader, technologist = add_user(db, Role.RADIOLOGIST), add_user(db, Role.TECHNOLOGIST)
    study = claimed_study(db, reader)
    with db.unit_of_work() as session:
        reject_study(
            session,
            principal=technologist,
            study_id=study.study_id,
            reason="wrong patient positioning, repeated",
            source_address="10.0.0.9",
        )
    assert _items(db, study.study_id, QueueType.READING) == ["cancelled"]
    assert _status(db, study.study_id) == "acquired"


def test_a_study_with_a_report_started_stays_reading_when_its_item_is_cancelled(
    db: Database,
) -> None:
    reader = add_user(db, Role.RADIOLOGIST)
    study = claimed_study(db, reader)
    new_report(db, study, reader)
    with db.unit_of_work() as session:
        close_items(
            session,
            study_id=study.study_id,
            queue=QueueType.READING,
            to=WorklistStatus.CANCELLED,
            actor=Actor.peer("CT_MAIN_1"),
            reason="conflict",
        )
    assert _items(db, study.study_id, QueueType.READING) == ["cancelled"]
    # the draft's writer is the one to decide: its status stays as it was
    assert _status(db, study.study_id) == "reading"


# --------------------------------------------------------------------------- bug (b)


def test_an_unscheduled_mpps_opens_an_audited_reconciliation_item(db: Database) -> None:
    study_uid = generate_uid()
    step = create_mpps(
        db,
        MppsCreate(
            sop_instance_uid=generate_uid(),
            status="IN PROGRESS",
            scheduled_steps=[ScheduledStepRef(study_instance_uid=study_uid, accession_number="")],
            started_at=datetime.now(UTC),
        ),
        actor="CT_MAIN_1",
        source_address="10.0.0.7:104",
    )
    with db.read() as session:
        [item] = session.scalars(
            select(WorklistItem).where(WorklistItem.performed_procedure_step_id == step.id)
        ).all()
    assert (item.queue_type, item.status) == ("reconciliation", "pending")
    [created] = [e for e in _events(db, "worklist_item_created") if e.target_id == str(item.id)]
    assert (created.actor, created.source_address) == ("CT_MAIN_1", "10.0.0.7:104")
    assert created.target_class == "WorklistItem"
    assert created.study_instance_uid == study_uid
    assert created.details["after"]["queue_type"] == "reconciliation"
    assert created.details["performed_procedure_step"] == step.sop_instance_uid
    [in_progress] = _events(db, "mpps_in_progress")
    assert in_progress.actor == "CT_MAIN_1"
    assert in_progress.source_address == "10.0.0.7:104"


# --------------------------------------------------------------------------- bug (c)


def test_matching_names_the_peer_that_sent_the_images(db: Database) -> None:
    study_uid = generate_uid()
    with db.unit_of_work() as session:
        order = ImagingRequest(
            patient_id="PEER1",
            patient_name="DOE^JANE",
            accession_number="PEERACC1",
            study_instance_uid=study_uid,
            requested_modality="CT",
            status="scheduled",
        )
        patient = Patient(patient_id="PEER1", patient_name="DOE^JANE")
        session.add_all([order, patient])
        session.flush()
        study = DicomStudy(
            study_instance_uid=study_uid, patient_pk=patient.id, accession_number="PEERACC1"
        )
        session.add(study)
        session.flush()
        status = match_new_study(
            session,
            study_id=study.id,
            header=_header(study_uid, "PEER1", "PEERACC1"),
            now=datetime.now(UTC),
            actor=Actor.peer("CT_MAIN_1", "10.0.0.7:104"),
        )
        order_id = order.id
    assert status.value == "matched"
    [matched] = _events(db, "study_matched")
    [started] = [e for e in _events(db, "order_in_progress") if e.target_id == str(order_id)]
    for event in (matched, started):
        assert (event.actor, event.source_address) == ("CT_MAIN_1", "10.0.0.7:104")


def _header(study_uid: str, patient_id: str, accession: str) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid="",
        sop_instance_uid="",
        study_instance_uid=study_uid,
        series_instance_uid="",
        transfer_syntax_uid="",
        patient_id=patient_id,
        issuer_of_patient_id="",
        patient_name="DOE^JANE",
        patient_birth_date=None,
        patient_sex=None,
        accession_number=accession,
        accession_issuer="",
        modality="CT",
        body_part_examined=None,
        study_date=None,
        study_time=None,
        study_description=None,
        study_id=None,
        referring_physician_name=None,
        series_number=None,
        series_description=None,
        series_date=None,
        series_time=None,
        station_name=None,
        instance_number=None,
        request_attributes=(),
    )
