"""`dicom-node backup` and `dicom-node restore`: a consistent copy while the node runs.

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

import glob
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, delete, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dicom_node import __version__
from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import (
    Actor,
    AuditRecord,
    SystemActor,
    TargetKind,
    application_activity_event,
    export_event,
)
from dicom_node.domain.errors import Cancelled
from dicom_node.services.audit.chain import AuditAnchor, AuditChainReport, verify_audit_chain
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.operations.verify import digest_file
from dicom_node.storage import FileStore

FORMAT = "dicom-node-backup"
FORMAT_VERSION = 1
# a backup that lists rows removed after its snapshot: older versions must not restore it
FORMAT_VERSION_REMOVED_ROWS = 2
READABLE_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_REMOVED_ROWS)
MANIFEST = "manifest.json"
FILES_DIR = "instances"
DATABASE_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
# row counts kept in the manifest and checked again after a restore
COUNTED_TABLES = (
    "dicom_instances",
    "imaging_requests",
    "reports",
    "report_versions",
    "audit_events",
    "users",
)
# built from the constant names above only (never from input)
_COUNT_SQL = {name: f"SELECT count(*) FROM {name}" for name in COUNTED_TABLES}  # noqa: S608
_AUDIT_HEAD_SQL = "SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1"

log = logging.getLogger("dicom_node.backup")

DatabaseKind = Literal["sqlite", "postgresql"]
_KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# libpq settings that may ride in the SQLAlchemy URL's query string
_LIBPQ_QUERY_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "passfile": "PGPASSFILE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
}


class BackupCancelled(Cancelled):
    """The node is stopping: the backup was abandoned and what it wrote removed."""


class BackupError(Exception):
    """The backup or restore could not be made; one line for the operator, no PHI."""


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str  # relative to instances/, POSIX separators
    size: int
    sha256: str  # of the whole file


@dataclass(frozen=True, slots=True)
class Manifest:
    database_kind: DatabaseKind
    database_file: str
    database_size: int
    database_sha256: str
    schema_revision: str
    created_at: str
    dicom_node_version: str
    counts: dict[str, int]
    files: tuple[ManifestFile, ...]
    # rows of the snapshot whose file was removed after it (retention, a replaced
    # instance) and that the live index no longer holds: restore deletes them
    removed_after_snapshot: tuple[str, ...] = ()
    # the audit trail's newest row and its hash in the snapshot: a copy of the
    # chain's head outside the database (restore checks it; an anchor for verify)
    audit_head: AuditAnchor | None = None

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": (
                FORMAT_VERSION_REMOVED_ROWS if self.removed_after_snapshot else FORMAT_VERSION
            ),
            "dicom_node_version": self.dicom_node_version,
            "created_at": self.created_at,
            "schema_revision": self.schema_revision,
            "database": {
                "kind": self.database_kind,
                "file": self.database_file,
                "size": self.database_size,
                "sha256": self.database_sha256,
            },
            "counts": {**self.counts, "files": len(self.files), "bytes": self.total_bytes},
            "files": [
                {"path": item.path, "size": item.size, "sha256": item.sha256} for item in self.files
            ],
            "removed_after_snapshot": list(self.removed_after_snapshot),
            "audit_head": (
                {"id": self.audit_head.row_id, "sha256": self.audit_head.row_hash}
                if self.audit_head is not None
                else None
            ),
        }


@dataclass(frozen=True, slots=True)
class BackupResult:
    destination: Path
    manifest: Manifest

    def describe(self) -> str:
        m = self.manifest
        return (
            f"backup written to {self.destination}: {len(m.files)} instance files "
            f"({format_bytes(m.total_bytes)}), {_KIND_NAMES[m.database_kind]} database at "
            f"schema revision {m.schema_revision}, {m.counts.get('imaging_requests', 0)} orders, "
            f"{m.counts.get('reports', 0)} reports, {m.counts.get('audit_events', 0)} audit events"
            + (
                f"; {len(m.removed_after_snapshot)} instances removed after the snapshot "
                "(retention or replaced) are left out"
                if m.removed_after_snapshot
                else ""
            )
            + (f"; audit trail head {m.audit_head}" if m.audit_head is not None else "")
        )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    source: Path
    manifest: Manifest
    head_revision: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # the restored audit trail's hash chain, checked after the load
    audit_chain: AuditChainReport | None = None

    @property
    def needs_upgrade(self) -> bool:
        return self.manifest.schema_revision != self.head_revision

    def describe(self) -> str:
        m = self.manifest
        lines = [
            f"restored from {self.source} (made {m.created_at} by dicom-node "
            f"{m.dicom_node_version}): {len(m.files)} instance files "
            f"({format_bytes(m.total_bytes)}) and the {_KIND_NAMES[m.database_kind]} database "
            f"at schema revision {m.schema_revision}"
        ]
        if self.needs_upgrade:
            lines.append(
                f"this version needs schema revision {self.head_revision}: "
                "run `dicom-node db upgrade` before serving"
            )
        if self.audit_chain is not None:
            lines.append(self.audit_chain.describe())
        return "\n".join(lines)


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def database_kind(url: str) -> DatabaseKind:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    raise BackupError(f"unsupported database kind {backend!r}")


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
            raise BackupError(f"backup failed: {_os_reason(exc)}") from None
    except BaseException:
        _discard(destination, created=created)
        raise
    _audit(
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
        _fsync_file(database_file)
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


def _os_reason(exc: OSError) -> str:
    """One line: the system's reason and the file (paths in the store and the
    backup are made of UIDs only)."""
    reason = exc.strerror or exc.__class__.__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


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


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _snapshot_sqlite(url: str, target: Path) -> _Snapshot:
    source_path = _sqlite_path(url)
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
        table: int(copy.execute(_COUNT_SQL[table]).fetchone()[0])
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
    head = copy.execute(_AUDIT_HEAD_SQL).fetchone() if {"id", "row_hash"} <= columns else None
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
                _run_tool(
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
        table: int(connection.execute(text(_COUNT_SQL[table])).scalar_one())
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
    head = connection.execute(text(_AUDIT_HEAD_SQL)).first() if chained else None
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
        _fsync_tree(target_root)
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
        _fsync_dir(destination)
        _fsync_dir(destination.parent)


# --------------------------------------------------------------------------- restore


def read_manifest(source: Path) -> Manifest:
    """The backup's manifest, checked for shape; BackupError when it is unusable."""
    if not source.is_dir():
        raise BackupError(f"{source} is not a directory")
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{source} has no {MANIFEST}: not a dicom-node backup, or an incomplete one"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise BackupError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackupError(f"{path} is not a dicom-node backup manifest")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise BackupError(
            f"backup format version {data.get('format_version')!r} is not supported "
            f"(this version reads {', '.join(str(v) for v in READABLE_VERSIONS)})"
        )
    try:
        database = data["database"]
        kind = database["kind"]
        if kind not in DATABASE_FILES or database["file"] != DATABASE_FILES[kind]:
            raise ValueError("database kind")
        files = tuple(
            ManifestFile(_safe_relative(item["path"]), int(item["size"]), str(item["sha256"]))
            for item in data["files"]
        )
        counts = {
            str(name): int(value)
            for name, value in data["counts"].items()
            if name in COUNTED_TABLES
        }
        return Manifest(
            database_kind=kind,
            database_file=str(database["file"]),
            database_size=int(database["size"]),
            database_sha256=str(database["sha256"]),
            schema_revision=str(data["schema_revision"]),
            created_at=str(data["created_at"]),
            dicom_node_version=str(data["dicom_node_version"]),
            counts=counts,
            files=files,
            removed_after_snapshot=tuple(
                _safe_relative(item) for item in data.get("removed_after_snapshot", [])
            ),
            audit_head=_audit_head(data.get("audit_head")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BackupError(f"{path} is malformed") from None


def _audit_head(value: object) -> AuditAnchor | None:
    """The manifest's audit head (backups made before the hash chain have none)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("audit_head")
    return AuditAnchor.parse(f"{int(value['id'])}:{value['sha256']}")


def _safe_relative(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("path")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.endswith(".dcm") or "\\" in value:
        raise ValueError("path")
    return value


def restore_backup(
    *,
    source: Path,
    database_url: str,
    data_dir: Path,
    fsync: bool = True,
    actor: SystemActor = SystemActor.CLI,
    owner_url: str = "",
) -> RestoreResult:
    """Bring a backup back into an empty data dir and an empty database.

    Everything is checked before anything is loaded: the manifest, the database
    kind, that the target is empty, that every file (and the dump) matches its
    manifest hash. A failure leaves the target as empty as it was.

    ``owner_url`` (PostgreSQL, ``database_owner_url``): the dump is loaded by
    the owner role, which then owns the restored schema, and the node's role
    (``database_url``'s) gets its privileges, as after ``db upgrade``. The
    restored audit trail's hash chain is checked, through the node's login,
    against the head the manifest recorded.
    """
    manifest = read_manifest(source)
    target_kind = database_kind(database_url)
    if owner_url and target_kind != "postgresql":
        raise BackupError("database_owner_url is for PostgreSQL only (SQLite has no roles)")
    load_url = owner_url or database_url
    if manifest.database_kind != target_kind:
        raise BackupError(
            f"{source} is a backup of a {_KIND_NAMES[manifest.database_kind]} database; "
            f"it cannot be restored into {_KIND_NAMES[target_kind]}"
        )
    head = migrate.head_revision()
    if not _known_revision(manifest.schema_revision):
        raise BackupError(
            f"the backup's schema revision {manifest.schema_revision} is unknown to "
            f"dicom-node {__version__} (made by a newer version?)"
        )
    _require_empty_data_dir(data_dir)
    _require_empty_database(load_url)
    dump = source / manifest.database_file
    try:
        found = digest_file(dump)
    except FileNotFoundError:
        raise BackupError(f"the backup has no {manifest.database_file}") from None
    if (found.size, found.file_sha256) != (manifest.database_size, manifest.database_sha256):
        raise BackupError(
            f"{manifest.database_file} in the backup differs from its manifest (corrupted): "
            "nothing restored"
        )

    installed: list[Path] = []
    existing_objects: set[tuple[str, str]] = set()
    store: FileStore | None = None
    try:
        try:
            store = FileStore(data_dir, fsync=fsync)
            _restore_files(source, manifest, store, installed)
            if target_kind == "sqlite":
                _load_sqlite(dump, manifest, _sqlite_path(database_url), fsync=fsync)
            else:
                existing_objects = _postgres_objects(load_url)
                _load_postgres(dump, load_url)
            _check_restored(load_url, manifest)
            _finish_restore(load_url, source, manifest, actor)
            if owner_url:
                _grant_node_role(owner_url, database_url)
            chain = _check_audit_chain(database_url, manifest)
            if fsync:
                _fsync_tree(store.instances)
        except OSError as exc:
            raise BackupError(f"restore failed: {_os_reason(exc)}; nothing restored") from None
    except BaseException:
        # the target was verified empty: leave it so (files, then the database)
        for path in installed:
            path.unlink(missing_ok=True)
        if store is not None:
            _remove_empty_dirs(store.instances)
        if target_kind == "sqlite":
            _remove_sqlite_files(_sqlite_path(database_url))
        else:
            _drop_postgres_objects(load_url, keep=existing_objects)
        raise
    return RestoreResult(source, manifest, head, audit_chain=chain)


def _grant_node_role(owner_url: str, database_url: str) -> None:
    try:
        migrate.grant_node_role(owner_url, migrate.node_role(database_url))
    except migrate.SchemaAccessError as exc:
        raise BackupError(f"{exc}; nothing restored") from None


def _check_audit_chain(database_url: str, manifest: Manifest) -> AuditChainReport | None:
    """The restored trail's chain, read with the node's own login (which must
    reach the restored database), and the manifest's head in it. A break is
    reported, not refused: a backup of a tampered trail is evidence to keep.
    None before revision 0008 (no chain yet: ``db upgrade`` computes it)."""
    db = Database(database_url)
    try:
        if "row_hash" not in {
            column["name"] for column in inspect(db.engine).get_columns("audit_events")
        }:
            return None
        return verify_audit_chain(db, anchor=manifest.audit_head)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise BackupError(
            f"database_url cannot read the restored database: {reason}; nothing restored"
        ) from None
    finally:
        db.dispose()


def _finish_restore(url: str, source: Path, manifest: Manifest, actor: SystemActor) -> None:
    """Delete the rows whose files were removed after the snapshot (the backup
    has no file for them) and audit the restore, in one transaction."""
    removed = list(manifest.removed_after_snapshot)
    db = Database(url)
    try:
        with db.unit_of_work() as session:
            series_pks: set[int] = set()
            for start in range(0, len(removed), 500):
                batch = removed[start : start + 500]
                series_pks.update(
                    session.scalars(
                        select(DicomInstance.series_pk).where(DicomInstance.file_path.in_(batch))
                    )
                )
                session.execute(delete(DicomInstance).where(DicomInstance.file_path.in_(batch)))
            _recount(session, series_pks)
            record_audit_event(
                session,
                application_activity_event(
                    "backup_restored",
                    Actor.system(actor),
                    TargetKind.BACKUP,
                    details={
                        "source": str(source),
                        "backup_created_at": manifest.created_at,
                        "schema_revision": manifest.schema_revision,
                        "files": len(manifest.files),
                        "counts": manifest.counts,
                        # paths are made of UIDs only
                        "removed_after_snapshot": removed,
                    },
                ),
            )
    finally:
        db.dispose()


def _recount(session: Session, series_pks: set[int]) -> None:
    """Instance counts of the series and studies that lost rows, as ingest
    counts them: a quarantined instance (another patient's, held) is not one."""
    if not series_pks:
        return
    for series in session.scalars(select(DicomSeries).where(DicomSeries.id.in_(series_pks))):
        series.instance_count = (
            session.scalar(
                select(func.count()).where(
                    DicomInstance.series_pk == series.id, DicomInstance.quarantined.is_(False)
                )
            )
            or 0
        )
    study_pks = set(
        session.scalars(select(DicomSeries.study_pk).where(DicomSeries.id.in_(series_pks)))
    )
    for study in session.scalars(select(DicomStudy).where(DicomStudy.id.in_(study_pks))):
        study.instance_count = (
            session.scalar(
                select(func.count())
                .select_from(DicomInstance)
                .join(DicomSeries, DicomSeries.id == DicomInstance.series_pk)
                .where(DicomSeries.study_pk == study.id, DicomInstance.quarantined.is_(False))
            )
            or 0
        )


# What a restore may have created in a PostgreSQL database that held no table
# before it: relations, routines (the audit triggers' functions) and types.
_PG_OBJECTS_SQL = """
SELECT 'relation:' || c.relkind::text, c.oid::regclass::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT 'routine', p.oid::regprocedure::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'type', t.oid::regtype::text
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_PG_DROP = {
    "relation:r": "DROP TABLE IF EXISTS {} CASCADE",
    "relation:p": "DROP TABLE IF EXISTS {} CASCADE",
    "relation:f": "DROP FOREIGN TABLE IF EXISTS {} CASCADE",
    "relation:v": "DROP VIEW IF EXISTS {} CASCADE",
    "relation:m": "DROP MATERIALIZED VIEW IF EXISTS {} CASCADE",
    "relation:S": "DROP SEQUENCE IF EXISTS {} CASCADE",
    "routine": "DROP ROUTINE IF EXISTS {} CASCADE",
    "type": "DROP TYPE IF EXISTS {} CASCADE",
}


def _postgres_objects(url: str) -> set[tuple[str, str]]:
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            return {
                (str(kind), str(name)) for kind, name in connection.execute(text(_PG_OBJECTS_SQL))
            }
    finally:
        db.dispose()


def _drop_postgres_objects(url: str, *, keep: set[tuple[str, str]]) -> None:
    """Undo a pg_restore whose result failed its checks (or was interrupted):
    drop what it created, in one transaction. The names come from the catalog,
    quoted by PostgreSQL (regclass/regprocedure/regtype text)."""
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            created = sorted(
                {(str(kind), str(name)) for kind, name in connection.execute(text(_PG_OBJECTS_SQL))}
                - keep,
                key=lambda item: list(_PG_DROP).index(item[0]),
            )
            for kind, name in created:
                connection.execute(text(_PG_DROP[kind].format(name)))
    except Exception as exc:  # the original failure is what the operator must see
        log.error("could not undo the database restore: %s", exc)
    finally:
        db.dispose()


def _known_revision(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown id
        return False


def _require_empty_data_dir(data_dir: Path) -> None:
    instances = data_dir / "instances"
    if instances.is_dir() and any(names for _dir, _subdirs, names in os.walk(instances)):
        raise BackupError(
            f"data dir {data_dir} already holds instance files: restore needs an empty data dir"
        )


def _require_empty_database(url: str) -> None:
    if database_kind(url) == "sqlite":
        path = _sqlite_path(url)
        if path.exists():
            try:
                with closing(sqlite3.connect(path)) as connection:
                    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error:
                tables = (1,)
            if tables and tables[0]:
                raise BackupError(
                    f"the SQLite database {path} already exists: restore needs an empty target"
                )
        return
    db = Database(url)
    try:
        if inspect(db.engine).get_table_names():
            raise BackupError("the database already has tables: restore needs an empty database")
    except BackupError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise BackupError(f"the database is unreachable: {reason}") from None
    finally:
        db.dispose()


def _restore_files(
    source: Path, manifest: Manifest, store: FileStore, installed: list[Path]
) -> None:
    bad = 0
    for item in manifest.files:
        try:
            final = store.absolute(item.path)
        except ValueError:
            bad += 1
            continue
        temp = store.tmp / f"{uuid.uuid4().hex}.restoring"
        try:
            with temp.open("xb") as out:
                found = digest_file(source / FILES_DIR / item.path, copy_to=out)
                if store.fsync:
                    out.flush()
                    os.fsync(out.fileno())
        except FileNotFoundError:
            temp.unlink(missing_ok=True)
            bad += 1
            continue
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if (found.size, found.file_sha256) != (item.size, item.sha256):
            temp.unlink(missing_ok=True)
            bad += 1
            continue
        installed.append(final)
        store.install(temp, item.path)
    if bad:
        raise BackupError(
            f"{bad} of {len(manifest.files)} files in the backup are missing or differ from "
            "its manifest (corrupted): nothing restored"
        )


def _load_sqlite(dump: Path, manifest: Manifest, target: Path, *, fsync: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_sqlite_files(target)  # an empty file left by an earlier attempt
    temp = target.with_name(f".{target.name}.restoring")
    try:
        with temp.open("wb") as out:
            found = digest_file(dump, copy_to=out)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if found.file_sha256 != manifest.database_sha256:
        temp.unlink(missing_ok=True)
        raise BackupError("the database copy differs from the backup (disk error?)")
    os.replace(temp, target)
    if fsync:
        _fsync_dir(target.parent)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _load_postgres(dump: Path, url: str) -> None:
    database = make_url(url).database
    if not database:
        raise BackupError("the database URL names no database")
    _run_tool(
        [
            postgres_tool("pg_restore"),
            "--no-owner",
            "--no-acl",
            # all or nothing: a failed restore leaves the database empty
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={database}",
            str(dump),
        ],
        url,
        what="pg_restore",
    )


def _check_restored(url: str, manifest: Manifest) -> None:
    db = Database(url)
    try:
        revision = migrate.current_revision(db.engine)
        if revision != manifest.schema_revision:
            raise BackupError(
                f"the restored database is at schema revision {revision}, "
                f"the manifest says {manifest.schema_revision}"
            )
        with db.engine.connect() as connection:
            for table, expected in manifest.counts.items():
                found = connection.execute(text(_COUNT_SQL[table])).scalar_one()
                if found != expected:
                    raise BackupError(
                        f"the restored database has {found} rows in {table}, "
                        f"the manifest says {expected}"
                    )
            indexed = set(connection.scalars(select(DicomInstance.file_path)))
        listed = {item.path for item in manifest.files}
        removed = set(manifest.removed_after_snapshot)
        unlisted = indexed - listed - removed
        not_indexed = (listed | removed) - indexed
        if unlisted or not_indexed or listed & removed:
            raise BackupError(
                f"the restored database and the manifest disagree: {len(unlisted)} indexed "
                f"files are not in the backup, {len(not_indexed)} files of the backup are not "
                "indexed: nothing restored"
            )
    finally:
        db.dispose()


# --------------------------------------------------------------------------- helpers


def postgres_tool(name: str) -> str:
    """The newest installed PostgreSQL client tool (newer pg_dump reads older servers)."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: _version_key(Path(path).parent.parent.name),
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools")
    return found


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit()) or (0,)


def libpq_environment(url: str) -> dict[str, str]:
    """The connection as libpq environment variables: the password never appears
    on a command line (where `ps` shows it) nor in a message."""
    parsed = make_url(url)
    env = dict(os.environ)
    values = {
        "PGHOST": parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
    }
    for key, variable in _LIBPQ_QUERY_ENV.items():
        value = parsed.query.get(key)
        if isinstance(value, tuple):
            value = value[0] if value else None
        if value:
            values[variable] = str(value)
    env.update({name: value for name, value in values.items() if value})
    return env


def _run_tool(command: list[str], url: str, *, what: str) -> None:
    try:
        result = subprocess.run(
            command,
            env=libpq_environment(url),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise BackupError(f"cannot run {what}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit status {result.returncode}"
        password = make_url(url).password
        if password:
            reason = reason.replace(str(password), "***")
        raise BackupError(f"{what} failed: {reason}")


def _audit(url: str, record: AuditRecord) -> None:
    db = Database(url)
    try:
        with db.unit_of_work() as session:
            record_audit_event(session, record)
    finally:
        db.dispose()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every directory's entries, deepest first (the files were flushed as written)."""
    directories = [Path(directory) for directory, _subdirs, _names in os.walk(root)]
    for directory in reversed(directories):
        _fsync_dir(directory)
    _fsync_dir(root.parent)


def _remove_empty_dirs(root: Path) -> None:
    for directory, _subdirs, _names in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if Path(directory) != root:
            try:
                Path(directory).rmdir()
            except OSError:
                continue
