"""`dicom-node restore`: loading a backup into an empty data directory and
database, checked against its manifest (``backup_format.py``) before the node
may start on it.

The target must be empty (a restore never merges); the files are copied and
hashed, the database loaded, the row counts and indexed paths compared with
the manifest, the audit chain checked up to the head the backup recorded; a
failed check or an interruption undoes the load.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path, PurePosixPath

from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dicom_node import __version__
from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import (
    Actor,
    SystemActor,
    TargetKind,
    application_activity_event,
)
from dicom_node.services.audit.chain import AuditAnchor, AuditChainReport, verify_audit_chain
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.operations.backup_format import (
    COUNT_SQL,
    COUNTED_TABLES,
    DATABASE_FILES,
    FILES_DIR,
    FORMAT,
    KIND_NAMES,
    MANIFEST,
    READABLE_VERSIONS,
    BackupError,
    Manifest,
    ManifestFile,
    RestoreResult,
    database_kind,
    fsync_dir,
    fsync_tree,
    os_reason,
    postgres_tool,
    remove_empty_dirs,
    run_tool,
    sqlite_path,
)
from dicom_node.services.operations.verify import digest_file
from dicom_node.storage import FileStore

# the backup and restore lines share one logger name, as before the split
log = logging.getLogger("dicom_node.backup")

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
            f"{source} is a backup of a {KIND_NAMES[manifest.database_kind]} database; "
            f"it cannot be restored into {KIND_NAMES[target_kind]}"
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
                _load_sqlite(dump, manifest, sqlite_path(database_url), fsync=fsync)
            else:
                existing_objects = postgres_objects(load_url)
                _load_postgres(dump, load_url)
            _check_restored(load_url, manifest)
            _finish_restore(load_url, source, manifest, actor)
            if owner_url:
                _grant_node_role(owner_url, database_url)
            chain = _check_audit_chain(database_url, manifest)
            if fsync:
                fsync_tree(store.instances)
        except OSError as exc:
            raise BackupError(f"restore failed: {os_reason(exc)}; nothing restored") from None
    except BaseException:
        # the target was verified empty: leave it so (files, then the database)
        for path in installed:
            path.unlink(missing_ok=True)
        if store is not None:
            remove_empty_dirs(store.instances)
        if target_kind == "sqlite":
            _remove_sqlite_files(sqlite_path(database_url))
        else:
            _droppostgres_objects(load_url, keep=existing_objects)
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
            recount(session, series_pks)
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


def recount(session: Session, series_pks: set[int]) -> None:
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


def postgres_objects(url: str) -> set[tuple[str, str]]:
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            return {
                (str(kind), str(name)) for kind, name in connection.execute(text(_PG_OBJECTS_SQL))
            }
    finally:
        db.dispose()


def _droppostgres_objects(url: str, *, keep: set[tuple[str, str]]) -> None:
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
        path = sqlite_path(url)
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
        fsync_dir(target.parent)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _load_postgres(dump: Path, url: str) -> None:
    database = make_url(url).database
    if not database:
        raise BackupError("the database URL names no database")
    run_tool(
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
                found = connection.execute(text(COUNT_SQL[table])).scalar_one()
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
