"""Scheduled jobs across nodes: one run per tick on a shared PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine

from dicom_node.db.engine import Database
from dicom_node.jobs.scheduler import (
    JobSpec,
    build_scheduler,
    cluster_runner,
    hold_seconds,
    job_lock_key,
)
from dicom_node.metrics import REGISTRY
from tests.conftest import PG_TEMPLATE, _new_postgres_database


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return _new_postgres_database(request, template=PG_TEMPLATE)


@pytest.fixture
def two_nodes(pg_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database: as two nodes see it."""
    first, second = create_engine(pg_url), create_engine(pg_url)
    yield first, second
    first.dispose()
    second.dispose()


class Counting:
    def __init__(
        self, seconds: float = 0.0, fail: bool = False, until: threading.Event | None = None
    ) -> None:
        self.runs = 0
        self.seconds = seconds
        self.fail = fail
        self.until = until  # a run lasts until this is set (at most 10 s)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.runs += 1
        time.sleep(self.seconds)
        if self.until is not None:
            self.until.wait(10)
        if self.fail:
            raise RuntimeError("job broke")
        return "done"


def _at_once(*runs: object) -> list[str]:
    """Start every run on its own thread at the same moment; their outcomes."""
    barrier = threading.Barrier(len(runs))
    outcomes: list[str] = []

    def go(run: object) -> None:
        barrier.wait()
        outcomes.append(run())  # type: ignore[operator]

    threads = [threading.Thread(target=go, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(outcomes)


def _skipped(job_id: str) -> float:
    value = REGISTRY.get_sample_value(
        "dicom_node_job_runs_total", {"job": job_id, "outcome": "skipped"}
    )
    return value or 0.0


def test_job_lock_keys_are_stable_distinct_signed_64_bit_numbers() -> None:
    keys = {job_lock_key(name) for name in ("escalation", "study-stability", "temp-file-sweep")}
    assert len(keys) == 3
    assert all(-(2**63) <= key < 2**63 for key in keys)
    # the same on every node and every release: derived from the id alone
    assert job_lock_key("escalation") == job_lock_key("escalation")


def test_a_job_ticking_on_two_nodes_at_once_runs_on_one(two_nodes: tuple[Engine, Engine]) -> None:
    # The run that takes the lock lasts until the other tick has returned, so the
    # other's try falls inside it however late its thread or its connection gets
    # going (a 0.3 s run did not: on a loaded machine the second could connect
    # after the first had let go, and both ran). Were both to run, both would
    # wait here and both say "ok".
    returned = threading.Event()

    def tick(engine: Engine) -> Callable[[], str]:
        run = cluster_runner(spec, engine)

        def then_tell() -> str:
            try:
                return run()
            finally:
                returned.set()

        return then_tell

    job = Counting(until=returned)
    spec = JobSpec("unit-once", job, interval_seconds=0.2)
    skipped_before = _skipped("unit-once")
    outcomes = _at_once(tick(two_nodes[0]), tick(two_nodes[1]))
    assert outcomes == ["ok", "skipped"]
    assert job.runs == 1
    assert _skipped("unit-once") == skipped_before + 1


def test_a_node_ticking_a_little_late_finds_the_job_still_held(
    two_nodes: tuple[Engine, Engine],
) -> None:
    job = Counting()  # finishes at once: the lock alone would be free again
    spec = JobSpec("unit-late", job, interval_seconds=2.0)  # held 1 s from the tick
    for engine in two_nodes:  # connected already, as a running node is
        with engine.connect():
            pass
    first = threading.Thread(target=cluster_runner(spec, two_nodes[0]))
    first.start()
    # the other node's clock is a little late: it ticks once the first has run
    # the job (a fixed 150 ms pause raced the first thread's start and connection)
    assert _wait(lambda: job.runs == 1)
    assert cluster_runner(spec, two_nodes[1])() == "skipped"
    first.join(10)
    # the hold ends half an interval after the tick: the next tick runs again
    assert cluster_runner(spec, two_nodes[1])() == "ok"
    assert job.runs == 2


def test_a_failed_run_releases_the_job_for_the_next_tick(
    two_nodes: tuple[Engine, Engine],
) -> None:
    job = Counting(fail=True)
    spec = JobSpec("unit-fail", job, interval_seconds=0.1)
    assert cluster_runner(spec, two_nodes[0])() == "failed"
    job.fail = False
    assert cluster_runner(spec, two_nodes[1])() == "ok"
    assert job.runs == 2


def test_without_postgresql_every_tick_runs() -> None:
    job = Counting(seconds=0.2)
    spec = JobSpec("unit-sqlite", job, interval_seconds=0.1)
    assert _at_once(cluster_runner(spec, None), cluster_runner(spec, None)) == ["ok", "ok"]
    assert job.runs == 2


def test_ticks_fall_on_the_same_wall_clock_moments_on_every_node(pg_url: str) -> None:
    db = Database(pg_url)
    spec = JobSpec("unit-aligned", Counting(), interval_seconds=7.0)
    schedulers = [build_scheduler([spec], db) for _ in range(2)]
    # Compared with the moment before start: the first tick may already be
    # past by the time the assertions run.
    before = datetime.now(UTC)
    try:
        for scheduler in schedulers:
            scheduler.start(paused=True)
            time.sleep(0.3)  # started at different moments
        times = [s.get_job("unit-aligned").next_run_time for s in schedulers]
    finally:
        for scheduler in schedulers:
            scheduler.shutdown()
        db.dispose()
    # one grid for every node (multiples of the interval since the epoch): two
    # nodes started 0.3 s apart may straddle a tick, so the second's first tick
    # is the same one or the next on the grid, never one of its own
    for moment in times:
        assert moment.astimezone(UTC).timestamp() % 7 == 0
    assert before < times[0] <= before + timedelta(seconds=7)
    assert times[1] - times[0] in (timedelta(0), timedelta(seconds=7))


def test_shutting_down_ends_a_finished_runs_hold_at_once(pg_url: str) -> None:
    db = Database(pg_url)
    job = Counting()
    spec = JobSpec("unit-hold", job, interval_seconds=600.0)
    assert hold_seconds(spec.interval_seconds) == 30.0
    scheduler = build_scheduler([spec], db)
    scheduler.start(paused=True)
    run = threading.Thread(target=cluster_runner(spec, db.engine, scheduler.stopping))
    run.start()
    assert _wait(lambda: job.runs == 1)
    time.sleep(0.2)
    assert run.is_alive()  # holding the job for the rest of its hold
    started = time.monotonic()
    scheduler.shutdown()
    run.join(5)
    db.dispose()
    assert not run.is_alive()
    assert time.monotonic() - started < 2


def _wait(predicate: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_stopping_scheduler_does_not_wait_for_a_long_run_but_says_which_one_runs() -> None:
    release = threading.Event()
    spec = JobSpec("unit-long", lambda: release.wait(10), interval_seconds=3600.0)
    scheduler = build_scheduler([spec])
    scheduler.start(paused=True)
    scheduler.get_job("unit-long").modify(next_run_time=datetime.now(UTC))
    scheduler.resume()
    try:
        assert _wait(lambda: scheduler.wait_idle(0) == ["unit-long"])
        started = time.monotonic()
        scheduler.shutdown(wait=False)
        assert scheduler.wait_idle(0.2) == ["unit-long"]
        assert time.monotonic() - started < 2
        release.set()
        assert scheduler.wait_idle(5) == []
    finally:
        release.set()


def test_a_tick_started_late_still_runs_within_the_hold() -> None:
    scheduler = build_scheduler([JobSpec("unit-late", Counting(), interval_seconds=86_400.0)])
    # APScheduler's default grace of 1 s would drop a run started 2 s late
    assert scheduler.get_job("unit-late").misfire_grace_time == 30
