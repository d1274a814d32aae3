"""The index writer itself, on real databases: what no error may do to it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.dataset_header import read_header
from dicom_node.services.ingest.index_writer import IndexWriter, Prepared
from dicom_node.services.ingest.instances import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    store_instance,
)
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes

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
