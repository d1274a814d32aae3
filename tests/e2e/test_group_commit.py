"""Group commit over real associations, on SQLite and PostgreSQL.

The index writer is held still by a transaction of the test's own (SQLite: the
write lock; PostgreSQL: a study row the writer must lock), so the instances the
associations send meanwhile are provably waiting in its queue together; what
they are answered once it is released must be what sending them one after the
other would have given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.metrics import REGISTRY
from dicom_node.node import Node
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset
from tests.support import StoreSender, wait_for

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _synced() -> float:
    """Instances whose file is durable: each is handed to the writer right after."""
    return _sample("dicom_node_ingest_stage_seconds_count", stage="sync")


def _commits() -> tuple[float, float]:
    """(commits, instances they held) of the index writers of this process."""
    return (
        _sample("dicom_node_ingest_batch_instances_count"),
        _sample("dicom_node_ingest_batch_instances_sum"),
    )


def _send(port: int, ds: Dataset) -> StoreSender:
    """Start sending ``ds`` and return once its file is synced, so it is (about
    to be) in the writer's queue, behind what was sent before."""
    before = _synced()
    sending = StoreSender(port, ds)
    sending.start()
    assert wait_for(lambda: _synced() > before, timeout=30)
    return sending


@contextmanager
def _writer_held(db_url: str, study_uid: str) -> Iterator[None]:
    """Hold the node's index writer: SQLite's write lock, or (PostgreSQL) the
    row of ``study_uid``, which every instance of that study locks first."""
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            if db.dialect == "postgresql":
                session.execute(
                    select(DicomStudy.id)
                    .where(DicomStudy.study_instance_uid == study_uid)
                    .with_for_update()
                ).one()
            yield
    finally:
        db.dispose()


def _store_one(node: Node, ds: Dataset) -> int | None:
    sending = StoreSender(node.dicom_port, ds)
    sending.run()
    return sending.status


def _blocked_writer(db_url: str) -> bool:
    """PostgreSQL: a session of this database waits for a row lock (the writer)."""
    db = Database(db_url)
    try:
        with db.read() as session:
            waiting = session.scalar(
                text(
                    "select count(*) from pg_stat_activity where datname = current_database()"
                    " and wait_event_type = 'Lock'"
                )
            )
        return bool(waiting)
    finally:
        db.dispose()


def _rows(db_url: str) -> dict[str, DicomInstance]:
    db = Database(db_url)
    try:
        with db.read() as session:
            return {i.sop_instance_uid: i for i in session.scalars(select(DicomInstance))}
    finally:
        db.dispose()


def _check_files_and_counters(db_url: str, store: FileStore) -> None:
    """Every row has its complete file; the counters agree with the rows."""
    db = Database(db_url)
    try:
        with db.read() as session:
            for instance in session.scalars(select(DicomInstance)):
                data = store.absolute(instance.file_path).read_bytes()
                digest = hashlib.sha256(data[dataset_offset(data) :]).hexdigest()
                assert digest == instance.sha256
            for study in session.scalars(select(DicomStudy)):
                rows = session.scalar(
                    select(func.count(DicomInstance.id))
                    .join(DicomSeries)
                    .where(DicomSeries.study_pk == study.id)
                )
                assert study.instance_count == rows
    finally:
        db.dispose()


def _blocker(node: Node) -> tuple[str, Dataset]:
    """A study already indexed, whose row the test locks to hold the writer."""
    study = generate_uid()
    assert _store_one(node, ct_dataset(study_uid=study, instance_number=1)) == SUCCESS
    return study, ct_dataset(study_uid=study, instance_number=2, pixel_seed=2)


def test_instances_sent_meanwhile_are_committed_together(node: Node, db_url: str) -> None:
    blocking_study, blocked = _blocker(node)
    others = [
        ct_dataset(study_uid=study, instance_number=n, pixel_seed=n)
        for study in (generate_uid(), generate_uid())
        for n in range(1, 4)
    ]
    commits_before, instances_before = _commits()
    with _writer_held(db_url, blocking_study):
        senders = [_send(node.dicom_port, blocked)]
        senders += [_send(node.dicom_port, ds) for ds in others]
        assert all(s.status is None for s in senders)  # nothing answered while held
    for sender in senders:
        sender.join(timeout=60)
    assert [s.status for s in senders] == [SUCCESS] * 7

    commits, instances = _commits()
    assert instances - instances_before == 7
    # the six sent while the writer was held did not take a commit each
    assert commits - commits_before < 7, (commits - commits_before, instances - instances_before)
    rows = _rows(db_url)
    assert {ds.SOPInstanceUID for ds in [blocked, *others]} <= rows.keys()
    assert node.store is not None
    _check_files_and_counters(db_url, node.store)


def test_one_instance_failing_in_a_batch_fails_alone(node: Node, db_url: str) -> None:
    assert node.store is not None
    blocking_study, blocked = _blocker(node)
    good = [ct_dataset(study_uid=generate_uid(), pixel_seed=n) for n in range(3)]
    bad = ct_dataset(study_uid=generate_uid(), pixel_seed=9)
    # where its series directory should go lies a file: its rename fails (OSError)
    blocked_dir = node.store.instances / bad.StudyInstanceUID / bad.SeriesInstanceUID
    blocked_dir.parent.mkdir(parents=True)
    blocked_dir.write_bytes(b"not a directory")
    with _writer_held(db_url, blocking_study):
        senders = [_send(node.dicom_port, ds) for ds in (blocked, good[0], bad, *good[1:])]
    for sender in senders:
        sender.join(timeout=60)
    statuses = [s.status for s in senders]
    assert statuses == [SUCCESS, SUCCESS, OUT_OF_RESOURCES, SUCCESS, SUCCESS], statuses

    rows = _rows(db_url)
    assert {ds.SOPInstanceUID for ds in [blocked, *good]} <= rows.keys()
    assert bad.SOPInstanceUID not in rows
    db = Database(db_url)
    try:
        with db.read() as session:  # its SAVEPOINT took its study and series with it
            assert (
                session.scalar(
                    select(DicomStudy.id).where(
                        DicomStudy.study_instance_uid == bad.StudyInstanceUID
                    )
                )
                is None
            )
    finally:
        db.dispose()
    _check_files_and_counters(db_url, node.store)
    assert list(node.store.tmp.iterdir()) == []

    blocked_dir.unlink()  # the operator fixed the disk: the resend is stored
    assert _store_one(node, bad) == SUCCESS


def test_the_same_instance_twice_in_a_batch_is_a_resend(node: Node, db_url: str) -> None:
    assert node.store is not None
    blocking_study, blocked = _blocker(node)
    study = generate_uid()
    first = ct_dataset(study_uid=study, instance_number=1, pixel_seed=1)
    other_content = ct_dataset(study_uid=study, instance_number=1, pixel_seed=99)
    other_content.SOPInstanceUID = first.SOPInstanceUID
    other_content.SeriesInstanceUID = first.SeriesInstanceUID
    neighbour = ct_dataset(study_uid=study, instance_number=2, pixel_seed=2)
    neighbour.SeriesInstanceUID = first.SeriesInstanceUID
    stored = _sample("dicom_node_instances_received_total", outcome="stored")
    duplicate = _sample("dicom_node_instances_received_total", outcome="duplicate")
    kept = _sample("dicom_node_instances_received_total", outcome="kept_existing")
    commits_before, _ = _commits()
    with _writer_held(db_url, blocking_study):
        senders = [
            _send(node.dicom_port, ds) for ds in (blocked, first, first, other_content, neighbour)
        ]
    for sender in senders:
        sender.join(timeout=60)
    assert [s.status for s in senders] == [SUCCESS] * 5
    commits, _ = _commits()
    assert commits - commits_before < 5

    # as if sent one after the other: one stored, the copy a duplicate, the
    # other content kept out (policy keep)
    assert _sample("dicom_node_instances_received_total", outcome="stored") - stored == 3
    assert _sample("dicom_node_instances_received_total", outcome="duplicate") - duplicate == 1
    assert _sample("dicom_node_instances_received_total", outcome="kept_existing") - kept == 1
    db = Database(db_url)
    try:
        with db.read() as session:
            study_row = session.scalars(
                select(DicomStudy).where(DicomStudy.study_instance_uid == study)
            ).one()
            assert (study_row.instance_count, study_row.series_count) == (2, 1)
            conflicts = session.scalar(
                select(func.count(AuditEvent.id)).where(
                    AuditEvent.action == "instance_content_conflict",
                    AuditEvent.target_id == first.SOPInstanceUID,
                )
            )
            assert conflicts == 1
    finally:
        db.dispose()
    _check_files_and_counters(db_url, node.store)
    assert list(node.store.tmp.iterdir()) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # via its sessions
def test_a_failed_commit_fails_the_whole_batch_and_indexes_none_of_it(
    node: Node, db_url: str, backend: str
) -> None:
    """The writer is stopped mid-batch: the first instance of its batch indexed
    and renamed into place, the second waiting for the study row the test holds.
    The test's transaction then dies with the database's terminating every
    session of it (PostgreSQL): the batch cannot commit."""
    assert node.store is not None
    blocking_study, blocked = _blocker(node)
    held_study, held_next = _blocker(node)
    # a batch takes its instances in StudyInstanceUID order: the new study's first
    new_study = next(uid for uid in iter(generate_uid, None) if uid < held_study)
    first_of_batch = ct_dataset(study_uid=new_study, pixel_seed=5)
    db = Database(db_url)
    try:
        with db.unit_of_work() as holder:
            holder.execute(
                select(DicomStudy.id)
                .where(DicomStudy.study_instance_uid == held_study)
                .with_for_update()
            ).one()
            with _writer_held(db_url, blocking_study):
                senders = [_send(node.dicom_port, blocked)]
                # the writer has taken it, alone, and waits for its study row
                assert wait_for(lambda: _blocked_writer(db_url), timeout=30)
                # the next batch: one new study, then one of the held study
                senders.append(_send(node.dicom_port, first_of_batch))
                senders.append(_send(node.dicom_port, held_next))
            assert wait_for(lambda: senders[0].status is not None, timeout=30)
            assert wait_for(lambda: _blocked_writer(db_url), timeout=30)
            installed = node.store.absolute(
                FileStore.relative_path(
                    first_of_batch.StudyInstanceUID,
                    first_of_batch.SeriesInstanceUID,
                    first_of_batch.SOPInstanceUID,
                )
            )
            assert installed.exists()  # renamed in, not committed: provably mid-batch
            # every other session of the database ends: the writer's transaction too
            holder.execute(
                text(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where datname = current_database() and pid <> pg_backend_pid()"
                )
            )
    finally:
        db.dispose()
    for sender in senders:
        sender.join(timeout=60)
    assert [s.status for s in senders] == [SUCCESS, OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    rows = _rows(db_url)
    assert first_of_batch.SOPInstanceUID not in rows
    assert held_next.SOPInstanceUID not in rows
    # the database answered that no row points at it: the file it had placed is gone
    assert not installed.exists()
    assert list(node.store.tmp.iterdir()) == []
    _check_files_and_counters(db_url, node.store)
    # the modality's retry
    assert _store_one(node, first_of_batch) == SUCCESS
    assert _store_one(node, held_next) == SUCCESS
