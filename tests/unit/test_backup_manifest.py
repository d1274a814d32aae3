"""Hashing stored files and reading backup manifests: pure file-level checks."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID, generate_uid

from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.operations.backup_format import BackupError, format_bytes
from dicom_node.services.operations.restore import read_manifest
from dicom_node.services.operations.verify import FileDigest, digest_file
from tests.dicomfiles import ct_dataset, to_bytes


def _ingest_digest(data: bytes) -> str:
    """What ingest stores in dicom_instances.sha256: the dataset after the file meta."""
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def test_digest_matches_the_index_digest_and_the_whole_file_hash(tmp_path: Path) -> None:
    path = Path(str(get_testdata_file("CT_small.dcm")))
    data = path.read_bytes()
    copy = io.BytesIO()
    found = digest_file(path, copy_to=copy)
    assert found.size == len(data)
    assert found.file_sha256 == hashlib.sha256(data).hexdigest()
    assert found.content_sha256 == _ingest_digest(data)
    assert copy.getvalue() == data


def test_digest_finds_the_dataset_after_a_file_meta_longer_than_the_first_read(
    tmp_path: Path,
) -> None:
    ds = ct_dataset(study_uid=generate_uid())
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.3.4")
    ds.file_meta.PrivateInformation = b"\x01" * 200_000  # (0002,0102) OB, beyond 64 KiB
    data = to_bytes(ds)
    assert dataset_offset(data) > 200_000
    path = tmp_path / "long-meta.dcm"
    path.write_bytes(data)
    assert digest_file(path).content_sha256 == _ingest_digest(data)


def test_digest_of_a_file_that_is_not_part10_matches_no_index_digest(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_bytes(b"not a DICOM file")
    found = digest_file(path)
    assert found.content_sha256 is None
    assert found.size == 16


def _peak_bytes_while(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


DAMAGED_SIZE = 50 * 1024 * 1024


def test_hashing_a_large_file_with_a_damaged_header_keeps_memory_bounded(tmp_path: Path) -> None:
    path = tmp_path / "damaged.dcm"
    data = to_bytes(ct_dataset(study_uid=generate_uid()))
    with path.open("wb") as out:
        out.write(b"\0" * 256 + data[256:])  # the preamble and DICM prefix lost
        out.truncate(DAMAGED_SIZE)
    found: list[FileDigest] = []
    peak = _peak_bytes_while(lambda: found.append(digest_file(path)))
    assert found[0].size == DAMAGED_SIZE
    assert found[0].content_sha256 is None
    assert peak < 4 * 1024 * 1024, peak


def test_a_file_meta_element_longer_than_the_file_is_skipped_not_read(tmp_path: Path) -> None:
    path = tmp_path / "bad-meta.dcm"
    with path.open("wb") as out:
        out.write(b"\0" * 128 + b"DICM")
        # (0002,0001) OB with a length beyond the end of the file
        out.write(struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 60 * 1024 * 1024))
        out.truncate(DAMAGED_SIZE)
    found: list[FileDigest] = []
    peak = _peak_bytes_while(lambda: found.append(digest_file(path)))
    assert found[0].content_sha256 is None
    assert peak < 4 * 1024 * 1024, peak


def _manifest(tmp_path: Path, **changes: object) -> Path:
    backup = tmp_path / "backup"
    backup.mkdir(exist_ok=True)
    manifest: dict[str, object] = {
        "format": "dicom-node-backup",
        "format_version": 1,
        "dicom_node_version": "0.1.0",
        "created_at": "2026-11-01T02:00:00+00:00",
        "schema_revision": "0005",
        "database": {"kind": "sqlite", "file": "database.sqlite3", "size": 1, "sha256": "ab"},
        "counts": {"dicom_instances": 1, "files": 1, "bytes": 10},
        "files": [{"path": "1.2/1.3/1.4.dcm", "size": 10, "sha256": "cd"}],
        **changes,
    }
    (backup / "manifest.json").write_text(json.dumps(manifest))
    return backup


def test_a_well_formed_manifest_is_read(tmp_path: Path) -> None:
    manifest = read_manifest(_manifest(tmp_path))
    assert manifest.database_kind == "sqlite"
    assert manifest.counts == {"dicom_instances": 1}
    assert [item.path for item in manifest.files] == ["1.2/1.3/1.4.dcm"]


@pytest.mark.parametrize(
    "path", ["../../etc/passwd.dcm", "/etc/x.dcm", "1.2/1.3/1.4.txt", "1.2\\..\\x.dcm"]
)
def test_a_manifest_pointing_outside_the_store_is_refused(tmp_path: Path, path: str) -> None:
    backup = _manifest(tmp_path, files=[{"path": path, "size": 1, "sha256": "x"}])
    with pytest.raises(BackupError, match="malformed"):
        read_manifest(backup)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "something-else"}, "not a dicom-node backup manifest"),
        ({"format_version": 99}, "format version 99 is not supported"),
        ({"database": {"kind": "oracle", "file": "x", "size": 1, "sha256": "x"}}, "malformed"),
    ],
)
def test_a_foreign_or_future_manifest_is_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(BackupError, match=message):
        read_manifest(_manifest(tmp_path, **changes))


def test_a_manifest_lists_rows_removed_after_the_snapshot(tmp_path: Path) -> None:
    removed = ["1.2/1.3/1.5.dcm"]
    manifest = read_manifest(_manifest(tmp_path, format_version=2, removed_after_snapshot=removed))
    assert manifest.removed_after_snapshot == ("1.2/1.3/1.5.dcm",)
    assert manifest.to_json()["format_version"] == 2
    assert read_manifest(_manifest(tmp_path)).removed_after_snapshot == ()
    with pytest.raises(BackupError, match="malformed"):
        read_manifest(_manifest(tmp_path, removed_after_snapshot=["../x.dcm"]))


def test_sizes_are_printed_in_binary_units() -> None:
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(4280) == "4.2 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
