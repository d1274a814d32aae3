"""The job scheduler: interval jobs, each run on one node per tick.

The jobs are registered in one place, ``Node._jobs`` in ``dicom_node/node.py``
(the composition root, which holds the database, the store and the settings the
jobs are called with): each a ``JobSpec`` of an id, a function of
``dicom_node/jobs/`` and an interval.

Several nodes may share one PostgreSQL database; each scheduled job then runs on
one node per tick:

- Ticks are aligned on the wall clock: every node counts its intervals from the
  Unix epoch, so all nodes tick at the same moments, as far as their clocks agree
  (NTP keeps that to milliseconds).
- A run holds a session-level advisory lock keyed by the job id, taken with
  ``pg_try_advisory_lock`` on a connection of its own. A node that finds it taken
  skips that tick (a DEBUG line and the ``skipped`` outcome of the job metric).
- The winner keeps the lock until half the interval (at most
  ``MAX_HOLD_SECONDS``) has passed since the tick, even when the job finished
  sooner. The lock alone would not do: an escalation run takes milliseconds, so
  a node whose clock runs 100 ms late would find it free again and run the same
  tick a second time. The lock is released after every run, failed or not, and
  a node that dies loses it with its connection, so another node takes over at
  the next tick.

Clocks further apart than the hold make a tick run twice, one run after the
other, never at once. That is harmless for the node's jobs: the stability and
escalation jobs lock the rows they handle (FOR UPDATE SKIP LOCKED) and a handled
row no longer matches; the temp sweep removes only files older than its maximum
age.

SQLite: one node per database file, so no lock is taken and every tick runs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import Database
from dicom_node.domain.errors import Cancelled
from dicom_node.metrics import observe_job_run

log = logging.getLogger("dicom_node.jobs")

# the origin every node counts its intervals from: aligned ticks across nodes
TICK_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)
HOLD_FRACTION = 0.5
MAX_HOLD_SECONDS = 30.0


@dataclass(frozen=True)
class JobSpec:
    job_id: str  # stable: the same id on every node and across restarts
    func: Callable[[], object]
    interval_seconds: float


def job_lock_key(job_id: str) -> int:
    """The advisory lock key of a job: a signed 64-bit number, the same on every node."""
    digest = hashlib.blake2b(f"dicom-node job {job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def hold_seconds(interval_seconds: float) -> float:
    """How long after its tick a run keeps the job's lock (see the module doc)."""
    return min(interval_seconds * HOLD_FRACTION, MAX_HOLD_SECONDS)


class JobScheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler is untyped
    """A background scheduler whose shutdown also cuts short the lock holds."""

    def __init__(self, stopping: threading.Event, **options: Any) -> None:
        super().__init__(**options)
        self.stopping = stopping
        self._changed = threading.Condition()
        self._running: list[str] = []

    def shutdown(self, wait: bool = True) -> None:
        self.stopping.set()
        super().shutdown(wait=wait)

    def tracked(self, job_id: str, run: Callable[[], str]) -> Callable[[], str]:
        """``run``, noted as running while it runs (for ``wait_idle``)."""

        def tracked_run() -> str:
            with self._changed:
                self._running.append(job_id)
            try:
                return run()
            finally:
                with self._changed:
                    self._running.remove(job_id)
                    self._changed.notify_all()

        return tracked_run

    def wait_idle(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` for running jobs to end; the ids still running."""
        with self._changed:
            self._changed.wait_for(lambda: not self._running, timeout)
            return list(self._running)


def build_scheduler(
    jobs: list[JobSpec], db: Database | None = None, stopping: threading.Event | None = None
) -> JobScheduler:
    """The scheduler of ``jobs``; with a PostgreSQL ``db``, each job runs on one
    node per tick (see the module doc). ``stopping`` is set by its shutdown: a
    long job given the same event stops at its next safe point."""
    stopping = stopping or threading.Event()
    scheduler = JobScheduler(stopping, timezone="UTC")
    engine = db.engine if db is not None and db.dialect == "postgresql" else None
    for job in jobs:
        scheduler.add_job(
            scheduler.tracked(job.job_id, cluster_runner(job, engine, stopping)),
            "interval",
            seconds=job.interval_seconds,
            start_date=TICK_ORIGIN,
            id=job.job_id,
            # one run at a time; a missed run is merged, not replayed in a burst
            max_instances=1,
            coalesce=True,
            # a tick started late (a paused VM, a loaded machine) still runs, within
            # the winner's hold so the lock keeps it to one node; APScheduler's
            # default of 1 s would drop it silently (a whole day, for the backup)
            misfire_grace_time=max(1, int(hold_seconds(job.interval_seconds))),
        )
    return scheduler


def cluster_runner(
    job: JobSpec, engine: Engine | None, stopping: threading.Event | None = None
) -> Callable[[], str]:
    """One tick of ``job``: run it unless another node holds it (PostgreSQL).

    Returns the outcome (``ok``, ``failed`` or ``skipped``), for tests.
    """
    key = job_lock_key(job.job_id)
    hold = hold_seconds(job.interval_seconds)
    pause = stopping or threading.Event()

    def run() -> str:
        ticked = time.monotonic()
        if engine is None:
            return _run_logged(job)
        try:
            with _job_lock(engine, key) as held:
                if not held:
                    log.debug("job %s skipped: another node runs this tick", job.job_id)
                    observe_job_run(job.job_id, "skipped")
                    return "skipped"
                outcome = _run_logged(job)
                pause.wait(ticked + hold - time.monotonic())
                return outcome
        except SQLAlchemyError as exc:
            # the lock could not be taken or released: the database is away
            log.error("job %s: its lock is unavailable: %s", job.job_id, _first_line(exc))
            observe_job_run(job.job_id, "failed")
            return "failed"

    return run


def _run_logged(job: JobSpec) -> str:
    started = time.monotonic()
    try:
        result = job.func()
    except Cancelled as exc:
        log.warning("job %s stopped: the node is stopping: %s", job.job_id, exc)
        observe_job_run(job.job_id, "cancelled", time.monotonic() - started)
        return "cancelled"
    except Exception:
        log.exception("job %s failed", job.job_id)
        observe_job_run(job.job_id, "failed", time.monotonic() - started)
        return "failed"
    observe_job_run(job.job_id, "ok", time.monotonic() - started)
    log.info("job %s ran: %s", job.job_id, result)
    return "ok"


@contextmanager
def _job_lock(engine: Engine, key: int) -> Iterator[bool]:
    """Try the session-level advisory lock ``key`` on a connection of its own;
    yields whether it is held, and releases it on the way out."""
    with engine.connect() as connection:
        # autocommit: no transaction stays open while the job runs
        connection.execution_options(isolation_level="AUTOCOMMIT")
        held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        try:
            yield held
        finally:
            if held:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except SQLAlchemyError as exc:
                    # a session lock outlives its statement: close the session instead
                    # of handing it back to the pool still holding the job
                    log.warning(
                        "advisory lock %d not released, closing its connection: %s",
                        key,
                        _first_line(exc),
                    )
                    connection.invalidate()


def _first_line(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", exc)).strip()
    return message.splitlines()[0] if message else type(exc).__name__
