"""Scheduling orders: identifiers assigned once, worklist and images agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomStudy, ImagingCenter, ImagingRequest, Modality
from dicom_node.domain.errors import Conflict
from dicom_node.domain.vr import is_valid_uid
from dicom_node.services.ingest.instances import IngestPolicy, Source, store_instance
from dicom_node.services.query.modality_worklist import find_scheduled_steps
from dicom_node.services.workflow.orders import schedule_order
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes

SLOT = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)


def _order_and_modality(db: Database) -> tuple[int, int]:
    with db.unit_of_work() as session:
        center = ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        modality = Modality(
            imaging_center_id=center.id, name="CT 1", type="CT", dicom_ae_title="CT_ONE"
        )
        order = ImagingRequest(
            patient_id="PAT9",
            patient_name="ROE^ANN",
            patient_name_folded="roe^ann",
            patient_birth_date="19800101",
            patient_sex="F",
            study_description="CT HEAD",
        )
        session.add_all([modality, order])
        session.flush()
        return order.id, modality.id


def _schedule(db: Database, order_id: int, modality_id: int, at: datetime) -> ImagingRequest:
    with db.unit_of_work() as session:
        order = session.get(ImagingRequest, order_id)
        modality = session.get(Modality, modality_id)
        assert order is not None and modality is not None
        return schedule_order(session, order, modality=modality, scheduled_at=at, actor="sched")


def test_scheduling_assigns_identifiers_once_and_the_worklist_returns_them(
    db: Database, tmp_path: Path
) -> None:
    order_id, modality_id = _order_and_modality(db)
    first = _schedule(db, order_id, modality_id, SLOT)
    assert first.status == "scheduled"
    assert first.accession_number and len(first.accession_number) <= 16
    uid = first.study_instance_uid
    assert uid and uid.startswith("2.25.") and is_valid_uid(uid)

    later = _schedule(db, order_id, modality_id, SLOT + timedelta(hours=2))  # reschedule
    assert (later.accession_number, later.study_instance_uid) == (first.accession_number, uid)

    result = find_scheduled_steps(
        db,
        top={"AccessionNumber": "", "StudyInstanceUID": ""},
        step={"ScheduledStationAETitle": "CT_ONE"},
        limit=10,
        actor="CT_ONE",
    )
    (step,) = result.steps
    assert step.top["StudyInstanceUID"] == uid
    assert step.top["AccessionNumber"] == first.accession_number

    # images made with the worklist's UID match the order
    store = FileStore(tmp_path / "store", fsync=False)
    image = ct_dataset(study_uid=uid, patient_id="PAT9", patient_name="ROE^ANN", sex="F",
                       birth_date="19800101")  # fmt: skip
    store_instance(db, store, part10=to_bytes(image), source=Source(), policy=IngestPolicy())
    with db.read() as session:
        study = session.scalars(select(DicomStudy)).one()
        actions = list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.target_class == "ImagingRequest")
            )
        )
    assert (study.metadata_status, study.imaging_request_id) == ("matched", order_id)
    assert actions == ["order_scheduled", "order_rescheduled", "order_in_progress"]


def test_an_order_past_scheduling_cannot_be_scheduled_again_and_the_conflict_names_its_state(
    db: Database,
) -> None:
    order_id, modality_id = _order_and_modality(db)
    _schedule(db, order_id, modality_id, SLOT)
    with db.unit_of_work() as session:
        order = session.get(ImagingRequest, order_id)
        assert order is not None
        order.status = "performed"
    with pytest.raises(Conflict) as refused:
        _schedule(db, order_id, modality_id, SLOT)
    assert refused.value.current == "performed"
