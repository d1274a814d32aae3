"""Scheduled backups: a timestamped backup under ``backup_dir``, the newest kept."""

from __future__ import annotations

import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from dicom_node.services.backup import MANIFEST, BackupError, create_backup
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.jobs")

PREFIX = "dicom-node-backup-"
INCOMPLETE_SUFFIX = ".incomplete"
_NAME = re.compile(rf"^{re.escape(PREFIX)}\d{{8}}T\d{{6}}Z$")


def run_scheduled_backup(settings: Settings, *, now: datetime | None = None) -> str:
    """Make ``<backup_dir>/dicom-node-backup-<UTC time>`` and prune to ``backup_keep``.

    The backup is built under a ``.incomplete`` name and renamed once its
    manifest is written, so the pruning (and an operator) only ever counts
    complete backups. A failed run removes its own incomplete directory and
    raises, so the scheduler logs it as a failure.
    """
    if settings.backup_dir is None:
        return "backups not configured (backup_dir is unset)"
    now = (now or datetime.now(UTC)).astimezone(UTC)
    root = settings.backup_dir
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{now:%Y%m%dT%H%M%SZ}"
    final = root / name
    if final.exists():
        return f"backup {name} already exists"
    work = root / f"{name}{INCOMPLETE_SUFFIX}"
    shutil.rmtree(work, ignore_errors=True)  # a leftover of a crashed run at this very second
    try:
        result = create_backup(
            database_url=settings.database_url,
            store=FileStore(settings.data_dir, fsync=settings.fsync),
            destination=work,
            fsync=settings.fsync,
            now=now,
            actor="scheduler",
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    work.rename(final)
    removed = prune_backups(root, keep=settings.backup_keep)
    manifest = result.manifest
    return (
        f"backup {name}: {len(manifest.files)} files, schema {manifest.schema_revision}; "
        f"{len(removed)} old backups removed"
    )


def complete_backups(root: Path) -> list[Path]:
    """This job's finished backups (name pattern and manifest), oldest first."""
    return sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and _NAME.match(path.name) and (path / MANIFEST).is_file()
    )


def prune_backups(root: Path, *, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` complete backups; never touches other files."""
    backups = complete_backups(root)
    doomed = backups[:-keep] if keep > 0 else backups
    for path in doomed:
        shutil.rmtree(path)
        log.info("old backup %s removed", path.name)
    return doomed


__all__ = ["BackupError", "complete_backups", "prune_backups", "run_scheduled_backup"]
