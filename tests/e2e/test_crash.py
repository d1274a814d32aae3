"""kill -9 in the middle of a transfer: nothing acknowledged is lost, nothing half-indexed."""

from __future__ import annotations

import hashlib
import re
import subprocess
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomStudy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.operations.verify import ProblemKind, verify_store
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, write
from tests.support import Served, StoreSender, dcmtk_env, dcmtk_tool, wait_for


def _acknowledged(storescu_log: str) -> list[str]:
    """Files whose C-STORE got a Success response, from `storescu -v` output."""
    done, current = [], None
    for line in storescu_log.splitlines():
        if match := re.search(r"Sending file: (\S+)", line):
            current = match.group(1)
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


@pytest.mark.parametrize("workers", ["1", "2"], ids=["in-process", "2-workers"])
def test_sigkill_mid_transfer_loses_no_acknowledged_instance(
    tmp_path: Path, empty_db_url: str, served: list[Served], workers: str
) -> None:
    study = generate_uid()
    files = [
        write(
            ct_dataset(study_uid=study, instance_number=n, pixel_seed=n),
            tmp_path / "send" / f"{n:04d}.dcm",
        )
        for n in range(400)
    ]
    node = Served(tmp_path, database_url=empty_db_url, dicom_workers=workers)
    served.append(node)
    dicom_port, _ = node.ports()
    client = subprocess.Popen(
        [
            dcmtk_tool("storescu"),
            "-v",
            "-aec",
            "DICOM_NODE",
            "-R",
            "127.0.0.1",
            str(dicom_port),
            *map(str, files),
        ],
        env=dcmtk_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Let part of the study through, then kill every node process without warning.
    assert client.stdout is not None
    lines: list[str] = []
    for line in client.stdout:
        lines.append(line)
        if len(_acknowledged("".join(lines))) >= 50:
            break
    node.kill_all()
    rest, _ = client.communicate(timeout=60)
    acknowledged = _acknowledged("".join(lines) + rest)
    assert 50 <= len(acknowledged) < len(files), rest[-2000:]

    restarted = Served(tmp_path, database_url=empty_db_url, dicom_workers=workers)
    served.append(restarted)
    restarted.ports()
    assert restarted.stop() == 0

    db = Database(empty_db_url)
    store = FileStore(tmp_path / "data")
    try:
        with db.read() as session:
            indexed = {i.sop_instance_uid: i for i in session.scalars(select(DicomInstance))}
            counts = session.execute(
                select(DicomStudy.instance_count, DicomStudy.series_count)
            ).one()
    finally:
        db.dispose()
    for path in acknowledged:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert uid in indexed, f"acknowledged instance {uid} lost"
    for instance in indexed.values():  # every indexed row has its complete file
        data = store.absolute(instance.file_path).read_bytes()
        assert hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == instance.sha256
    # the counters agree with the rows: no increment without its instance, none lost
    assert tuple(counts) == (len(indexed), len({i.series_pk for i in indexed.values()}))
    assert store.sweep_temp(older_than_seconds=0) <= 1  # at most the one in flight


_METRICS_TOKEN = "crash-test-metrics-token"


def _synced(http_port: int) -> float:
    """Instances whose file the node has synced (the step before the index writer)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/metrics",
        headers={"Authorization": f"Bearer {_METRICS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
        for line in response.read().decode().splitlines():
            if line.startswith('dicom_node_ingest_stage_seconds_count{stage="sync"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _lock_waits(db: Database) -> int:
    """Sessions of the database waiting for a row lock (the node's index writer)."""
    with db.read() as session:
        return int(
            session.scalar(
                text(
                    "select count(*) from pg_stat_activity where datname = current_database()"
                    " and wait_event_type = 'Lock'"
                )
            )
            or 0
        )


def _lock_study(session: Session, study_uid: str) -> None:
    session.execute(
        select(DicomStudy.id).where(DicomStudy.study_instance_uid == study_uid).with_for_update()
    ).one()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # held by a row lock
def test_sigkill_while_the_index_writer_is_mid_batch(
    tmp_path: Path, empty_db_url: str, backend: str, served: list[Served]
) -> None:
    """The writer provably mid-batch: the first instance of its batch indexed and
    renamed into place, uncommitted, the second waiting for a study row the test
    holds (PostgreSQL shows the wait). kill -9 then: what was acknowledged is
    indexed, nothing of the batch is, its placed file is an orphan verify finds."""
    node = Served(
        tmp_path, database_url=empty_db_url, dicom_workers="1", metrics_token=_METRICS_TOKEN
    )
    served.append(node)
    port, http_port = node.ports()

    def store(ds: Dataset) -> int | None:
        sending = StoreSender(port, ds)
        sending.run()
        return sending.status

    blocking_study = generate_uid()
    # a batch takes its instances in StudyInstanceUID order: the new study's first
    new_study, held_study = sorted(generate_uid() for _ in range(2))
    assert store(ct_dataset(study_uid=blocking_study, pixel_seed=1)) == 0
    assert store(ct_dataset(study_uid=held_study, pixel_seed=2)) == 0
    acknowledged_before = ct_dataset(study_uid=blocking_study, instance_number=2, pixel_seed=3)
    first_of_batch = ct_dataset(study_uid=new_study, pixel_seed=4)
    blocked_in_batch = ct_dataset(study_uid=held_study, instance_number=2, pixel_seed=5)

    db = Database(empty_db_url)
    store_dir = FileStore(tmp_path / "data")
    placed = store_dir.absolute(
        FileStore.relative_path(
            first_of_batch.StudyInstanceUID,
            first_of_batch.SeriesInstanceUID,
            first_of_batch.SOPInstanceUID,
        )
    )
    senders: list[StoreSender] = []
    try:
        with db.unit_of_work() as held, db.unit_of_work() as blocking:
            _lock_study(held, held_study)
            _lock_study(blocking, blocking_study)
            senders.append(StoreSender(port, acknowledged_before))
            senders[0].start()
            # the writer took it alone and waits for the blocking study's row
            assert wait_for(lambda: _lock_waits(db) >= 1, timeout=30)
            # queued behind it, in this order: each file synced, then handed to the
            # writer at once
            for synced, ds in ((4, first_of_batch), (5, blocked_in_batch)):
                senders.append(StoreSender(port, ds))
                senders[-1].start()
                assert wait_for(lambda n=synced: _synced(http_port) == n, timeout=30)
            blocking.rollback()  # the writer commits that one and takes the other two
            assert wait_for(lambda: senders[0].status is not None, timeout=30)
            assert senders[0].status == 0
            # first of the batch placed (not committed), second waiting for the held
            # row (other sessions may wait too: for the audit chain the batch holds)
            assert wait_for(lambda: placed.exists() and _lock_waits(db) >= 1, timeout=30), (
                placed.exists(),
                _lock_waits(db),
                [s.status for s in senders],
                node.lines[-20:],
            )
            node.kill_all()
            held.rollback()
    finally:
        db.dispose()
    for sender in senders[1:]:
        sender.join(timeout=60)
        assert sender.status is None  # never acknowledged

    restarted = Served(tmp_path, database_url=empty_db_url, dicom_workers="1")
    served.append(restarted)
    restarted.ports()
    assert restarted.stop() == 0

    db = Database(empty_db_url)
    try:
        with db.read() as session:
            indexed = {i.sop_instance_uid: i for i in session.scalars(select(DicomInstance))}
            for study in session.scalars(select(DicomStudy)):
                rows = sum(1 for i in indexed.values() if i.series.study_pk == study.id)
                assert study.instance_count == rows
            assert session.scalar(select(func.count(DicomStudy.id))) == 2  # none of the batch
        assert acknowledged_before.SOPInstanceUID in indexed
        assert first_of_batch.SOPInstanceUID not in indexed
        assert blocked_in_batch.SOPInstanceUID not in indexed
        for instance in indexed.values():
            data = store_dir.absolute(instance.file_path).read_bytes()
            assert hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == instance.sha256
        report = verify_store(db, store_dir)
    finally:
        db.dispose()
    placed_relative = placed.relative_to(store_dir.instances).as_posix()
    assert report.problems == {ProblemKind.ORPHAN: (placed_relative,)}, report.describe()
