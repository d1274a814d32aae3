"""The backup format and what backup and restore share: the manifest, the
results, the database tools (pg_dump, pg_restore, psql) and durable writes.

A backup is a directory (``backup.py`` writes it, ``restore.py`` loads it):

    manifest.json        written last: a directory without it is an incomplete backup
    database.sqlite3     SQLite online backup (``Connection.backup``), or
    database.pgdump      ``pg_dump --format=custom`` of the PostgreSQL database
    instances/<study>/<series>/<sop>.dcm
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url

from dicom_node.db.engine import Database
from dicom_node.domain.audit import (
    AuditRecord,
)
from dicom_node.domain.errors import Cancelled
from dicom_node.services.audit.chain import AuditAnchor, AuditChainReport
from dicom_node.services.audit.record import record_audit_event

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
COUNT_SQL = {name: f"SELECT count(*) FROM {name}" for name in COUNTED_TABLES}  # noqa: S608
AUDIT_HEAD_SQL = "SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1"


DatabaseKind = Literal["sqlite", "postgresql"]
KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# libpq settings that may ride in the SQLAlchemy URL's query string
LIBPQ_QUERY_ENV = {
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
            f"({format_bytes(m.total_bytes)}), {KIND_NAMES[m.database_kind]} database at "
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
            f"({format_bytes(m.total_bytes)}) and the {KIND_NAMES[m.database_kind]} database "
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
    for key, variable in LIBPQ_QUERY_ENV.items():
        value = parsed.query.get(key)
        if isinstance(value, tuple):
            value = value[0] if value else None
        if value:
            values[variable] = str(value)
    env.update({name: value for name, value in values.items() if value})
    return env


def run_tool(command: list[str], url: str, *, what: str) -> None:
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


def record_outside(url: str, record: AuditRecord) -> None:
    db = Database(url)
    try:
        with db.unit_of_work() as session:
            record_audit_event(session, record)
    finally:
        db.dispose()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every directory's entries, deepest first (the files were flushed as written)."""
    directories = [Path(directory) for directory, _subdirs, _names in os.walk(root)]
    for directory in reversed(directories):
        fsync_dir(directory)
    fsync_dir(root.parent)


def remove_empty_dirs(root: Path) -> None:
    for directory, _subdirs, _names in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if Path(directory) != root:
            try:
                Path(directory).rmdir()
            except OSError:
                continue


def os_reason(exc: OSError) -> str:
    """One line: the system's reason and the file (paths in the store and the
    backup are made of UIDs only)."""
    reason = exc.strerror or exc.__class__.__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)
