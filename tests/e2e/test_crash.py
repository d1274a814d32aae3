"""kill -9 in the middle of a transfer: nothing acknowledged is lost, nothing half-indexed."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomStudy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, write
from tests.support import Served, dcmtk_env, dcmtk_tool


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
