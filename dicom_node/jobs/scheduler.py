"""The scheduler and its job table: every job is registered here, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("dicom_node.jobs")


@dataclass(frozen=True)
class JobSpec:
    job_id: str  # stable: the same id on every node and across restarts
    func: Callable[[], object]
    interval_seconds: float


def build_scheduler(jobs: list[JobSpec]) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    for job in jobs:
        scheduler.add_job(
            _logged(job),
            "interval",
            seconds=job.interval_seconds,
            id=job.job_id,
            # one run at a time; a missed run is merged, not replayed in a burst
            max_instances=1,
            coalesce=True,
        )
    return scheduler


def _logged(job: JobSpec) -> Callable[[], None]:
    def run() -> None:
        try:
            result = job.func()
        except Exception:
            log.exception("job %s failed", job.job_id)
            return
        log.info("job %s ran: %s", job.job_id, result)

    return run
