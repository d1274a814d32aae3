"""Scheduled backups: a timestamped backup under ``backup_dir``, the newest kept."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from dicom_node.domain.audit import SystemActor
from dicom_node.services.operations.backup import create_backup
from dicom_node.services.operations.backup_format import MANIFEST, BackupCancelled, BackupError
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.jobs")

PREFIX = "dicom-node-backup-"
INCOMPLETE_SUFFIX = ".incomplete"
_NAME = re.compile(rf"^{re.escape(PREFIX)}\d{{8}}T\d{{6}}Z$")
_INCOMPLETE = re.compile(rf"^{re.escape(PREFIX)}\d{{8}}T\d{{6}}Z{re.escape(INCOMPLETE_SUFFIX)}$")
# an incomplete backup in which nothing changed this long is a crashed run's
# leftover, not a run in progress on another node: a run keeps writing (the dump
# grows, then a file is copied every few milliseconds to seconds)
STALE_INCOMPLETE_SECONDS = 3600


def run_scheduled_backup(
    settings: Settings, *, now: datetime | None = None, cancel: threading.Event | None = None
) -> str:
    """Make ``<backup_dir>/dicom-node-backup-<UTC time>`` and prune to ``backup_keep``.

    The backup is built under a ``.incomplete`` name and renamed once its
    manifest is written, so the pruning (and an operator) only ever counts
    complete backups. A failed run removes its own incomplete directory and
    raises, so the scheduler logs it as a failure; a crashed run's incomplete
    directory is removed by a later run once stale (``remove_stale_incomplete``).
    ``cancel`` (the node stopping) ends it between files with BackupCancelled,
    its copy removed.
    """
    if settings.backup_dir is None:
        return "backups not configured (backup_dir is unset)"
    now = (now or datetime.now(UTC)).astimezone(UTC)
    root = settings.backup_dir
    root.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_incomplete(root)
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
            actor=SystemActor.SCHEDULER,
            record_as=final,
            cancel=cancel,
        )
    except BackupCancelled:
        shutil.rmtree(work, ignore_errors=True)  # no partial copy of patient data
        raise  # the tick counts as cancelled, not as a backup made
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    work.rename(final)
    removed = prune_backups(root, keep=settings.backup_keep)
    manifest = result.manifest
    return (
        f"backup {name}: {len(manifest.files)} files, schema {manifest.schema_revision}; "
        f"{len(removed)} old backups removed"
        + (f", {len(stale)} stale incomplete backups removed" if stale else "")
    )


def remove_stale_incomplete(
    root: Path, *, older_than_seconds: float = STALE_INCOMPLETE_SECONDS, now: float | None = None
) -> list[Path]:
    """Remove this job's ``.incomplete`` directories that nothing wrote into for
    ``older_than_seconds``: the leftovers of crashed runs (a killed process, a
    power cut), which hold patient data and are never counted as backups.

    Conservative, since another node of a cluster may be running the job
    (the scheduler's advisory lock keeps two runs apart, but a run can outlive a
    lost lock): the age is that of the newest directory or file in the tree,
    so a backup still being written, however long it has run, is never taken
    for a leftover; only names of this job's pattern are considered."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    removed: list[Path] = []
    for path in sorted(root.iterdir()):
        if not _INCOMPLETE.match(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            if _changed_since(path, cutoff):
                continue
        except OSError:
            continue  # removed meanwhile, or unreadable: leave it
        shutil.rmtree(path, ignore_errors=True)
        log.warning("stale incomplete backup %s removed (a crashed run)", path.name)
        removed.append(path)
    return removed


def _changed_since(root: Path, cutoff: float) -> bool:
    """Was anything in the tree (a directory entry or a file's data) changed
    at or after ``cutoff``? Stops at the first such change."""
    if root.stat().st_mtime >= cutoff:
        return True
    for directory, _subdirs, names in os.walk(root):
        for path in (Path(directory), *(Path(directory) / name for name in names)):
            try:
                if path.stat().st_mtime >= cutoff:
                    return True
            except FileNotFoundError:
                continue
    return False


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


__all__ = [
    "BackupError",
    "complete_backups",
    "prune_backups",
    "remove_stale_incomplete",
    "run_scheduled_backup",
]
