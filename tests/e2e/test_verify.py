"""`dicom-node verify`: the index against the files, each kind of damage made on disk."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import delete, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.operations import verify as integrity
from dicom_node.services.operations.verify import (
    KEPT_INDEX_CHANGED,
    ProblemKind,
    _remove_superseded,
    verify_store,
)
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes, write
from tests.support import run


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
    # imported in-process (the same service as `dicom-node import`): a precondition only
    db = Database(db_url)
    try:
        summary = import_files(
            db,
            FileStore(tmp_path / "data", fsync=False),
            list(iter_files([tmp_path / "in"])),
            policy=IngestPolicy(),
            actor="import",
        )
    finally:
        db.dispose()
    assert summary.ok, summary.describe()
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


def _verify_output(tmp_path: Path, db_url: str) -> tuple[bool, str]:
    """What plain `dicom-node verify` prints (and whether it would exit 0), computed
    in-process: for checks before or after the command under test."""
    db = Database(db_url)
    try:
        report = verify_store(db, FileStore(tmp_path / "data", fsync=False))
    finally:
        db.dispose()
    return report.ok, report.describe()


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

    _ok, again = _verify_output(tmp_path, db_url)
    assert _section(again, "orphan") == []
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
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.STUDY_DELETED,
                    action="study_images_purged",
                    actor="retention",
                    study_instance_uid=study_uid,
                ),
            )
        # the same study sent again after the purge, its ingest interrupted before commit
        resent = ct_dataset(study_uid=study_uid, patient_id="PAT1")
        relative = FileStore.relative_path(
            study_uid, resent.SeriesInstanceUID, resent.SOPInstanceUID
        )
        write(resent, instances / relative)

        ok, report = _verify_output(tmp_path, db_url)
        assert not ok
        assert _section(report, "purged") == sorted(purged)
        assert _section(report, "orphan") == [relative]

        # --repair indexes orphans only: the leftovers are reported, not deleted
        repaired = run(tmp_path, "verify", "--repair", database_url=db_url)
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
        assert "purge leftovers kept (--remove-purged removes them)" in repaired.stdout
        assert all((instances / path).exists() for path in purged)

        removed = run(tmp_path, "verify", "--remove-purged", database_url=db_url)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert f"{len(purged)} purge leftovers removed" in removed.stdout
        assert not any((instances / path).exists() for path in purged)
        with db.read() as session:
            indexed = set(session.scalars(select(DicomInstance.file_path)))
        assert relative in indexed
        assert not indexed & set(purged)
    finally:
        db.dispose()


def _purge(db_url: str, study_uid: str) -> None:
    """Retention's purge as it completes: rows gone, Study Deleted audited."""
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            session.execute(
                delete(DicomInstance).where(DicomInstance.file_path.startswith(f"{study_uid}/"))
            )
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.STUDY_DELETED,
                    action="study_images_purged",
                    actor="retention",
                    study_instance_uid=study_uid,
                ),
            )
    finally:
        db.dispose()


def test_files_put_back_after_a_purge_with_their_old_mtimes_are_indexed_not_deleted(
    tmp_path: Path, db_url: str
) -> None:
    files = _store(tmp_path, db_url)
    instances = tmp_path / "data" / "instances"
    study_uid = files[0].split("/", 1)[0]
    saved = tmp_path / "old-backup"
    shutil.copytree(instances / study_uid, saved)  # copy2: mtimes kept, as cp -a / rsync -a
    _purge(db_url, study_uid)
    shutil.rmtree(instances / study_uid)
    # the study is needed again: the operator copies its files back, old mtimes and all
    shutil.copytree(saved, instances / study_uid)
    put_back = sorted(path for path in files if path.startswith(f"{study_uid}/"))
    first = put_back[0].split("/", 1)[1]
    assert (instances / put_back[0]).stat().st_mtime == (saved / first).stat().st_mtime

    _ok, report = _verify_output(tmp_path, db_url)
    assert _section(report, "purged") == []
    assert _section(report, "orphan") == put_back

    repaired = run(tmp_path, "verify", "--repair", "--remove-purged", database_url=db_url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "0 purge leftovers removed" in repaired.stdout
    assert all((instances / path).is_file() for path in put_back)
    db = Database(db_url)
    try:
        with db.read() as session:
            indexed = set(session.scalars(select(DicomInstance.file_path)))
    finally:
        db.dispose()
    assert set(put_back) <= indexed


def test_repair_with_replace_policy_leaves_an_old_copy_of_a_replaced_instance_alone(
    tmp_path: Path, db_url: str
) -> None:
    """A crash between a REPLACE's commit and its removing the old file leaves the
    old copy at the instance's plain path; importing it would move the row."""
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    replace = IngestPolicy(duplicate_policy="replace")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    old, new = (
        to_bytes(ct_dataset(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=seed))
        for seed in (1, 2)
    )
    try:
        assert store_instance(db, store, part10=old, source=Source(), policy=replace).outcome == (
            StoreOutcome.STORED
        )
        plain = FileStore.relative_path(study, series, sop)
        assert store_instance(db, store, part10=new, source=Source(), policy=replace).outcome == (
            StoreOutcome.REPLACED
        )
        (store.instances / plain).write_bytes(old)  # the old copy the crash left
        with db.read() as session:
            current = session.scalar(
                select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
            )
        assert current is not None and current != plain

        repaired = run(
            tmp_path, "verify", "--repair", database_url=db_url, duplicate_policy="replace"
        )
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
        after = repaired.stdout.split("after repair:", 1)[1]
        assert _section(after, "superseded") == [plain]
        assert _section(after, "orphan") == []
        assert _section(after, "missing") == []
        with db.read() as session:
            row = session.scalar(
                select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
            )
        assert row == current
        assert (store.instances / current).read_bytes() == new
        assert (store.instances / plain).read_bytes() == old  # left for the operator
    finally:
        db.dispose()


def test_repair_reports_non_dicom_files_in_the_store_without_importing_them(
    tmp_path: Path, db_url: str
) -> None:
    files = _store(tmp_path, db_url)
    instances = tmp_path / "data" / "instances"
    stray = (instances / files[0]).parent / ".nfs000000000123abcd00000001"
    stray.write_bytes(b"\0" * 4096)
    repaired = run(tmp_path, "verify", "--repair", database_url=db_url)
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    after = repaired.stdout.split("after repair:", 1)[1]
    assert _section(after, "stray") == [stray.relative_to(instances).as_posix()]
    assert _section(after, "orphan") == []
    assert stray.is_file()


def test_verify_help_says_what_repair_and_remove_purged_change(tmp_path: Path) -> None:
    result = run(tmp_path, "verify", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--remove-purged" in text
    assert "changes nothing else" in text
    assert "duplicate policy keep" in text


def _superseded_copy(db: Database, store: FileStore) -> tuple[str, str]:
    """An instance replaced by a resend (duplicate policy replace) whose old copy
    the crash left at the plain path: (superseded path, indexed path)."""
    replace = IngestPolicy(duplicate_policy="replace")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    old, new = (
        to_bytes(ct_dataset(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=seed))
        for seed in (1, 2)
    )
    assert store_instance(db, store, part10=old, source=Source(), policy=replace).outcome == (
        StoreOutcome.STORED
    )
    assert store_instance(db, store, part10=new, source=Source(), policy=replace).outcome == (
        StoreOutcome.REPLACED
    )
    plain = FileStore.relative_path(study, series, sop)
    (store.instances / plain).write_bytes(old)  # the old copy the crash left
    with db.read() as session:
        current = session.scalar(
            select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
        )
    assert current is not None and current != plain
    return plain, current


def _repair_events(db: Database) -> list[AuditEvent]:
    with db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "integrity_repair"))
        )


def test_remove_superseded_deletes_the_old_copy_once_the_indexed_copy_verifies(
    tmp_path: Path, db_url: str
) -> None:
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    try:
        plain, current = _superseded_copy(db, store)
        indexed_bytes = (store.instances / current).read_bytes()
        ok, report = _verify_output(tmp_path, db_url)
        assert not ok
        assert _section(report, "superseded") == [plain]

        removed = run(tmp_path, "verify", "--remove-superseded", database_url=db_url)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "1 superseded copies removed, 0 kept" in removed.stdout
        assert not (store.instances / plain).exists()
        # the indexed copy and its row are untouched; its series directory stays
        assert (store.instances / current).read_bytes() == indexed_bytes
        with db.read() as session:
            assert set(session.scalars(select(DicomInstance.file_path))) == {current}
        plain_verify = run(tmp_path, "verify", database_url=db_url)
        assert plain_verify.returncode == 0, plain_verify.stdout + plain_verify.stderr

        events = _repair_events(db)
        assert len(events) == 1
        assert events[0].details["superseded_removed"] == 1
        assert events[0].details["superseded_kept"] == 0
        assert events[0].details["before"]["superseded"] == 1
        assert events[0].details["after"]["superseded"] == 0
        assert events[0].outcome == "success"
    finally:
        db.dispose()


@pytest.mark.parametrize("damage", ["content", "missing"])
def test_remove_superseded_keeps_the_copy_when_the_indexed_copy_is_damaged_or_missing(
    tmp_path: Path, db_url: str, damage: str
) -> None:
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    try:
        plain, current = _superseded_copy(db, store)
        old_bytes = (store.instances / plain).read_bytes()
        indexed = store.instances / current
        if damage == "missing":
            indexed.unlink()
        else:
            data = indexed.read_bytes()
            indexed.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other pixels

        result = run(tmp_path, "verify", "--remove-superseded", database_url=db_url)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "0 superseded copies removed, 1 kept" in result.stdout
        kept = result.stdout.split("superseded copies kept (1):", 1)[1].splitlines()[1]
        assert kept.startswith(f"  {plain}: the indexed copy ")
        assert "may be the best one left" in kept
        assert ("is missing" in kept) == (damage == "missing")
        assert (store.instances / plain).read_bytes() == old_bytes  # the copy is kept
        after = result.stdout.split("after repair:", 1)[1]
        assert _section(after, "superseded") == [plain]
        assert _section(after, damage) == [current]

        events = _repair_events(db)
        assert len(events) == 1
        assert events[0].details["superseded_removed"] == 0
        assert events[0].details["superseded_kept"] == 1
        assert events[0].details["after"]["superseded"] == 1
    finally:
        db.dispose()


def test_remove_superseded_keeps_the_copy_when_the_indexed_copy_is_a_link_out_of_the_store(
    tmp_path: Path, db_url: str
) -> None:
    """verify lists no symbolic link: an indexed copy reached through one (an old
    mount, a backup) must not stand in for the real file, however it hashes."""
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    try:
        plain, current = _superseded_copy(db, store)
        indexed = store.instances / current
        outside = tmp_path / "elsewhere.dcm"
        outside.write_bytes(indexed.read_bytes())  # hashes exactly as the index says
        indexed.unlink()
        indexed.symlink_to(outside)

        result = run(tmp_path, "verify", "--remove-superseded", database_url=db_url)

        assert "0 superseded copies removed, 1 kept" in result.stdout, result.stdout
        assert "symbolic link" in result.stdout
        assert (store.instances / plain).is_file()  # the real copy stays
    finally:
        db.dispose()


def test_remove_superseded_alone_leaves_orphans_unindexed_and_combines_with_repair(
    tmp_path: Path, db_url: str
) -> None:
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    try:
        plain, current = _superseded_copy(db, store)
        orphan = ct_dataset(study_uid=generate_uid(), patient_id="ORPHAN1")
        orphan_path = FileStore.relative_path(
            orphan.StudyInstanceUID, orphan.SeriesInstanceUID, orphan.SOPInstanceUID
        )
        write(orphan, store.instances / orphan_path)

        alone = run(tmp_path, "verify", "--remove-superseded", database_url=db_url)
        assert alone.returncode == 1, alone.stdout + alone.stderr
        assert "1 superseded copies removed" in alone.stdout
        assert "orphan files indexed" not in alone.stdout
        assert _section(alone.stdout.split("after repair:", 1)[1], "orphan") == [orphan_path]
        with db.read() as session:
            assert set(session.scalars(select(DicomInstance.file_path))) == {current}

        # another interrupted replace, then both repairs in one run
        plain2, current2 = _superseded_copy(db, store)
        both = run(tmp_path, "verify", "--repair", "--remove-superseded", database_url=db_url)
        assert both.returncode == 0, both.stdout + both.stderr
        assert "1 orphan files indexed" in both.stdout
        assert "1 superseded copies removed, 0 kept" in both.stdout
        assert not (store.instances / plain).exists()
        assert not (store.instances / plain2).exists()
        with db.read() as session:
            indexed = set(session.scalars(select(DicomInstance.file_path)))
        assert indexed == {current, current2, orphan_path}
        assert [event.details["superseded_removed"] for event in _repair_events(db)] == [1, 1]
    finally:
        db.dispose()


def test_remove_superseded_spares_a_path_the_index_moved_to_since_the_check(
    tmp_path: Path, db_url: str
) -> None:
    """A replace whose new copy was renamed into place but never committed leaves
    that copy superseded; the same content sent again commits the index onto that
    very path. Removal reads the index again under the study lock and keeps it."""
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    replace = IngestPolicy(duplicate_policy="replace")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    old, new = (
        to_bytes(ct_dataset(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=seed))
        for seed in (1, 2)
    )
    try:
        assert store_instance(db, store, part10=old, source=Source(), policy=replace).outcome == (
            StoreOutcome.STORED
        )
        digest = hashlib.sha256(new[dataset_offset(new) :]).hexdigest()
        variant = FileStore.relative_path(study, series, sop, variant=digest[:16])
        (store.instances / variant).write_bytes(new)  # renamed into place, never committed
        before = verify_store(db, store)
        assert before.problems[ProblemKind.SUPERSEDED] == (variant,)

        # the resend commits after verify listed the copy, before it is removed
        assert store_instance(db, store, part10=new, source=Source(), policy=replace).outcome == (
            StoreOutcome.REPLACED
        )
        with db.read() as session:
            row = session.scalar(
                select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
            )
        assert row == variant

        removed, kept = _remove_superseded(db, store, before.problems[ProblemKind.SUPERSEDED])
        assert removed == 0
        assert kept == ((variant, KEPT_INDEX_CHANGED),)
        assert (store.instances / variant).read_bytes() == new
        assert verify_store(db, store).ok
    finally:
        db.dispose()


def test_verify_help_documents_remove_superseded(tmp_path: Path) -> None:
    result = run(tmp_path, "verify", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--remove-superseded" in text
    assert "only when the indexed copy exists and verifies" in text
    assert "may be the best copy left" in text


def test_remove_superseded_keeps_the_copy_when_the_indexed_file_changes_after_hashing(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indexed copy is hashed before the study lock is taken (on SQLite that
    lock holds every C-STORE): a file rewritten in between is caught under the
    lock by its inode, size and mtime, and the superseded copy stays."""
    db = Database(db_url)
    store = FileStore(tmp_path / "data", fsync=False)
    try:
        plain, current = _superseded_copy(db, store)
        verified_then_rewritten = integrity._indexed_copy_problem

        def rewrite_after(*args: object) -> str | None:
            problem = verified_then_rewritten(*args)  # type: ignore[arg-type]
            indexed = store.instances / current
            replacement = indexed.with_suffix(".new")
            replacement.write_bytes(indexed.read_bytes())
            replacement.replace(indexed)  # what a concurrent replace would do
            return problem

        monkeypatch.setattr(integrity, "_indexed_copy_problem", rewrite_after)
        removed, kept = integrity._remove_superseded(db, store, [plain])

        assert (removed, kept) == (0, ((plain, integrity.KEPT_INDEX_CHANGED),))
        assert (store.instances / plain).is_file()
    finally:
        db.dispose()
