"""A C-STORE racing a retention purge of its study, on real databases.

The purge deletes the study's series and instance rows in one transaction
holding the study row lock, and removes the files once that has committed. An
instance arriving meanwhile must wait for the purge and then be stored afresh:
never acknowledged against rows the purge is deleting (its row and file would
go with them), never failed because its series went away under it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text, update

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Report,
    User,
    WorklistItem,
)
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.jobs.workflow import run_study_stability
from dicom_node.services.ingest.instances import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    store_instance,
)
from dicom_node.services.operations.retention import purge_next_study, remove_purged_files
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import backdate_study

SOURCE = Source(calling_ae_title="CT_MAIN_1", address="127.0.0.1:5000")
KEEP = IngestPolicy(duplicate_policy="keep")
RETENTION_DAYS = 365


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def put(db: Database, store: FileStore, data: bytes) -> StoreResult:
    return store_instance(db, store, part10=data, source=SOURCE, policy=KEEP)


def _purgeable_study(db: Database, store: FileStore) -> tuple[list[bytes], str, str]:
    """A study past retention with its reading done: two CT images of one series,
    matched to its order, acquisition complete, work items closed, a final report
    signed after the images. (The images' bytes, study UID, series UID.)"""
    received = datetime.now(UTC) - timedelta(days=RETENTION_DAYS + 35)
    study_uid, series_uid = generate_uid(), generate_uid()
    with db.unit_of_work() as session:
        session.add(
            ImagingRequest(
                patient_id="PAT1",
                patient_name="DOE^JANE",
                patient_name_folded="doe^jane",
                patient_birth_date="19700101",
                patient_sex="F",
                accession_number="ACC1",
                study_instance_uid=generate_uid(),
                requested_modality="CT",
                status="scheduled",
            )
        )
    images = [
        to_bytes(
            ct_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                accession="ACC1",
                instance_number=number,
                pixel_seed=number,
            )
        )
        for number in (1, 2)
    ]
    for data in images:
        assert put(db, store, data).outcome is StoreOutcome.STORED
    later = datetime.now(UTC) + timedelta(minutes=5)
    for _ in range(2):
        run_study_stability(db, stable_seconds=1, sla=SlaPolicy(), now=later)
    with db.unit_of_work() as session:
        study = session.scalars(
            select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid)
        ).one()
        assert (study.metadata_status, study.completeness) == ("matched", "complete")
        session.execute(
            update(WorklistItem)
            .where(WorklistItem.dicom_study_id == study.id)
            .values(status="completed")
        )
        radiologist = User(username="rad1", password_hash="x", role="radiologist", display_name="R")
        session.add(radiologist)
        session.flush()
        session.add(
            Report(
                dicom_study_id=study.id,
                radiologist_id=radiologist.id,
                status="final",
                findings="normal",
                impression="normal",
                signed_at=received + timedelta(days=1),
            )
        )
        backdate_study(session, study.id, received)
    return images, study_uid, series_uid


def _wait_until_blocked(db: Database, backend: str, sender: threading.Thread) -> None:
    """Until the sender waits on a lock (PostgreSQL: a backend of this database
    waits on one), or has finished without waiting. SQLite's writer lock cannot
    be watched from here: the sender is given a moment to reach it."""
    if backend != "postgresql":
        sender.join(0.5)
        return
    deadline = time.monotonic() + 10
    while sender.is_alive() and time.monotonic() < deadline:
        with db.read() as session:
            waiting = session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        time.sleep(0.02)


@pytest.mark.parametrize("arrival", ["resend", "new_instance"])
def test_an_instance_arriving_during_a_purge_waits_for_it_and_is_stored_afresh(
    db: Database, store: FileStore, backend: str, arrival: str
) -> None:
    images, study_uid, series_uid = _purgeable_study(db, store)
    data = (
        images[0]  # the modality sends an image of the study again, unchanged
        if arrival == "resend"
        else to_bytes(  # or one more image of its series
            ct_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                accession="ACC1",
                instance_number=3,
                pixel_seed=3,
            )
        )
    )
    results: list[StoreResult] = []
    sender = threading.Thread(target=lambda: results.append(put(db, store, data)))
    with db.unit_of_work() as session:
        found = purge_next_study(
            session,
            cutoff=datetime.now(UTC) - timedelta(days=RETENTION_DAYS),
            after_id=0,
            retention_days=RETENTION_DAYS,
            actor="scheduler",
        )
        # the study's rows are deleted, not yet committed
        assert found is not None and found[1] is not None
        sender.start()
        _wait_until_blocked(db, backend, sender)
    sender.join(30)
    assert not sender.is_alive()
    remove_purged_files(db, store, found[1])  # as run_retention goes on

    (result,) = results
    assert result.outcome is StoreOutcome.STORED
    with db.read() as session:
        instance = session.scalars(
            select(DicomInstance).where(DicomInstance.sop_instance_uid == result.sop_instance_uid)
        ).one()
        study = session.scalars(
            select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid)
        ).one()
        instances = session.scalar(select(func.count(DicomInstance.id)))
        series = session.scalars(select(DicomSeries)).one()
    stored = store.absolute(instance.file_path).read_bytes()
    assert stored == data
    assert instance.sha256 == hashlib.sha256(stored[dataset_offset(stored) :]).hexdigest()
    # the purge took the rest; the series is back, with the one image
    assert instances == 1
    assert (series.series_instance_uid, series.study_pk, series.instance_count) == (
        series_uid,
        study.id,
        1,
    )
    assert (study.instance_count, study.series_count, study.modalities_in_study) == (1, 1, "CT")
