"""Refusals audited in aggregate (services/access/refusals.py) and the known-AE registry
(services/access/known_aes.py), on SQLite and PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, ImagingCenter, Modality
from dicom_node.domain.audit import TargetKind
from dicom_node.services.access.known_aes import KnownAeTitles
from dicom_node.services.access.refusals import (
    ASSOCIATION_REJECTED,
    MAX_LISTED,
    OVERFLOW,
    REQUEST_REFUSED,
    Refusal,
    RefusalAudit,
)
from tests.support import wait_for

INTERVAL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(db: Database, clock: Clock) -> RefusalAudit:
    return RefusalAudit(db, interval_seconds=INTERVAL, clock=clock, background=False)


def rejected(host: str = "10.0.0.7", calling: str = "INTRUDER", called: str = "WRONG") -> Refusal:
    return Refusal(
        action=ASSOCIATION_REJECTED,
        host=host,
        port=40000,
        calling_ae=calling,
        target_class=TargetKind.AE,
        target_id=called,
        reason="called AE title not recognised",
    )


def events(db: Database) -> list[AuditEvent]:
    with db.read() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def counted(db: Database) -> int:
    return sum(int(e.details["count"]) for e in events(db))


def test_the_first_refusal_is_audited_at_once_the_rest_once_per_interval(
    db: Database, audit: RefusalAudit, clock: Clock
) -> None:
    audit.record(rejected())
    (first,) = events(db)
    assert (first.event_code, first.action, first.outcome) == (
        "110113",
        "association_rejected",
        "minor_failure",
    )
    assert (first.actor, first.source_address, first.target_class, first.target_id) == (
        "INTRUDER",
        "10.0.0.7:40000",
        "AE",
        "WRONG",
    )
    assert first.reason == "called AE title not recognised"
    assert first.details["count"] == 1 and first.details["event_type"] == "110126"

    for _ in range(499):
        clock.now += 0.01
        audit.record(rejected())
    assert audit.release_due() == 0  # the interval has not ended
    assert len(events(db)) == 1

    clock.now = 1000.0 + INTERVAL
    assert audit.release_due() == 1
    first, summary = events(db)
    assert summary.details["count"] == 499 and summary.details["aggregated"] is True
    assert summary.source_address == "10.0.0.7"
    assert (summary.actor, summary.target_id) == ("INTRUDER", "WRONG")
    assert summary.reason == "called AE title not recognised"
    assert summary.details["calling_ae_titles"] == {"INTRUDER": 499}
    assert summary.details["reasons"] == {"called AE title not recognised": 499}
    assert summary.details["first_at"] <= summary.details["last_at"]
    assert counted(db) == 500


def test_a_sustained_flood_writes_one_event_per_interval(
    db: Database, audit: RefusalAudit, clock: Clock
) -> None:
    start = clock.now
    for interval in range(5):  # five intervals of 100 refusals each
        for number in range(100):
            clock.now = start + interval * INTERVAL + number * 0.5
            audit.record(rejected())
        clock.now = start + (interval + 1) * INTERVAL
        audit.release_due()
    audit.flush()
    rows = events(db)
    assert len(rows) == 6  # the first at once, then one per interval
    assert counted(db) == 500


def test_a_quiet_interval_forgets_the_peer(db: Database, audit: RefusalAudit, clock: Clock) -> None:
    audit.record(rejected())
    audit.record(rejected())
    clock.now += INTERVAL
    audit.release_due()  # the count of the first interval
    clock.now += INTERVAL
    audit.release_due()  # an interval with nothing: forgotten
    audit.record(rejected())  # audited at once again
    assert [e.details["count"] for e in events(db)] == [1, 1, 1]
    assert events(db)[-1].details.get("aggregated") is None


def test_peers_and_kinds_are_counted_apart(db: Database, audit: RefusalAudit, clock: Clock) -> None:
    request = Refusal(
        action=REQUEST_REFUSED,
        host="10.0.0.7",
        port=40001,
        calling_ae="INTRUDER",
        target_class=TargetKind.DICOM_SERVICE,
        target_id="storage",
        reason="calling AE title not known",
    )
    for _ in range(3):
        audit.record(rejected("10.0.0.7"))
        audit.record(rejected("10.0.0.8"))
        audit.record(request)
    assert len(events(db)) == 3  # one first event each
    clock.now += INTERVAL
    assert audit.release_due() == 3
    summaries = {(e.action, e.source_address): e for e in events(db)[3:]}
    assert set(summaries) == {
        ("association_rejected", "10.0.0.7"),
        ("association_rejected", "10.0.0.8"),
        ("request_refused", "10.0.0.7"),
    }
    refused = summaries["request_refused", "10.0.0.7"]
    assert (refused.target_class, refused.target_id) == ("DICOM service", "storage")
    assert counted(db) == 9


def test_peers_beyond_the_cap_share_one_overflow_tally(db: Database, clock: Clock) -> None:
    audit = RefusalAudit(db, interval_seconds=INTERVAL, max_peers=3, clock=clock, background=False)
    for round_ in range(2):
        for peer in range(20):
            audit.record(rejected(f"10.0.1.{peer}", calling=f"AE{round_}"))
    # three peers tracked, each audited at once; the 17 others are never audited at once
    assert len(events(db)) == 3
    clock.now += INTERVAL
    audit.release_due()
    rows = events(db)
    overflow = [e for e in rows if e.source_address == OVERFLOW]
    assert len(overflow) == 1
    assert overflow[0].details["count"] == 34
    assert len(overflow[0].details["addresses"]) == MAX_LISTED
    assert overflow[0].details["other_addresses"] == 34 - 2 * MAX_LISTED
    assert overflow[0].actor is None  # two calling AE titles
    assert overflow[0].details["calling_ae_titles"] == {"AE0": 17, "AE1": 17}
    assert counted(db) == 40


def test_listed_ae_titles_are_bounded(db: Database, audit: RefusalAudit, clock: Clock) -> None:
    for number in range(30):
        audit.record(rejected(calling=f"AE{number}", called=f"CALLED{number}"))
    audit.flush()
    summary = events(db)[-1]
    assert len(summary.details["calling_ae_titles"]) == MAX_LISTED
    assert summary.details["other_calling_ae_titles"] == 29 - MAX_LISTED
    assert len(summary.details["targets"]) == MAX_LISTED
    assert summary.actor is None and summary.target_id is None


def test_flush_writes_what_is_held_and_after_close_each_refusal_is_written(
    db: Database, audit: RefusalAudit
) -> None:
    for _ in range(10):
        audit.record(rejected())
    assert audit.close() == 1  # no interval ended: written because the node stops
    assert [e.details["count"] for e in events(db)] == [1, 9]
    audit.record(rejected())
    audit.record(rejected())
    assert counted(db) == 12 and len(events(db)) == 4


def test_the_background_thread_writes_the_count_when_the_interval_ends(db: Database) -> None:
    assert events(db) == []  # and the pool has its connection: the first write is quick
    # The five refusals must fall in one interval: the first is written at once, in
    # the caller's thread, and a refusal after an interval that ended quiet is a
    # new first one. With 0.3 s, a slow first write (a loaded machine, a new
    # PostgreSQL connection) had the next refusal written at once too.
    audit = RefusalAudit(db, interval_seconds=2.0)
    try:
        for _ in range(5):
            audit.record(rejected())
        assert len(events(db)) == 1
        assert wait_for(lambda: len(events(db)) == 2, timeout=10)
        assert events(db)[-1].details["count"] == 4
    finally:
        audit.close()
    assert counted(db) == 5


def test_an_audit_that_cannot_be_written_is_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite3'}")
    audit = RefusalAudit(broken, interval_seconds=INTERVAL, background=False)
    try:
        with caplog.at_level(logging.ERROR):
            audit.record(rejected())  # does not raise
        lines = [r for r in caplog.records if "could not write the audit events" in r.message]
        assert len(lines) == 1 and lines[0].exc_info is None
    finally:
        broken.dispose()


# --------------------------------------------------------------------------- known AEs


def _add_modality(db: Database, ae_title: str, status: str = "active") -> None:
    with db.unit_of_work() as session:
        center = session.scalar(select(ImagingCenter)) or ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        session.add(
            Modality(
                imaging_center_id=center.id,
                name=ae_title,
                type="CT",
                dicom_ae_title=ae_title,
                status=status,
            )
        )


@pytest.fixture
def queries(db: Database) -> Iterator[list[str]]:
    """The SQL statements the database is sent (counted, not faked)."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    yield statements
    event.remove(db.engine, "before_cursor_execute", count)


def test_known_ae_titles_are_configured_or_registered_and_not_retired(
    db: Database, clock: Clock
) -> None:
    _add_modality(db, "CT_MAIN_1")
    _add_modality(db, "MR_SERVICE", status="maintenance")
    _add_modality(db, "OLD_CR", status="retired")
    known = KnownAeTitles(db, ["PACS_ARCHIVE", "RIS "], clock=clock)
    assert known.is_known("PACS_ARCHIVE") and known.is_known("RIS")
    assert known.is_known("CT_MAIN_1") and known.is_known("CT_MAIN_1  ")
    assert known.is_known("MR_SERVICE")
    assert not known.is_known("OLD_CR")
    assert not known.is_known("ct_main_1")  # AE titles are compared as sent
    assert not known.is_known("INTRUDER")
    assert not known.is_known("")


def test_registered_titles_are_read_once_per_ttl(
    db: Database, clock: Clock, queries: list[str]
) -> None:
    known = KnownAeTitles(db, [], ttl_seconds=10, clock=clock)
    assert not known.is_known("CT_NEW")
    reads = len(queries)
    assert reads >= 1
    _add_modality(db, "CT_NEW")
    queries.clear()
    for _ in range(100):
        assert not known.is_known("CT_NEW")  # cached: no query per request
    assert queries == []
    clock.now += 10
    assert known.is_known("CT_NEW")
    assert len(queries) >= 1
