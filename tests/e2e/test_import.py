"""`dicom-node import` and `dicom-node reindex` as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance, DicomStudy
from tests.support import SAMPLE_DIR, run

SAMPLES = sorted(SAMPLE_DIR.rglob("*.dcm"))


def _counts(url: str) -> tuple[int, int, list[int]]:
    db = Database(url)
    try:
        with db.read() as session:
            instances = int(session.scalar(select(func.count(DicomInstance.id))) or 0)
            studies = list(session.scalars(select(DicomStudy.instance_count)))
            return instances, len(studies), sorted(studies)
    finally:
        db.dispose()


def test_import_stores_a_folder_reports_refusals_and_skips_dicomdir(
    tmp_path: Path, db_url: str
) -> None:
    source = tmp_path / "cd"
    shutil.copytree(SAMPLE_DIR, source, ignore=shutil.ignore_patterns("*.py"))
    (source / "DICOMDIR").write_bytes(b"not an instance")
    (source / "broken.dcm").write_bytes(SAMPLES[0].read_bytes()[:400])  # cut short
    (source / "README.txt").write_text("not an image")
    first = run(tmp_path, "import", str(source), database_url=db_url)
    assert first.returncode == 1, first.stderr  # one file was refused
    assert f"{len(SAMPLES) + 3} files: {len(SAMPLES)} stored, 1 rejected" in first.stdout
    assert "refused (1): dataset is truncated" in first.stdout
    assert "2 skipped (DICOMDIR or not DICOM Part 10)" in first.stdout
    instances, studies, _ = _counts(db_url)
    assert (instances, studies) == (len(SAMPLES), 4)

    (source / "broken.dcm").unlink()
    again = run(tmp_path, "import", str(source), database_url=db_url)
    assert again.returncode == 0, again.stderr
    assert f"{len(SAMPLES) + 2} files: {len(SAMPLES)} duplicate" in again.stdout
    assert _counts(db_url)[0] == len(SAMPLES)
    db = Database(db_url)
    try:
        with db.read() as session:
            audits = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "instances_imported")
            ).all()
    finally:
        db.dispose()
    assert [a.details["counts"] for a in audits] == [
        {"stored": len(SAMPLES), "rejected": 1},
        {"duplicate": len(SAMPLES)},
    ]


def test_import_of_a_missing_path_is_one_clear_error(tmp_path: Path, db_url: str) -> None:
    result = run(tmp_path, "import", str(tmp_path / "nowhere"), database_url=db_url)
    assert result.returncode == 1
    assert "dicom-node: error: no such file or directory" in result.stderr


def test_reindex_rebuilds_the_index_from_the_store_without_rewriting_files(
    tmp_path: Path, db_url: str, empty_db_url: str
) -> None:
    assert run(tmp_path, "import", str(SAMPLE_DIR), database_url=db_url).returncode == 0
    before = _counts(db_url)
    files = sorted((tmp_path / "data" / "instances").rglob("*.dcm"))
    identity = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}

    rebuilt = run(tmp_path, "reindex", database_url=empty_db_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{len(SAMPLES)} files: {len(SAMPLES)} stored" in rebuilt.stdout
    assert _counts(empty_db_url) == before
    # indexed where they lie: the same inodes, untouched
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == identity
    assert list((tmp_path / "data" / "tmp").iterdir()) == []
