"""Maintenance jobs: stale scheduled orders, re-matching unmatched studies,
image retention and trimming the change feed.

A job is the call of one service function (its schedule is registered in
``node.py``): each opens its own units of work and returns a frozen result
whose ``str`` is counts only (it goes to the log: no identifiers, no PHI). The
rules live in the services: ``services/workflow/stale_orders.py``,
``services/workflow/rematch.py``, ``services/operations/retention.py``. What
the jobs do is audited with the actor ``scheduler``
(``Actor.system(SystemActor.SCHEDULER)``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.matching import SlaPolicy
from dicom_node.services.operations.retention import (
    PurgedStudy,
    count_kept_for_late_images,
    purge_next_study,
    remove_purged_files,
    trim_change_log,
)
from dicom_node.services.workflow import rematch, stale_orders
from dicom_node.services.workflow.rematch import RematchResult as RematchResult
from dicom_node.services.workflow.rematch import RematchWatermark as RematchWatermark
from dicom_node.services.workflow.stale_orders import StaleOrdersResult as StaleOrdersResult
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.jobs.maintenance")

# who the jobs' audit events name
JOB_ACTOR = Actor.system(SystemActor.SCHEDULER)
# rows per unit of work of the stale-orders and re-matching jobs
BATCH_SIZE = 200


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def run_stale_orders(
    db: Database,
    *,
    stale_hours: float,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> StaleOrdersResult:
    """Flag scheduled orders whose slot passed, close the follow-ups of those
    that moved on (``stale_orders.flag_stale_orders``)."""
    result = stale_orders.flag_stale_orders(
        db, stale_hours=stale_hours, actor=JOB_ACTOR, now=now, batch_size=batch_size
    )
    log.info("stale orders: %s", result)
    return result


def run_rematch(
    db: Database,
    *,
    sla: SlaPolicy,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    watermark: RematchWatermark | None = None,
) -> RematchResult:
    """Match again the unmatched studies a new or changed order could claim
    (``rematch.rematch_unmatched``; ``watermark``: the process's own by
    default)."""
    result = rematch.rematch_unmatched(
        db, sla=sla, actor=JOB_ACTOR, now=now, batch_size=batch_size, watermark=watermark
    )
    log.info("re-matching (%s): %s", "full pass" if result.full_pass else "changed orders", result)
    return result


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionResult:
    studies_purged: int
    instances_deleted: int
    files_removed: int
    bytes_freed: int
    # past retention and otherwise settled, kept for images that arrived
    # after the final report (never read: waiting for an addendum)
    studies_kept_late_images: int = 0
    stopped_early: bool = False  # the node is stopping; the next run goes on

    def __str__(self) -> str:
        return (
            f"{self.studies_purged} studies purged, {self.instances_deleted} instances "
            f"deleted, {self.files_removed} files removed ({self.bytes_freed} bytes), "
            f"{self.studies_kept_late_images} kept for images after the final report"
            + ("; stopped early: the node is stopping" if self.stopped_early else "")
        )


def run_retention(
    db: Database,
    store: FileStore,
    *,
    retention_days: int,
    now: datetime | None = None,
    max_studies: int = 100,
    cancel: threading.Event | None = None,
) -> RetentionResult:
    """Purge the images of up to ``max_studies`` studies past retention; off
    (nothing at all) when ``retention_days`` is 0. One unit of work per study,
    then its files (services.retention); ``cancel`` (the node stopping) is
    looked at between studies, never inside one."""
    if retention_days <= 0:
        return RetentionResult(0, 0, 0, 0)
    cutoff = _now(now) - timedelta(days=retention_days)
    purged: list[PurgedStudy] = []
    files = 0
    after_id = 0
    stopped_early = False
    while len(purged) < max_studies:
        if cancel is not None and cancel.is_set():
            stopped_early = True
            break
        with db.unit_of_work() as session:
            found = purge_next_study(
                session,
                cutoff=cutoff,
                after_id=after_id,
                retention_days=retention_days,
                actor=SystemActor.SCHEDULER.value,
            )
        if found is None:
            break
        after_id, study = found
        if study is not None:
            purged.append(study)
            files += remove_purged_files(db, store, study)
    with db.read() as session:
        kept_late = count_kept_for_late_images(session, cutoff=cutoff)
    result = RetentionResult(
        len(purged),
        sum(study.instances for study in purged),
        files,
        sum(study.bytes for study in purged),
        kept_late,
        stopped_early,
    )
    log.info("retention: %s", result)
    return result


# --------------------------------------------------------------------------- change feed


@dataclass(frozen=True)
class ChangeLogTrimResult:
    entries_deleted: int

    def __str__(self) -> str:
        return f"{self.entries_deleted} change-feed entries trimmed"


def run_change_log_trim(
    db: Database, *, keep_days: float, now: datetime | None = None
) -> ChangeLogTrimResult:
    with db.unit_of_work() as session:
        deleted = trim_change_log(session, before=_now(now) - timedelta(days=keep_days))
    result = ChangeLogTrimResult(deleted)
    log.info("change feed: %s", result)
    return result
