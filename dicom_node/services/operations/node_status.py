"""The node's state in a few facts, for a person (``GET /api/node-status``, the
administration page): DICOM associations, queues, scheduled jobs, disk, the
last backup, the components' health.

No second truth: the counters and gauges are read from the very exposition
``GET /metrics`` serves (``dicom_node.metrics.render``, parsed back with
prometheus_client's own parser), the health from the same probes as
``GET /health`` (handed in by the caller), the last backup from the audit
trail (the ``backup_created`` Export event every backup writes). Only the disk
figures are read here, from the file system of the store and of the backups.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import TargetKind
from dicom_node.metrics import multiprocess_dir, render, store_temp_dir
from dicom_node.settings import Settings

BACKUP_ACTION = "backup_created"
BACKUP_JOB = "backup"

# (sample name, labels) -> value, as the exposition gives them
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Disk:
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class LastBackup:
    at: datetime
    outcome: str
    files: int | None
    bytes: int | None


@dataclass(frozen=True)
class NodeStatus:
    healthy: bool
    database: bool
    components: dict[str, bool]
    associations_open: int
    associations_accepted: int
    associations_rejected: int
    associations_aborted: int
    instances_received: int
    instances_refused: int
    worklist_open: int
    worklist_overdue: int
    reconciliation_open: int
    store_temp_files: int
    # job -> outcome -> runs since this process started
    job_runs: dict[str, dict[str, int]]
    store_disk: Disk | None
    backup_disk: Disk | None
    backups_configured: bool
    backup_interval_hours: float
    last_backup: LastBackup | None
    metrics: Samples = field(repr=False, default_factory=dict)


def read_metrics(settings: Settings, db: Database) -> Samples:
    """The samples ``GET /metrics`` would answer now (the same ``render`` call)."""
    text = render(
        db=db,
        temp_dir=store_temp_dir(settings.data_dir),
        multiprocess_path=(
            multiprocess_dir(settings.data_dir) if settings.dicom_worker_count > 1 else None
        ),
    ).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _total(samples: Samples, name: str, **match: str) -> int:
    """The sum of the series of ``name`` whose labels include ``match``."""
    total = 0.0
    for (sample, labels), value in samples.items():
        if sample == name and all((k, v) in labels for k, v in match.items()):
            total += value
    return int(total)


def _job_runs(samples: Samples) -> dict[str, dict[str, int]]:
    runs: dict[str, dict[str, int]] = {}
    for (sample, labels), value in samples.items():
        if sample == "dicom_node_job_runs_total":
            named = dict(labels)
            runs.setdefault(named["job"], {})[named["outcome"]] = int(value)
    return runs


def disk_of(path: Path | None) -> Disk | None:
    """The file system holding ``path`` (its nearest existing parent): None
    when there is no such path or it cannot be read."""
    if path is None:
        return None
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return Disk(str(path), usage.total, usage.used, usage.free)


def last_backup(db: Database) -> LastBackup | None:
    """The newest backup the audit trail records (scheduled or by command)."""
    with db.read() as session:
        event = session.scalar(
            select(AuditEvent)
            .where(
                AuditEvent.action == BACKUP_ACTION,
                AuditEvent.target_class == TargetKind.BACKUP.value,
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        if event is None:
            return None
        details = event.details if isinstance(event.details, dict) else {}
        return LastBackup(
            at=event.timestamp,
            outcome=event.outcome,
            files=_int_or_none(details.get("files")),
            bytes=_int_or_none(details.get("bytes")),
        )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def node_status(
    settings: Settings, db: Database, *, database_up: bool, components: Mapping[str, bool]
) -> NodeStatus:
    """The facts now. ``database_up`` and ``components``: what ``GET /health``
    reads (``Database.ping`` and the front-ends' probes)."""
    samples = read_metrics(settings, db)
    backup = last_backup(db) if database_up else None
    return NodeStatus(
        healthy=database_up and all(components.values()),
        database=database_up,
        components=dict(components),
        associations_open=_total(samples, "dicom_node_associations_active"),
        associations_accepted=_total(samples, "dicom_node_associations_total", result="accepted"),
        associations_rejected=_total(samples, "dicom_node_associations_total", result="rejected"),
        associations_aborted=_total(samples, "dicom_node_associations_aborted_total"),
        instances_received=_total(samples, "dicom_node_instances_received_total"),
        instances_refused=_total(samples, "dicom_node_instances_refused_total"),
        worklist_open=_total(samples, "dicom_node_worklist_open_items"),
        worklist_overdue=_total(samples, "dicom_node_worklist_overdue_items"),
        reconciliation_open=_total(samples, "dicom_node_reconciliation_open_studies"),
        store_temp_files=_total(samples, "dicom_node_store_temp_files"),
        job_runs=_job_runs(samples),
        store_disk=disk_of(settings.data_dir),
        backup_disk=disk_of(settings.backup_dir),
        backups_configured=settings.backup_dir is not None,
        backup_interval_hours=settings.backup_interval_hours,
        last_backup=backup,
        metrics=samples,
    )
