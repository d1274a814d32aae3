"""`dicom-node backup`: a consistent copy while the node runs (``restore.py``
loads one; ``backup_format.py`` holds what both share).

A backup is a directory:

    manifest.json        written last: a directory without it is an incomplete backup
    database.sqlite3     SQLite online backup (``Connection.backup``), or
    database.pgdump      ``pg_dump --format=custom`` of the PostgreSQL database
    instances/<study>/<series>/<sop>.dcm

Consistency: the database is snapshotted first, then exactly the files that the
snapshot indexes are copied, their list read from the snapshot (never from the
live database). Ingest renames a file into place before committing its row, so
every row of the snapshot has its file; files received after the snapshot are
simply not in the backup (they are not in its index either). Each copy is hashed
while it is written and compared with the index (size and SHA-256 of the
dataset); any disagreement fails the backup. A file removed after the snapshot
by a change the live index agrees with (retention purged the row, a replace
moved it) is no disagreement: its path is listed under
``removed_after_snapshot`` and restore deletes those rows (no retry, so a busy
store still gets its backup). A failed backup (including a write error: disk
full, file too large, permission) removes what it wrote.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot
(``pg_export_snapshot``); ``pg_dump --snapshot`` dumps exactly that state while
the same transaction reads the file list, so dump and file list agree.

The manifest lists every file with its size and the SHA-256 of the whole file
(what ``sha256sum`` prints), the database dump's size and SHA-256, the schema
revision, and row counts that restore checks again after loading, together with
the indexed file paths (which must equal the manifest's); a failed check or an
interruption undoes the load (the target was verified empty).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, select, text

from dicom_node import __version__
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.audit import (
    Actor,
    SystemActor,
    TargetKind,
    export_event,
)
from dicom_node.services.audit.chain import AuditAnchor
from dicom_node.services.operations.backup_format import (
    AUDIT_HEAD_SQL,
    COUNT_SQL,
    COUNTED_TABLES,
    DATABASE_FILES,
    FILES_DIR,
    MANIFEST,
    BackupCancelled,
    BackupError,
    BackupResult,
    DatabaseKind,
    Manifest,
    ManifestFile,
    database_kind,
    fsync_dir,
    fsync_file,
    fsync_tree,
    os_reason,
    postgres_tool,
    record_outside,
    run_tool,
    sqlite_path,
)
from dicom_node.services.operations.verify import digest_file
from dicom_node.storage import FileStore

# the backup and restore lines share one logger name, as before the split
log = logging.getLogger("dicom_node.backup")

# --------------------------------------------------------------------------- backup


@dataclass(frozen=True, slots=True)
class _Snapshot:
    revision: str
    counts: dict[str, int]
    rows: list[tuple[str, int, str]]  # file_path, file_size, sha256 of the dataset
    audit_head: AuditAnchor | None = None


def create_backup(
    *,
    database_url: str,
    store: FileStore,
    destination: Path,
    fsync: bool = True,
    now: datetime | None = None,
    actor: SystemActor = SystemActor.CLI,
    record_as: Path | None = None,
    after_snapshot: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
) -> BackupResult:
    """Snapshot the database, copy the files it indexes, write the manifest last.

    Raises BackupError when a file still indexed is missing or differs from the
    index, the database cannot be dumped, or writing fails (disk full, file too
    large, permission): what this call wrote into ``destination`` is removed
    (``destination`` was new or empty), so no partial copy of patient data stays.
    ``record_as``: the path the audit event names (the scheduled job renames
    its work directory once this returns). ``after_snapshot`` runs between the
    snapshot and the copy (a test's hook for changes committed meanwhile).
    ``cancel`` (the node stopping) is looked at after the snapshot and between
    files: BackupCancelled, with the partial copy removed as for a failure.
    """
    kind = database_kind(database_url)
    resolved = destination.resolve()
    if resolved.is_relative_to(store.instances) or resolved.is_relative_to(store.tmp):
        raise BackupError(f"{destination} is inside the store: back up somewhere else")
    created = _prepare_destination(destination)
    try:
        try:
            manifest = _write_backup(
                database_url,
                kind,
                store,
                destination,
                fsync=fsync,
                now=now,
                hook=after_snapshot,
                cancel=cancel,
            )
        except OSError as exc:
            raise BackupError(f"backup failed: {os_reason(exc)}") from None
    except BaseException:
        _discard(destination, created=created)
        raise
    record_outside(
        database_url,
        export_event(
            "backup_created",
            Actor.system(actor),
            TargetKind.BACKUP,
            details={
                "destination": str(record_as or destination),
                "schema_revision": manifest.schema_revision,
                "files": len(manifest.files),
                "bytes": manifest.total_bytes,
                "counts": manifest.counts,
                "removed_after_snapshot": len(manifest.removed_after_snapshot),
            },
        ),
    )
    return BackupResult(destination, manifest)


def _write_backup(
    database_url: str,
    kind: DatabaseKind,
    store: FileStore,
    destination: Path,
    *,
    fsync: bool,
    now: datetime | None,
    hook: Callable[[], None] | None,
    cancel: threading.Event | None,
) -> Manifest:
    database_file = destination / DATABASE_FILES[kind]
    if kind == "sqlite":
        snapshot = _snapshot_sqlite(database_url, database_file)
    else:
        snapshot = _snapshot_postgres(database_url, database_file)
    if fsync:
        fsync_file(database_file)
    if hook is not None:
        hook()
    files, removed = _copy_indexed_files(
        store, snapshot.rows, destination / FILES_DIR, database_url, fsync=fsync, cancel=cancel
    )
    database_digest = digest_file(database_file)
    manifest = Manifest(
        database_kind=kind,
        database_file=database_file.name,
        database_size=database_digest.size,
        database_sha256=database_digest.file_sha256,
        schema_revision=snapshot.revision,
        created_at=(now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        dicom_node_version=__version__,
        counts=snapshot.counts,
        files=tuple(files),
        removed_after_snapshot=tuple(removed),
        audit_head=snapshot.audit_head,
    )
    _write_manifest(destination, manifest, fsync=fsync)
    return manifest


def _discard(destination: Path, *, created: bool) -> None:
    """Remove what a failed backup wrote (``destination`` was new or empty)."""
    if created:
        shutil.rmtree(destination, ignore_errors=True)
        return
    try:
        children = list(destination.iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _prepare_destination(destination: Path) -> bool:
    """Check that ``destination`` is new or empty and create it; True when created here."""
    if destination.exists():
        if not destination.is_dir():
            raise BackupError(f"{destination} exists and is not a directory")
        if any(destination.iterdir()):
            raise BackupError(f"{destination} is not empty: back up into a new or empty directory")
        return False
    try:
        destination.mkdir(parents=True)
    except OSError as exc:
        raise BackupError(f"cannot create {destination}: {exc.strerror or exc}") from None
    return True


def _snapshot_sqlite(url: str, target: Path) -> _Snapshot:
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise BackupError(f"the SQLite database {source_path} does not exist")
    # A separate connection: the online backup reads one consistent state under
    # a read transaction (WAL lets the node keep writing meanwhile).
    source = sqlite3.connect(source_path, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
            # a self-contained file: no -wal beside it
            copy.execute("PRAGMA journal_mode=DELETE")
            return _read_snapshot_sqlite(copy)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup failed: {exc}") from None
    finally:
        source.close()


def _read_snapshot_sqlite(copy: sqlite3.Connection) -> _Snapshot:
    tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "alembic_version" not in tables:
        raise BackupError("the database has no dicom-node schema: nothing to back up")
    revision = copy.execute("SELECT version_num FROM alembic_version").fetchone()
    counts = {
        table: int(copy.execute(COUNT_SQL[table]).fetchone()[0])
        for table in COUNTED_TABLES
        if table in tables
    }
    rows = [
        (str(path), int(size), str(digest))
        for path, size, digest in copy.execute(
            "SELECT file_path, file_size, sha256 FROM dicom_instances ORDER BY file_path"
        )
    ]
    columns = {row[1] for row in copy.execute("PRAGMA table_info(audit_events)")}
    head = copy.execute(AUDIT_HEAD_SQL).fetchone() if {"id", "row_hash"} <= columns else None
    return _Snapshot(
        str(revision[0]) if revision else "",
        counts,
        rows,
        AuditAnchor(int(head[0]), str(head[1])) if head else None,
    )


def _snapshot_postgres(url: str, target: Path) -> _Snapshot:
    pg_dump = postgres_tool("pg_dump")
    db = Database(url)
    try:
        with db.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                snapshot_id = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                # pg_dump reads the state this transaction sees, while it stays open
                run_tool(
                    [
                        pg_dump,
                        "--format=custom",
                        f"--snapshot={snapshot_id}",
                        f"--file={target}",
                    ],
                    url,
                    what="pg_dump",
                )
                return _read_snapshot_postgres(connection)
    finally:
        db.dispose()


def _read_snapshot_postgres(connection: Connection) -> _Snapshot:
    if connection.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
        raise BackupError("the database has no dicom-node schema: nothing to back up")
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    counts = {
        table: int(connection.execute(text(COUNT_SQL[table])).scalar_one())
        for table in COUNTED_TABLES
    }
    rows = [
        (str(path), int(size), str(digest))
        for path, size, digest in connection.execute(
            text("SELECT file_path, file_size, sha256 FROM dicom_instances ORDER BY file_path")
        )
    ]
    chained = connection.execute(
        text(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'audit_events' AND column_name = 'row_hash'"
        )
    ).first()
    head = connection.execute(text(AUDIT_HEAD_SQL)).first() if chained else None
    return _Snapshot(
        str(revision or ""),
        counts,
        rows,
        AuditAnchor(int(head[0]), str(head[1])) if head else None,
    )


def _copy_indexed_files(
    store: FileStore,
    rows: Sequence[tuple[str, int, str]],
    target_root: Path,
    database_url: str,
    *,
    fsync: bool,
    cancel: threading.Event | None = None,
) -> tuple[list[ManifestFile], list[str]]:
    """Copy and check each file of the snapshot; returns the copies and the rows
    whose file was removed after the snapshot by a change the live index agrees
    with (a retention purge, a replaced instance: the row is gone or points at
    another file). A file missing while its row is still indexed fails the backup."""
    files: list[ManifestFile] = []
    missing: list[str] = []
    size_differs = content_differs = 0
    target_root.mkdir()
    for relative, size, digest in rows:
        if cancel is not None and cancel.is_set():
            raise BackupCancelled(f"backup cancelled after {len(files)} of {len(rows)} files")
        try:
            source = store.absolute(relative)
        except ValueError:
            missing.append(relative)
            continue
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with target.open("xb") as out:
                found = digest_file(source, copy_to=out)
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
        except FileNotFoundError:
            if not target.parent.is_dir():
                raise  # the backup's own directory vanished: not the store's doing
            target.unlink(missing_ok=True)
            missing.append(relative)
            continue
        if found.size != size:
            size_differs += 1
        elif found.content_sha256 != digest:
            content_differs += 1
        files.append(ManifestFile(relative, found.size, found.file_sha256))
    still_indexed = _still_indexed(database_url, missing)
    removed = [path for path in missing if path not in still_indexed]
    missing = [path for path in missing if path in still_indexed]
    for path in removed:
        _remove_empty_parents(target_root / path, target_root)
    bad = len(missing) + size_differs + content_differs
    if bad:
        raise BackupError(
            f"{bad} of {len(rows)} indexed files are missing or differ from the index "
            f"({len(missing)} missing, {size_differs} wrong size, "
            f"{content_differs} wrong content): "
            "backup incomplete (no manifest); run `dicom-node verify`"
        )
    if fsync:
        fsync_tree(target_root)
    return files, removed


def _still_indexed(database_url: str, paths: list[str]) -> set[str]:
    """Those of these paths the live index still points at."""
    if not paths:
        return set()
    found: set[str] = set()
    db = Database(database_url)
    try:
        with db.read() as session:
            for start in range(0, len(paths), 500):
                found.update(
                    session.scalars(
                        select(DicomInstance.file_path).where(
                            DicomInstance.file_path.in_(paths[start : start + 500])
                        )
                    )
                )
        return found
    finally:
        db.dispose()


def _remove_empty_parents(path: Path, root: Path) -> None:
    """Drop the directories made for a file that was not there after all."""
    for directory in path.parents:
        if directory == root or not directory.is_relative_to(root):
            return
        try:
            directory.rmdir()
        except OSError:
            return


def _write_manifest(destination: Path, manifest: Manifest, *, fsync: bool) -> None:
    temp = destination / f".{MANIFEST}.tmp"
    with temp.open("w", encoding="utf-8") as out:
        json.dump(manifest.to_json(), out, indent=1)
        out.write("\n")
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temp, destination / MANIFEST)
    if fsync:
        fsync_dir(destination)
        fsync_dir(destination.parent)
