"""`dicom-node backup` / `restore` as an operator runs them, while a modality sends."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import inspect, select

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    DicomStudy,
    ImagingRequest,
    Report,
    ReportVersion,
    User,
)
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.part10 import dataset_offset
from dicom_node.jobs.backup import complete_backups, run_scheduled_backup
from dicom_node.node import Node
from dicom_node.services.ingest.importing import ImportSummary, import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.services.operations.backup import create_backup
from dicom_node.services.operations.backup_format import BackupCancelled
from dicom_node.services.operations.demo import load_demo
from dicom_node.services.operations.restore import postgres_objects, restore_backup
from dicom_node.services.operations.verify import IntegrityReport, verify_store
from dicom_node.storage import FileStore
from tests.conftest import node_settings
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, write
from tests.support import COMMAND, assert_one_line_error, clean_env, run

SUCCESS = 0x0000


class Sender:
    """A modality sending CT instances on and on, remembering what was acknowledged."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acknowledged: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def snapshot(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)

    def _run(self) -> None:
        ae = AE(ae_title="CT_BACKUP")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        number = 0
        while not self.stop.is_set():
            # a new study (and association) every 20 instances
            assoc = ae.associate("127.0.0.1", self.port, ae_title="DICOM_NODE")
            if not assoc.is_established:
                self.errors.append("association refused")
                return
            study, series = generate_uid(), generate_uid()
            try:
                for _ in range(20):
                    if self.stop.is_set():
                        break
                    number += 1
                    ds = ct_dataset(
                        study_uid=study,
                        series_uid=series,
                        instance_number=number,
                        pixel_seed=number,
                    )
                    status = assoc.send_c_store(ds)
                    if status and status.Status == SUCCESS:
                        with self.lock:
                            self.acknowledged.append(str(ds.SOPInstanceUID))
            finally:
                assoc.release()


def _seed_orders_reports_and_audit(node: Node, study_uid: str) -> None:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        load_demo(session, password="demo-password-for-backup", actor=SystemActor.CLI)
    with node.db.unit_of_work() as session:
        radiologist = session.scalars(
            select(User).where(User.role == Role.RADIOLOGIST.value).order_by(User.id)
        ).first()
        study = session.scalar(select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid))
        assert radiologist is not None and study is not None
        report = Report(
            dicom_study_id=study.id,
            radiologist_id=radiologist.id,
            findings="No acute findings.",
            impression="Normal study.",
        )
        session.add(report)
        session.flush()
        session.add(
            ReportVersion(
                report_id=report.id,
                version=1,
                kind="preliminary",
                status="in_review",
                findings=report.findings,
                impression=report.impression,
                author_id=radiologist.id,
            )
        )


def _state(url: str) -> dict[str, Any]:
    """What must survive a backup: orders, reports, report versions, audit events."""
    db = Database(url)
    try:
        with db.read() as session:
            return {
                "orders": {
                    (row.id, row.status, row.accession_number, row.study_instance_uid)
                    for row in session.scalars(select(ImagingRequest))
                },
                "reports": {
                    (row.id, row.status, row.findings, row.impression, row.dicom_study_id)
                    for row in session.scalars(select(Report))
                },
                "versions": {
                    (row.report_id, row.version, row.kind, row.findings)
                    for row in session.scalars(select(ReportVersion))
                },
                "audit": {
                    (
                        row.id,
                        row.event_code,
                        row.action,
                        row.actor,
                        row.timestamp,
                        row.patient_id,
                        row.study_instance_uid,
                        json.dumps(row.details, sort_keys=True),
                    )
                    for row in session.scalars(select(AuditEvent))
                },
                "instances": {
                    row.sop_instance_uid: (row.file_path, row.file_size, row.sha256)
                    for row in session.scalars(select(DicomInstance))
                },
            }
    finally:
        db.dispose()


def _content_sha256(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def test_backup_during_ingest_restores_every_acknowledged_instance_order_report_and_audit_event(
    tmp_path: Path, make_node: Any, db_url: str, empty_db_url: str
) -> None:
    node: Node = make_node()
    sender = Sender(node.dicom_port)
    sender.start()
    deadline = time.monotonic() + 60
    while sender.count() < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sender.count() >= 10, sender.errors
    assert node.db is not None
    with node.db.read() as session:
        study_uid = session.scalars(select(DicomStudy.study_instance_uid)).first()
    assert study_uid is not None
    _seed_orders_reports_and_audit(node, study_uid)

    # acknowledged first, then the state read: an instance is acknowledged only after
    # its commit, so every one in acknowledged_before is in `before` (the other order
    # raced with the sender)
    acknowledged_before = sender.snapshot()
    before = _state(db_url)
    at_backup = sender.count()
    backup = run(tmp_path, "backup", str(tmp_path / "backup"), database_url=db_url)
    during = sender.count() - at_backup
    sender.stop.set()
    sender.thread.join(timeout=60)
    assert backup.returncode == 0, backup.stderr
    assert during > 0, "the backup did not run while instances arrived"
    assert "backup written to" in backup.stdout
    assert (tmp_path / "backup" / "manifest.json").is_file()
    assert before["orders"] and before["reports"] and before["audit"]

    restored_dir = tmp_path / "restored"
    restore = run(
        tmp_path,
        "restore",
        str(tmp_path / "backup"),
        database_url=empty_db_url,
        data_dir=str(restored_dir),
    )
    assert restore.returncode == 0, restore.stderr
    # the audit trail written while the backup ran: its chain restored whole, up
    # to the head the manifest recorded
    head = json.loads((tmp_path / "backup" / "manifest.json").read_text())["audit_head"]
    assert f"audit trail: recorded head {head['id']}:{head['sha256']} still holds" in (
        restore.stdout
    )
    assert "audit trail: hash chain intact" in restore.stdout
    # the restored store checked in-process (`verify` has its own CLI tests)
    verify = _verify(empty_db_url, restored_dir)
    assert verify.ok, verify.describe()
    assert "no problems found" in verify.describe()

    after = _state(empty_db_url)
    assert acknowledged_before <= after["instances"].keys()
    for sop_uid, (relative, size, digest) in after["instances"].items():
        path = restored_dir / "instances" / relative
        assert path.is_file(), sop_uid
        assert path.stat().st_size == size
        assert _content_sha256(path) == digest
        assert path.read_bytes() == (tmp_path / "data" / "instances" / relative).read_bytes()
    for sop_uid in acknowledged_before:
        assert after["instances"][sop_uid] == before["instances"][sop_uid]
    assert after["orders"] == before["orders"]
    assert after["reports"] == before["reports"]
    assert after["versions"] == before["versions"]
    assert before["audit"] <= after["audit"]
    actions = {row[2] for row in after["audit"]}
    assert "backup_restored" in actions


def _verify(db_url: str, data_dir: Path) -> IntegrityReport:
    """What `dicom-node verify` reports, in-process (a check, not the behaviour under test)."""
    db = Database(db_url)
    try:
        return verify_store(db, FileStore(data_dir, fsync=False))
    finally:
        db.dispose()


def _import(tmp_path: Path, db_url: str, source: Path) -> ImportSummary:
    """`dicom-node import SOURCE` in-process: the same service, no CLI start-up (a precondition)."""
    db = Database(db_url)
    try:
        return import_files(
            db,
            FileStore(tmp_path / "data", fsync=False),
            list(iter_files([source])),
            policy=IngestPolicy(),
            actor=SystemActor.IMPORT,
        )
    finally:
        db.dispose()


def _small_store(tmp_path: Path, db_url: str, count: int = 3) -> list[Path]:
    """A few instances imported through the C-STORE path: CT files made in code plus
    pydicom's CT_small."""
    study = generate_uid()
    inputs = [
        write(
            ct_dataset(study_uid=study, instance_number=n, pixel_seed=n), tmp_path / f"in/{n}.dcm"
        )
        for n in range(count - 1)
    ]
    small = Path(str(get_testdata_file("CT_small.dcm")))
    (tmp_path / "in" / "ct_small.dcm").write_bytes(small.read_bytes())
    result = _import(tmp_path, db_url, tmp_path / "in")
    assert result.ok, result.describe()
    assert f"{count} stored" in result.describe()
    return sorted((tmp_path / "data" / "instances").rglob("*.dcm")) or inputs


def _backed_up(tmp_path: Path, db_url: str) -> Path:
    """A backup of a small store, made in-process (`backup` is what the CLI runs)."""
    _small_store(tmp_path, db_url)
    destination = tmp_path / "backup"
    result = create_backup(
        database_url=db_url,
        store=FileStore(tmp_path / "data", fsync=False),
        destination=destination,
        fsync=False,
    )
    assert (result.destination / "manifest.json").is_file()
    return destination


def _is_empty_target(data_dir: Path, url: str) -> bool:
    files = list((data_dir / "instances").rglob("*")) if (data_dir / "instances").exists() else []
    if any(path.is_file() for path in files):
        return False
    if url.startswith("sqlite"):
        return not Path(url.removeprefix("sqlite:///")).exists()
    db = Database(url)
    try:
        return not inspect(db.engine).get_table_names()
    finally:
        db.dispose()


def test_restore_refuses_a_non_empty_data_dir_or_database(tmp_path: Path, db_url: str) -> None:
    backup = _backed_up(tmp_path, db_url)
    into_live = run(tmp_path, "restore", str(backup), database_url=db_url)
    assert_one_line_error(into_live, 1, "already holds instance files")
    into_live_db = run(
        tmp_path, "restore", str(backup), database_url=db_url, data_dir=str(tmp_path / "fresh")
    )
    assert_one_line_error(into_live_db, 1, "already")
    assert "restore needs an empty" in into_live_db.stderr
    assert not list((tmp_path / "fresh").rglob("*.dcm"))


def test_restore_detects_a_corrupted_backup_and_restores_nothing(
    tmp_path: Path, db_url: str, empty_db_url: str
) -> None:
    backup = _backed_up(tmp_path, db_url)
    target = tmp_path / "restored"
    victim = sorted((backup / "instances").rglob("*.dcm"))[0]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    corrupted = run(
        tmp_path, "restore", str(backup), database_url=empty_db_url, data_dir=str(target)
    )
    assert_one_line_error(corrupted, 1, "1 of 3 files in the backup are missing or differ")
    assert _is_empty_target(target, empty_db_url)

    victim.write_bytes(original)
    dump = next(path for path in backup.iterdir() if path.name.startswith("database."))
    dump_bytes = dump.read_bytes()
    dump.write_bytes(dump_bytes[:-1] + bytes([dump_bytes[-1] ^ 0xFF]))
    corrupted_dump = run(
        tmp_path, "restore", str(backup), database_url=empty_db_url, data_dir=str(target)
    )
    assert_one_line_error(corrupted_dump, 1, f"{dump.name} in the backup differs")
    assert _is_empty_target(target, empty_db_url)

    dump.write_bytes(dump_bytes)
    # the undamaged backup restores: in-process (restore's CLI success is covered above)
    restore_backup(source=backup, database_url=empty_db_url, data_dir=target, fsync=False)
    assert len(list((target / "instances").rglob("*.dcm"))) == 3


def test_restore_refuses_a_backup_of_the_other_database_kind(
    tmp_path: Path, db_url: str, backend: str
) -> None:
    backup = _backed_up(tmp_path, db_url)
    other = (
        "postgresql+psycopg://node:secret@127.0.0.1:1/elsewhere"
        if backend == "sqlite"
        else f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    )
    result = run(
        tmp_path, "restore", str(backup), database_url=other, data_dir=str(tmp_path / "fresh")
    )
    target = "PostgreSQL" if backend == "sqlite" else "SQLite"
    assert_one_line_error(result, 1, f"cannot be restored into {target}")
    assert "secret" not in result.stderr


# SQLite only: the manifest is read first, before the database (or its kind) is looked at.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_restore_refuses_a_backup_without_manifest(tmp_path: Path, db_url: str) -> None:
    backup = _backed_up(tmp_path, db_url)
    (backup / "manifest.json").unlink()
    result = run(tmp_path, "restore", str(backup), data_dir=str(tmp_path / "fresh"))
    assert_one_line_error(result, 1, "no manifest.json: not a dicom-node backup, or an incomplete")


def test_backup_refuses_a_non_empty_destination(tmp_path: Path, db_url: str) -> None:
    _small_store(tmp_path, db_url)
    destination = tmp_path / "backup"
    destination.mkdir()
    (destination / "something").write_text("keep me")
    result = run(tmp_path, "backup", str(destination), database_url=db_url)
    assert_one_line_error(result, 1, "is not empty")
    assert [path.name for path in destination.iterdir()] == ["something"]


@pytest.mark.parametrize("damage", ["content", "missing"])
def test_backup_fails_loudly_when_a_stored_file_differs_from_the_index(
    tmp_path: Path, db_url: str, damage: str
) -> None:
    files = _small_store(tmp_path, db_url)
    if damage == "content":
        data = files[0].read_bytes()
        files[0].write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other content
    else:
        files[0].unlink()  # still indexed: not something a retry can fix
    destination = tmp_path / "backup"
    result = run(tmp_path, "backup", str(destination), database_url=db_url)
    assert_one_line_error(result, 1, "1 of 3 indexed files are missing or differ from the index")
    expected = "1 wrong content" if damage == "content" else "1 missing"
    assert expected in result.stderr
    assert not (destination / "manifest.json").exists()


def test_scheduled_backup_keeps_the_newest_and_does_nothing_when_unconfigured(
    tmp_path: Path, db_url: str
) -> None:
    _small_store(tmp_path, db_url)
    unconfigured = node_settings(db_url, tmp_path / "data")
    assert "not configured" in run_scheduled_backup(unconfigured)

    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "operator-notes.txt").write_text("not a backup")
    settings = node_settings(db_url, tmp_path / "data", backup_dir=backups, backup_keep=2)
    start = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    for hour in range(3):
        message = run_scheduled_backup(settings, now=start + timedelta(hours=hour))
        assert "3 files" in message
    kept = complete_backups(backups)
    assert [path.name for path in kept] == [
        "dicom-node-backup-20261101T030000Z",
        "dicom-node-backup-20261101T040000Z",
    ]
    assert (backups / "operator-notes.txt").exists()
    assert not list(backups.glob("*.incomplete"))
    manifest = json.loads((kept[-1] / "manifest.json").read_text())
    assert manifest["created_at"] == "2026-11-01T04:00:00+00:00"
    assert len(manifest["files"]) == 3


def test_a_cancelled_backup_stops_after_the_snapshot_and_leaves_nothing(
    tmp_path: Path, db_url: str
) -> None:
    _small_store(tmp_path, db_url)
    destination = tmp_path / "backup"
    cancel = threading.Event()
    with pytest.raises(BackupCancelled, match="after 0 of 3 files"):
        create_backup(
            database_url=db_url,
            store=FileStore(tmp_path / "data", fsync=False),
            destination=destination,
            fsync=False,
            after_snapshot=cancel.set,  # the node starts stopping during the dump
            cancel=cancel,
        )
    assert not destination.exists()


def test_backup_manifest_hashes_are_the_files_sha256(tmp_path: Path, db_url: str) -> None:
    backup = _backed_up(tmp_path, db_url)
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["format"] == "dicom-node-backup"
    assert manifest["schema_revision"]
    assert manifest["database"]["kind"] == (
        "sqlite" if db_url.startswith("sqlite") else "postgresql"
    )
    for item in manifest["files"]:
        data = (backup / "instances" / item["path"]).read_bytes()
        assert len(data) == item["size"]
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
    dump = backup / manifest["database"]["file"]
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == manifest["database"]["sha256"]


def _big_instance(tmp_path: Path, db_url: str) -> None:
    """One 2 MiB instance imported (over the 1 MB file size limit below)."""
    ds = ct_dataset(study_uid=generate_uid(), pixel_seed=1)
    ds.Rows = ds.Columns = 1024
    ds.PixelData = np.random.default_rng(1).integers(0, 4000, (1024, 1024), np.uint16).tobytes()
    write(ds, tmp_path / "big" / "big.dcm")
    result = _import(tmp_path, db_url, tmp_path / "big")
    assert result.ok, result.describe()


def _run_with_file_size_limit(
    tmp_path: Path, *args: str, limit: int, **settings: str
) -> subprocess.CompletedProcess[str]:
    """The CLI with RLIMIT_FSIZE: a write past ``limit`` fails with EFBIG, as a
    full disk fails with ENOSPC (Python ignores SIGXFSZ)."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=clean_env(tmp_path, **settings),
        preexec_fn=limit_file_size,  # setrlimit only: safe between fork and exec
        check=False,
    )


def test_a_backup_that_cannot_write_fails_in_one_line_and_leaves_no_partial_copy(
    tmp_path: Path, db_url: str, empty_db_url: str
) -> None:
    _small_store(tmp_path, db_url)
    _big_instance(tmp_path, db_url)
    destination = tmp_path / "backup"
    result = _run_with_file_size_limit(
        tmp_path, "backup", str(destination), limit=1_000_000, database_url=db_url
    )
    assert_one_line_error(result, 1, "backup failed: File too large")
    assert not destination.exists()

    # an empty DEST made by the operator stays, empty
    destination.mkdir()
    again = _run_with_file_size_limit(
        tmp_path, "backup", str(destination), limit=1_000_000, database_url=db_url
    )
    assert_one_line_error(again, 1, "File too large")
    assert list(destination.iterdir()) == []


def test_a_restore_that_cannot_write_fails_in_one_line_and_restores_nothing(
    tmp_path: Path, db_url: str, empty_db_url: str
) -> None:
    _small_store(tmp_path, db_url)
    _big_instance(tmp_path, db_url)
    backup = tmp_path / "backup"
    create_backup(
        database_url=db_url,
        store=FileStore(tmp_path / "data", fsync=False),
        destination=backup,
        fsync=False,
    )
    target = tmp_path / "restored"
    result = _run_with_file_size_limit(
        tmp_path,
        "restore",
        str(backup),
        limit=1_000_000,
        database_url=empty_db_url,
        data_dir=str(target),
    )
    assert_one_line_error(result, 1, "restore failed: File too large")
    assert _is_empty_target(target, empty_db_url)
    assert not [path for path in (target / "tmp").iterdir()]  # no temp copy left either


def test_rows_whose_files_were_removed_after_the_snapshot_are_left_out_of_the_restore(
    tmp_path: Path, db_url: str, empty_db_url: str
) -> None:
    """Retention (or a replace) removing files while a backup copies: no retry,
    the rows are listed in the manifest and deleted at restore, audited."""
    _small_store(tmp_path, db_url, count=4)
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    removed: list[str] = []

    def purge_one() -> None:
        # as retention does: the row first, then its file (a new one each call)
        with db.unit_of_work() as session:
            row = session.scalars(select(DicomInstance).order_by(DicomInstance.file_path)).first()
            assert row is not None
            removed.append(row.file_path)
            session.delete(row)
        (store.instances / removed[-1]).unlink()

    try:
        result = create_backup(
            database_url=db_url,
            store=store,
            destination=tmp_path / "backup",
            fsync=False,
            after_snapshot=purge_one,
        )
    finally:
        db.dispose()
    assert len(removed) == 1  # one snapshot, no retry
    assert result.manifest.removed_after_snapshot == tuple(removed)
    assert len(result.manifest.files) == 3
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["removed_after_snapshot"] == removed
    assert manifest["format_version"] == 2

    # restore and verify in-process: what is under test is the manifest and the restore's
    # handling of it, not the commands' output (their CLI is covered by the tests above)
    restored_dir = tmp_path / "restored"
    restore_backup(
        source=tmp_path / "backup", database_url=empty_db_url, data_dir=restored_dir, fsync=False
    )
    verify = _verify(empty_db_url, restored_dir)
    assert verify.ok, verify.describe()
    restored = Database(empty_db_url)
    try:
        with restored.read() as session:
            paths = set(session.scalars(select(DicomInstance.file_path)))
            counts = list(session.scalars(select(DicomStudy.instance_count)))
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "backup_restored")
            ).one()
    finally:
        restored.dispose()
    assert paths == {item.path for item in result.manifest.files}
    assert removed[0] not in paths
    assert sum(counts) == 3  # the study that lost an instance was recounted
    assert event.details["removed_after_snapshot"] == removed


def test_restore_refuses_a_database_that_indexes_files_the_manifest_does_not_list(
    tmp_path: Path, db_url: str, empty_db_url: str, backend: str
) -> None:
    backup = _backed_up(tmp_path, db_url)
    manifest_path = backup / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    dropped = manifest["files"].pop()
    (backup / "instances" / dropped["path"]).unlink()
    manifest_path.write_text(json.dumps(manifest))
    target = tmp_path / "restored"
    result = run(tmp_path, "restore", str(backup), database_url=empty_db_url, data_dir=str(target))
    assert_one_line_error(result, 1, "the restored database and the manifest disagree")
    # the database was loaded and checked: the load is undone, not left without files
    assert _is_empty_target(target, empty_db_url)
    if backend == "postgresql":
        assert postgres_objects(empty_db_url) == set()


def test_scheduled_backup_removes_stale_incomplete_backups_and_audits_the_final_path(
    tmp_path: Path, db_url: str
) -> None:
    _small_store(tmp_path, db_url)
    backups = tmp_path / "backups"
    crashed = backups / "dicom-node-backup-20261101T010000Z.incomplete"
    running = backups / "dicom-node-backup-20261101T013000Z.incomplete"
    operators = backups / "my-copy.incomplete"
    two_hours_ago = time.time() - 2 * 3600
    for directory in (crashed, running, operators):
        (directory / "instances").mkdir(parents=True)
        (directory / "database.sqlite3").write_bytes(b"x")
    # another node's run started long ago and is still copying
    (running / "instances" / "new.dcm").write_bytes(b"x")
    for path in [*crashed.rglob("*"), crashed, running, operators, running / "database.sqlite3"]:
        os.utime(path, (two_hours_ago, two_hours_ago))

    settings = node_settings(db_url, tmp_path / "data", backup_dir=backups, backup_keep=2)
    message = run_scheduled_backup(settings, now=datetime(2026, 11, 1, 2, 0, tzinfo=UTC))
    assert "1 stale incomplete backups removed" in message
    assert not crashed.exists()
    assert running.exists() and operators.exists()
    final = backups / "dicom-node-backup-20261101T020000Z"
    assert (final / "manifest.json").is_file()
    db = Database(db_url)
    try:
        with db.read() as session:
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "backup_created")
            ).one()
    finally:
        db.dispose()
    assert event.details["destination"] == str(final)
