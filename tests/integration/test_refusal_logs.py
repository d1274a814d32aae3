"""A flood of refused instances writes a handful of log lines whose counts add up."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.db.engine import Database
from dicom_node.log_limit import flush_all
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes

KEEP = IngestPolicy(duplicate_policy="keep")
FLOOD = Source(calling_ae_title="FLOOD_SCU", address="127.0.0.1:5000")
PATIENT_ID = "FLOODPAT42"
PATIENT_NAME = "FLOODNAME^ANNA"
SUFFIX = re.compile(r" \((\d+) more like this in the last \d+ s\)$")
INSTANCES = 200


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=True)


def _instances(count: int) -> list[bytes]:
    study = generate_uid()
    return [
        to_bytes(
            ct_dataset(
                study_uid=study, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, instance_number=i
            )
        )
        for i in range(count)
    ]


def _lines(caplog: pytest.LogCaptureFixture, starting: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "dicom_node.ingest" and r.getMessage().startswith(starting)
    ]


def _accounted(records: list[logging.LogRecord]) -> int:
    """Each line stands for itself plus the count in its suffix."""
    return sum(1 + int(m.group(1)) if (m := SUFFIX.search(r.getMessage())) else 1 for r in records)


def _no_identifiers(caplog: pytest.LogCaptureFixture, uids: list[str]) -> None:
    assert PATIENT_ID not in caplog.text
    assert "FLOODNAME" not in caplog.text
    assert not [uid for uid in uids if uid in caplog.text]


def test_200_instances_refused_for_a_uid_mismatch_log_a_handful_of_lines_counting_all(
    db: Database, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    command_uids = []
    for part10 in _instances(INSTANCES):
        command_uids.append(generate_uid())
        result = store_instance(
            db,
            store,
            part10=part10,
            source=FLOOD,
            policy=KEEP,
            expected_sop_instance_uid=command_uids[-1],
        )
        assert result.outcome is StoreOutcome.MISMATCH  # every instance answered A900
    # a refusal of another kind is not held back by the flood
    other = store_instance(
        db,
        store,
        part10=_instances(1)[0],
        source=FLOOD,
        policy=KEEP,
        expected_sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
    )
    assert other.outcome is StoreOutcome.MISMATCH
    refused = "instance from FLOOD_SCU refused: "
    assert [r.getMessage() for r in _lines(caplog, refused + "SOPClassUID")] == [
        refused + "SOPClassUID differs from the command's Affected SOP Class"
    ]

    flush_all()  # what is held back when the episode ends is written out, not lost
    mismatch = _lines(caplog, refused + "SOPInstanceUID differs")
    assert 2 <= len(mismatch) <= 5, [r.getMessage() for r in mismatch]
    assert mismatch[0].getMessage() == (
        refused + "SOPInstanceUID differs from the command's Affected SOP Instance"
    )
    assert all(r.levelno == logging.WARNING for r in mismatch)
    assert _accounted(mismatch) == INSTANCES
    _no_identifiers(caplog, command_uids)


def test_200_instances_not_stored_for_lack_of_storage_log_a_handful_of_error_lines(
    db: Database, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # the temp directory is gone and a file is in its place: every write fails
    shutil.rmtree(store.tmp)
    store.tmp.write_bytes(b"")
    instances = _instances(INSTANCES)
    for part10 in instances:
        result = store_instance(db, store, part10=part10, source=FLOOD, policy=KEEP)
        assert result.outcome is StoreOutcome.FAILED
        assert result.reason == "storage unavailable"
    flush_all()
    failed = _lines(caplog, "instance not stored (storage unavailable): cannot write the file: ")
    assert 2 <= len(failed) <= 5, [r.getMessage() for r in failed]
    assert all(r.levelno == logging.ERROR for r in failed)
    assert _accounted(failed) == INSTANCES
    _no_identifiers(caplog, [])

    # storage back: the resends are stored
    store.tmp.unlink()
    store.tmp.mkdir()
    assert store_instance(db, store, part10=instances[0], source=FLOOD, policy=KEEP).outcome is (
        StoreOutcome.STORED
    )
