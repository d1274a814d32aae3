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
dataset); any disagreement fails the backup, which then has no manifest.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot
(``pg_export_snapshot``); ``pg_dump --snapshot`` dumps exactly that state while
the same transaction reads the file list, so dump and file list agree.

The manifest lists every file with its size and the SHA-256 of the whole file
(what ``sha256sum`` prints), the database dump's size and SHA-256, the schema
revision, and row counts that restore checks again after loading.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.engine import make_url

from dicom_node import __version__
from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.services.audit import record_audit_event
from dicom_node.services.integrity import digest_file
from dicom_node.storage import FileStore

FORMAT = "dicom-node-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES_DIR = "instances"
DATABASE_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
# row counts kept in the manifest and checked again after a restore
# a snapshot whose files were removed meanwhile (retention) is taken again, this often
SNAPSHOT_ATTEMPTS = 3
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

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
        )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    source: Path
    manifest: Manifest
    head_revision: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

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


def create_backup(
    *,
    database_url: str,
    store: FileStore,
    destination: Path,
    fsync: bool = True,
    now: datetime | None = None,
    actor: str = "backup",
) -> BackupResult:
    """Snapshot the database, copy the files it indexes, write the manifest last.

    Raises BackupError (leaving ``destination`` without a manifest) when a file
    is missing or differs from the index, or the database cannot be dumped.
    """
    kind = database_kind(database_url)
    resolved = destination.resolve()
    if resolved.is_relative_to(store.instances) or resolved.is_relative_to(store.tmp):
        raise BackupError(f"{destination} is inside the store: back up somewhere else")
    _prepare_destination(destination)
    database_file = destination / DATABASE_FILES[kind]
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        if kind == "sqlite":
            snapshot = _snapshot_sqlite(database_url, database_file)
        else:
            snapshot = _snapshot_postgres(database_url, database_file)
        if fsync:
            _fsync_file(database_file)
        try:
            files = _copy_indexed_files(
                store, snapshot.rows, destination / FILES_DIR, database_url, fsync=fsync
            )
            break
        except _FilesMovedOn:
            if attempt == SNAPSHOT_ATTEMPTS:
                raise BackupError(
                    f"indexed files were removed during each of {SNAPSHOT_ATTEMPTS} attempts "
                    "(retention or replaced instances): backup incomplete (no manifest); "
                    "try again later"
                ) from None
            for child in destination.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
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
    )
    _write_manifest(destination, manifest, fsync=fsync)
    _audit(
        database_url,
        AuditRecord(
            event_code=AuditEventCode.EXPORT,
            action="backup_created",
            actor=actor,
            target_class="backup",
            details={
                "destination": str(destination),
                "schema_revision": manifest.schema_revision,
                "files": len(files),
                "bytes": manifest.total_bytes,
                "counts": manifest.counts,
            },
        ),
    )
    return BackupResult(destination, manifest)


def _prepare_destination(destination: Path) -> None:
    if destination.exists():
        if not destination.is_dir():
            raise BackupError(f"{destination} exists and is not a directory")
        if any(destination.iterdir()):
            raise BackupError(f"{destination} is not empty: back up into a new or empty directory")
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {destination}: {exc.strerror or exc}") from None


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
    return _Snapshot(str(revision[0]) if revision else "", counts, rows)


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
    return _Snapshot(str(revision or ""), counts, rows)


class _FilesMovedOn(Exception):
    """Files of the snapshot were removed by a change committed after it (a
    retention purge, a replaced instance): a newer snapshot will agree."""


def _copy_indexed_files(
    store: FileStore,
    rows: Sequence[tuple[str, int, str]],
    target_root: Path,
    database_url: str,
    *,
    fsync: bool,
) -> list[ManifestFile]:
    files: list[ManifestFile] = []
    missing: list[str] = []
    size_differs = content_differs = 0
    target_root.mkdir()
    for relative, size, digest in rows:
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
            target.unlink(missing_ok=True)
            missing.append(relative)
            continue
        if found.size != size:
            size_differs += 1
        elif found.content_sha256 != digest:
            content_differs += 1
        files.append(ManifestFile(relative, found.size, found.file_sha256))
    bad = len(missing) + size_differs + content_differs
    if missing and bad == len(missing) and not _still_indexed(database_url, missing):
        raise _FilesMovedOn()
    if bad:
        raise BackupError(
            f"{bad} of {len(rows)} indexed files are missing or differ from the index "
            f"({len(missing)} missing, {size_differs} wrong size, "
            f"{content_differs} wrong content): "
            "backup incomplete (no manifest); run `dicom-node verify`"
        )
    if fsync:
        _fsync_tree(target_root)
    return files


def _still_indexed(database_url: str, paths: list[str]) -> bool:
    """Does the live index still point at any of these paths?"""
    db = Database(database_url)
    try:
        with db.read() as session:
            for start in range(0, len(paths), 500):
                found = session.scalar(
                    select(DicomInstance.id)
                    .where(DicomInstance.file_path.in_(paths[start : start + 500]))
                    .limit(1)
                )
                if found is not None:
                    return True
        return False
    finally:
        db.dispose()


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
    if data.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {data.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
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
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BackupError(f"{path} is malformed") from None


def _safe_relative(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("path")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.endswith(".dcm") or "\\" in value:
        raise ValueError("path")
    return value


def restore_backup(
    *, source: Path, database_url: str, data_dir: Path, fsync: bool = True, actor: str = "restore"
) -> RestoreResult:
    """Bring a backup back into an empty data dir and an empty database.

    Everything is checked before anything is loaded: the manifest, the database
    kind, that the target is empty, that every file (and the dump) matches its
    manifest hash. A failure leaves the target as empty as it was.
    """
    manifest = read_manifest(source)
    target_kind = database_kind(database_url)
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
    _require_empty_database(database_url)
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

    store = FileStore(data_dir, fsync=fsync)
    installed: list[Path] = []
    try:
        _restore_files(source, manifest, store, installed)
        if target_kind == "sqlite":
            _load_sqlite(dump, manifest, _sqlite_path(database_url), fsync=fsync)
        else:
            _load_postgres(dump, database_url)
        _check_restored(database_url, manifest)
    except BaseException:
        for path in installed:
            path.unlink(missing_ok=True)
        _remove_empty_dirs(store.instances)
        if target_kind == "sqlite":
            _remove_sqlite_files(_sqlite_path(database_url))
        raise
    if fsync:
        _fsync_tree(store.instances)
    _audit(
        database_url,
        AuditRecord(
            event_code=AuditEventCode.APPLICATION_ACTIVITY,
            action="backup_restored",
            actor=actor,
            target_class="backup",
            details={
                "source": str(source),
                "backup_created_at": manifest.created_at,
                "schema_revision": manifest.schema_revision,
                "files": len(manifest.files),
                "counts": manifest.counts,
            },
        ),
    )
    return RestoreResult(source, manifest, head)


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
    with temp.open("wb") as out:
        found = digest_file(dump, copy_to=out)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
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
