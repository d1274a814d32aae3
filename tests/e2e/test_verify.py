"""`dicom-node verify`: the index against the files, each kind of damage made on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import delete, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, write
from tests.e2e.test_cli import run


def _store(tmp_path: Path, db_url: str) -> list[str]:
    """Five instances imported through the C-STORE path (four made in code and
    pydicom's CT_small); their paths relative to instances/."""
    study = generate_uid()
    for number in range(4):
        write(
            ct_dataset(study_uid=study, instance_number=number, pixel_seed=number),
            tmp_path / "in" / f"{number}.dcm",
        )
    small = Path(str(get_testdata_file("CT_small.dcm")))
    (tmp_path / "in" / "ct_small.dcm").write_bytes(small.read_bytes())
    result = run(tmp_path, "import", str(tmp_path / "in"), database_url=db_url)
    assert result.returncode == 0, result.stderr
    instances = tmp_path / "data" / "instances"
    return sorted(path.relative_to(instances).as_posix() for path in instances.rglob("*.dcm"))


def _damage(tmp_path: Path, files: list[str]) -> dict[str, str]:
    """One of each problem, made by changing files on disk; kind -> relative path."""
    instances = tmp_path / "data" / "instances"
    (instances / files[0]).unlink()
    with (instances / files[1]).open("ab") as grown:
        grown.write(b"\0\0")
    flipped = instances / files[2]
    data = flipped.read_bytes()
    flipped.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other pixels
    orphan = ct_dataset(study_uid=generate_uid(), patient_id="ORPHAN1")
    relative = FileStore.relative_path(
        orphan.StudyInstanceUID, orphan.SeriesInstanceUID, orphan.SOPInstanceUID
    )
    write(orphan, instances / relative)
    return {"missing": files[0], "size": files[1], "content": files[2], "orphan": relative}


def _section(output: str, kind: str) -> list[str]:
    """The paths listed under one problem kind."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"{kind} ("):
            paths = []
            for item in lines[index + 1 :]:
                if not item.startswith("  "):
                    break
                paths.append(item.strip())
            return paths
    return []


def test_verify_of_a_consistent_store_prints_counts_and_exits_0(
    tmp_path: Path, db_url: str
) -> None:
    _store(tmp_path, db_url)
    # an interrupted transfer's temp file is not the index's business
    (tmp_path / "data" / "tmp" / "abc.part").write_bytes(b"half an instance")
    result = run(tmp_path, "verify", database_url=db_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 indexed instances, 5 files in the store, 5 hashed" in result.stdout
    assert "no problems found" in result.stdout


def test_verify_reports_missing_orphan_size_and_content_problems_by_path(
    tmp_path: Path, db_url: str
) -> None:
    damaged = _damage(tmp_path, _store(tmp_path, db_url))
    result = run(tmp_path, "verify", database_url=db_url)
    assert result.returncode == 1, result.stderr
    for kind, path in damaged.items():
        assert _section(result.stdout, kind) == [path], (kind, result.stdout)
    assert "ORPHAN1" not in result.stdout  # paths only, nothing from the datasets


def test_verify_quick_compares_sizes_without_hashing(tmp_path: Path, db_url: str) -> None:
    damaged = _damage(tmp_path, _store(tmp_path, db_url))
    result = run(tmp_path, "verify", "--quick", database_url=db_url)
    assert result.returncode == 1, result.stderr
    assert "0 hashed" in result.stdout
    for kind in ("missing", "size", "orphan"):
        assert _section(result.stdout, kind) == [damaged[kind]], kind
    assert _section(result.stdout, "content") == []


def test_verify_repair_indexes_the_orphan_reports_the_rest_and_is_audited(
    tmp_path: Path, db_url: str
) -> None:
    damaged = _damage(tmp_path, _store(tmp_path, db_url))
    repaired = run(tmp_path, "verify", "--repair", database_url=db_url)
    # missing and damaged files cannot be repaired from the store: still exit 1
    assert repaired.returncode == 1, repaired.stderr
    assert "repair: 1 orphan files indexed" in repaired.stdout
    after = repaired.stdout.split("after repair:", 1)[1]
    assert _section(after, "orphan") == []
    assert _section(after, "missing") == [damaged["missing"]]

    again = run(tmp_path, "verify", database_url=db_url)
    assert _section(again.stdout, "orphan") == []
    db = Database(db_url)
    try:
        with db.read() as session:
            indexed = session.scalar(
                select(DicomInstance.file_path).where(DicomInstance.file_path == damaged["orphan"])
            )
            repair_events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "integrity_repair")
            ).all()
    finally:
        db.dispose()
    assert indexed == damaged["orphan"]
    assert len(repair_events) == 1
    assert repair_events[0].details["before"]["orphan"] == 1
    assert repair_events[0].details["after"]["orphan"] == 0
    assert repair_events[0].details["after"]["missing"] == 1


def test_repair_finishes_an_interrupted_purge_instead_of_reindexing_it(
    tmp_path: Path, db_url: str
) -> None:
    files = _store(tmp_path, db_url)
    instances = tmp_path / "data" / "instances"
    study_uid = files[0].split("/", 1)[0]
    purged = [path for path in files if path.startswith(f"{study_uid}/")]
    assert len(purged) >= 1
    # retention's first step: rows gone and "Study Deleted" audited; its second
    # step (removing the files) never ran
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            session.execute(delete(DicomInstance).where(DicomInstance.file_path.in_(purged)))
            session.add(
                AuditEvent(
                    event_code="110105",
                    action="study_images_purged",
                    outcome="success",
                    actor="retention",
                    study_instance_uid=study_uid,
                    details={},
                )
            )
        # the same study sent again after the purge, its ingest interrupted before commit
        resent = ct_dataset(study_uid=study_uid, patient_id="PAT1")
        relative = FileStore.relative_path(
            study_uid, resent.SeriesInstanceUID, resent.SOPInstanceUID
        )
        write(resent, instances / relative)
        later = time.time() + 120
        os.utime(instances / relative, (later, later))

        report = run(tmp_path, "verify", database_url=db_url)
        assert report.returncode == 1
        assert _section(report.stdout, "purged") == sorted(purged)
        assert _section(report.stdout, "orphan") == [relative]

        repaired = run(tmp_path, "verify", "--repair", database_url=db_url)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert f"{len(purged)} purge leftovers removed" in repaired.stdout
        assert not any((instances / path).exists() for path in purged)
        with db.read() as session:
            indexed = set(session.scalars(select(DicomInstance.file_path)))
        assert relative in indexed
        assert not indexed & set(purged)
    finally:
        db.dispose()
