"""The index writer itself, on real databases: what no error may do to it."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import cast

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, func, select, text

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.dataset_header import read_header
from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.ingest.index_writer import IndexWriter, Prepared, commit_batch
from dicom_node.services.ingest.instances import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    store_instance,
)
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import wait_for

SOURCE = Source(calling_ae_title="CT_MAIN_1", address="127.0.0.1:5000")


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def _instances(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count(DicomInstance.id))) or 0)


def test_an_unexpected_error_fails_its_batch_and_the_writer_goes_on(
    db: Database, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = IndexWriter(db)
    try:
        # a programming error inside the transaction (no source to index), not a
        # database refusal
        header = read_header(to_bytes(ct_dataset(study_uid=generate_uid())))
        broken = Prepared(
            header, "0" * 64, 1, cast(Source, None), IngestPolicy(), store, None, None
        )
        assert writer.submit(broken).outcome is StoreOutcome.FAILED
        assert "index writer: unexpected error" in caplog.text
        good = to_bytes(ct_dataset(study_uid=generate_uid()))
        result = store_instance(
            db, store, part10=good, source=SOURCE, policy=IngestPolicy(), writer=writer
        )
        assert result.outcome is StoreOutcome.STORED
    finally:
        writer.close()
    assert _instances(db) == 1


def test_close_commits_what_is_queued_and_later_instances_are_committed_inline(
    db: Database, store: FileStore
) -> None:
    writer = IndexWriter(db, max_batch=2)
    study = generate_uid()
    results: list[StoreResult] = []

    def send(n: int) -> None:
        data = to_bytes(ct_dataset(study_uid=study, instance_number=n, pixel_seed=n))
        results.append(
            store_instance(
                db, store, part10=data, source=SOURCE, policy=IngestPolicy(), writer=writer
            )
        )

    senders = [threading.Thread(target=send, args=(n,)) for n in range(1, 7)]
    for sender in senders:
        sender.start()
    # whether each was queued before close (drained) or came after it (inline),
    # every one is answered and committed
    writer.close()
    for sender in senders:
        sender.join(timeout=60)
    send(7)  # after close: this caller's thread commits it, still a batch of one
    assert [r.outcome for r in results] == [StoreOutcome.STORED] * 7
    assert _instances(db) == 7
    assert list(store.tmp.iterdir()) == []


def _prepared(store: FileStore, data: bytes, policy: IngestPolicy) -> Prepared:
    """An instance as an association thread hands it over: header read, temp file written."""
    temp = store.write_temp(data)
    digest = hashlib.sha256(data[dataset_offset(data) :]).hexdigest()
    return Prepared(
        read_header(data), digest, len(data), SOURCE, policy, store, temp, temp.stat().st_ino
    )


def test_an_instance_replaced_twice_in_one_batch_keeps_the_file_its_row_points_at(
    db: Database, store: FileStore
) -> None:
    """Stored as C, replaced by A (its copy at <sop>.<A>.dcm), then one batch
    holds B and A again: A's copy goes back to <sop>.<A>.dcm, which is also B's
    old path. Removing each replaced instance's old path after the commit
    deleted the file the committed row pointed at, and both were answered
    Success (review finding)."""
    policy = IngestPolicy(duplicate_policy="replace")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()

    def content(seed: int) -> bytes:
        return to_bytes(
            ct_dataset(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=seed)
        )

    first, a, b = content(1), content(2), content(3)
    for data, outcome in ((first, StoreOutcome.STORED), (a, StoreOutcome.REPLACED)):
        result = store_instance(db, store, part10=data, source=SOURCE, policy=policy)
        assert result.outcome is outcome
    results = commit_batch(db, [_prepared(store, b, policy), _prepared(store, a, policy)])
    assert [r.outcome for r in results] == [StoreOutcome.REPLACED, StoreOutcome.REPLACED]
    with db.read() as session:
        path = session.scalar(
            select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
        )
    assert path is not None
    assert store.absolute(path).read_bytes() == a  # the row's file, with A's content
    # B's copy, replaced within the batch, is not left behind as an orphan
    assert [p.name for p in store.instances.rglob("*.dcm")] == [store.absolute(path).name]


# SQLite has one writers' lock: no lock-order cycle between writers
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_deadlock_victim_in_a_batch_is_committed_after_the_rest(
    db: Database, db_url: str, backend: str, store: FileStore
) -> None:
    """Two writers (two worker processes, two nodes) each holding a study row the
    other needs: PostgreSQL cancels one waiting statement. Had the whole batch
    failed, every instance in it would have been answered A700; the victim's
    SAVEPOINT alone rolls back, the rest commits (freeing the other side) and
    the victim is committed after it. Here the other side is a plain session."""
    other = create_engine(db_url)
    with other.connect() as conn:
        # Whose statement PostgreSQL cancels: the first waiter's deadlock check
        # runs first, deadlock_timeout after it began waiting. The batch waits
        # first; 5 s (not 1 s) leave this test's second lock well within that
        # time on a loaded machine. Set before any connection of this database.
        name = conn.execute(text("select current_database()")).scalar()
        conn.execute(text(f"alter database {name} set deadlock_timeout = '5s'"))
        conn.commit()
    other.dispose()
    first, second = sorted(generate_uid() for _ in range(2))  # the batch's lock order
    for study in (first, second):
        stored = store_instance(
            db,
            store,
            part10=to_bytes(ct_dataset(study_uid=study)),
            source=SOURCE,
            policy=IngestPolicy(),
        )
        assert stored.outcome is StoreOutcome.STORED
    batch = [
        _prepared(store, to_bytes(ct_dataset(study_uid=s, instance_number=2)), IngestPolicy())
        for s in (first, second)
    ]
    results: list[StoreResult] = []
    try:
        with other.connect() as conn:
            lock = "select id from dicom_studies where study_instance_uid = :uid for update"
            conn.execute(text(lock), {"uid": second})
            writer = threading.Thread(target=lambda: results.extend(commit_batch(db, batch)))
            writer.start()
            # the batch holds the first study and waits for the second
            waiting = "select count(*) from pg_stat_activity where datname = current_database()"
            assert wait_for(
                lambda: conn.execute(text(waiting + " and wait_event_type = 'Lock'")).scalar() == 1,
                timeout=20,
            )
            # now this session waits for the first: a cycle; the batch waited
            # first, so its deadlock check runs first and cancels its own statement
            conn.execute(text(lock), {"uid": first})
            conn.rollback()
            writer.join(timeout=30)
            assert not writer.is_alive()
    finally:
        other.dispose()
    assert [r.outcome for r in results] == [StoreOutcome.STORED, StoreOutcome.STORED]
    assert _instances(db) == 4
