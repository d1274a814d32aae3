"""The audit trail as CSV (GET /api/audit-events.csv): the listing's filters and
permissions, streamed in batches up to a cap, formula cells defused, and the
export itself audited (110101)."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from api.routes import audit as audit_routes
from api.routes.audit import AUDIT_EXPORT_MAX_ROWS, EXPORT_BATCH
from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.services.audit.record import record_audit_event
from tests.api.conftest import ApiServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = {"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat()}
URL = "/api/audit-events.csv"


def _seed(api: ApiServer) -> None:
    """Three events of study 1.2.3 and one of another, one with text a
    spreadsheet would run as a formula (an AE title and a reason from outside)."""
    records = [
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action="order_created",
            actor="sched1",
            target_class="ImagingRequest",
            target_id="17",
            patient_id="PAT1",
            study_instance_uid="1.2.3",
            accession_number="A1",
            details={"priority": "stat"},
        ),
        AuditRecord(
            event_code=AuditEventCode.INSTANCES_TRANSFERRED,
            action="store",
            actor="=HYPERLINK(1)",
            target_class="DicomInstance",
            patient_id="PAT1",
            study_instance_uid="1.2.3",
            reason="+cmd|' /C calc'!A0",
        ),
        AuditRecord(
            event_code=AuditEventCode.USER_AUTHENTICATION,
            action="sign_in_failed",
            outcome=AuditOutcome.MINOR_FAILURE,
            actor="@mallory",
        ),
        AuditRecord(
            event_code=AuditEventCode.ORDER_RECORD,
            action="report_signed",
            actor="-rad1",
            target_class="Report",
            patient_id="PAT1",
            study_instance_uid="1.2.3",
            accession_number="A1",
        ),
    ]
    with api.db.unit_of_work() as session:
        for hour, record in enumerate(records):
            record_audit_event(session, record, timestamp=T0 + timedelta(hours=hour))


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _query_events(api: ApiServer, timestamps: list[datetime], *, first: int = 0) -> None:
    """Query events by CT_SCANNER, ``target_id`` counting from ``first``."""
    with api.db.unit_of_work() as session:
        for number, timestamp in enumerate(timestamps, start=first):
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.QUERY,
                    action="query",
                    actor="CT_SCANNER",
                    target_id=str(number),
                ),
                timestamp=timestamp,
            )


def _reads_events(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "FROM audit_events" in statement


def _is_batch(statement: str) -> bool:
    """A read of the export's rows (the count and the chain head are unordered)."""
    return _reads_events(statement) and "ORDER BY audit_events.timestamp" in statement


@contextmanager
def _watch(api: ApiServer, react: Any) -> Iterator[None]:
    """Call ``react(statement)`` (in the server's thread) after each statement on
    audit_events the server runs; not after those ``react`` runs itself."""
    reacting = threading.local()

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "audit_events" not in statement or getattr(reacting, "now", False):
            return
        reacting.now = True
        try:
            react(statement)
        finally:
            reacting.now = False

    event.listen(api.db.engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(api.db.engine, "after_cursor_execute", after)


def test_the_export_has_the_filtered_events_oldest_first_with_formulas_defused(
    api: ApiServer,
) -> None:
    _seed(api)
    client = api.client("auditor")
    response = client.get(URL, params={**WINDOW, "study_instance_uid": "1.2.3"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="audit-events-')
    assert disposition.endswith('.csv"')
    assert response.headers["x-total-count"] == "3"
    rows = _rows(response.text)
    assert [row["action"] for row in rows] == ["order_created", "store", "report_signed"]
    first, stored, signed = rows
    assert first["timestamp"] == "2026-03-01T12:00:00+00:00"
    assert first["accession_number"] == "A1" and first["details"] == '{"priority": "stat"}'
    assert first["reason"] == "" and first["outcome"] == "success"
    # what a spreadsheet would evaluate is text now
    assert stored["actor"] == "'=HYPERLINK(1)"
    assert stored["reason"] == "'+cmd|' /C calc'!A0"
    assert signed["actor"] == "'-rad1"
    newest = _rows(client.get(URL, params={**WINDOW, "outcome": "minor_failure"}).text)
    assert [row["actor"] for row in newest] == ["'@mallory"]
    ordered = client.get(URL, params={**WINDOW, "patient_id": "PAT1", "order": "newest"})
    assert [row["action"] for row in _rows(ordered.text)] == [
        "report_signed",
        "store",
        "order_created",
    ]


def test_the_export_is_audited_like_a_listing(api: ApiServer) -> None:
    _seed(api)
    client = api.client("admin")
    assert client.get(URL, params={"accession_number": "A1"}).status_code == 200
    with api.db.read() as session:
        (used,) = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_code == "110101", AuditEvent.actor == client.username
            )
        ).all()
    filters = used.details["filters"]
    assert filters["accession_number"] == "A1" and filters["format"] == "csv"
    assert filters["matches"] == 2 and filters["order"] == "oldest"
    assert filters["limit"] == AUDIT_EXPORT_MAX_ROWS
    assert used.actor_role == "admin" and used.source_address == "127.0.0.1"


def test_the_export_streams_past_one_batch_and_stops_at_its_limit(api: ApiServer) -> None:
    many = EXPORT_BATCH * 2 + 7
    with api.db.unit_of_work() as session:
        for number in range(many):
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.QUERY,
                    action="query",
                    actor="CT_SCANNER",
                    target_id=str(number),
                ),
                timestamp=T0 + timedelta(seconds=number),
            )
    client = api.client("auditor")
    with client.stream("GET", URL, params={**WINDOW, "actor": "CT_SCANNER"}) as response:
        assert response.status_code == 200
        # streamed: no Content-Length, the body arrives in pieces
        assert "content-length" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"
        text = "".join(response.iter_text())
    rows = _rows(text)
    assert [row["target_id"] for row in rows] == [str(n) for n in range(many)]
    capped = client.get(URL, params={**WINDOW, "actor": "CT_SCANNER", "limit": EXPORT_BATCH + 1})
    assert capped.headers["x-total-count"] == str(many)
    assert len(_rows(capped.text)) == EXPORT_BATCH + 1
    too_many = client.get(URL, params={"limit": AUDIT_EXPORT_MAX_ROWS + 1})
    assert too_many.status_code == 422


@pytest.mark.parametrize(
    "role", ["scheduler", "technologist", "radiologist", "referring_physician"]
)
def test_only_admins_and_auditors_export_the_audit_log(api: ApiServer, role: str) -> None:
    response = api.client(role).get(URL)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert api.anonymous().get(URL).status_code == 401


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_each_row_is_exported_once_across_batches_sharing_a_timestamp_and_later_commits(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """Batches of 3 over 8 events, 5 of them with one timestamp (two batch
    boundaries inside it); an event stamped before every row in the export's
    order commits after the first batch was read: no row repeats or goes
    missing, and the late one is not in the file (it was written after the
    export started)."""
    monkeypatch.setattr(audit_routes, "EXPORT_BATCH", 3)
    hour = timedelta(hours=1)
    shared = T0 + 2 * hour
    _query_events(api, [T0 + hour, *[shared] * 5, T0 + 3 * hour, T0 + 3 * hour])
    expected = [str(n) for n in range(8)]
    if order == "newest":
        expected.reverse()
    # first in the export's order, so offset paging would shift by one row
    late = T0 + timedelta(minutes=1) if order == "oldest" else T0 + 20 * hour
    client = api.client("auditor")
    audited: list[str] = []
    committed: list[str] = []

    def commit_a_late_event(statement: str) -> None:
        # right after the first batch's rows were selected, which follows the
        # export's own 110101 (its INSERT)
        if statement.lstrip().upper().startswith("INSERT"):
            audited.append(statement)
        elif audited and not committed and _is_batch(statement):
            _query_events(api, [late], first=100)
            committed.append(statement)

    with _watch(api, commit_a_late_event):
        response = client.get(URL, params={**WINDOW, "actor": "CT_SCANNER", "order": order})
    assert response.status_code == 200
    assert committed, "the late event was not committed during the export"
    assert [row["target_id"] for row in _rows(response.text)] == expected
    assert response.headers["x-total-count"] == "8"
    # the late event is in the trail: a new export has it
    again = client.get(URL, params={**WINDOW, "actor": "CT_SCANNER", "order": order})
    assert sorted(row["target_id"] for row in _rows(again.text)) == sorted([*expected, "100"])


def test_an_export_reads_the_trail_once_per_batch(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No COUNT and no OFFSET per batch: six batches cost four SELECTs more than
    two, whatever the database."""
    monkeypatch.setattr(audit_routes, "EXPORT_BATCH", 2)
    _query_events(api, [T0 + timedelta(seconds=n) for n in range(12)])
    client = api.client("auditor")
    params = {**WINDOW, "actor": "CT_SCANNER"}
    client.get(URL, params=params)  # sign-in and first-use reads out of the way
    reads: dict[int, list[str]] = {}
    for limit in (4, 12):
        seen: list[str] = []

        def count(statement: str, seen: list[str] = seen) -> None:
            if _reads_events(statement):
                seen.append(statement)

        with _watch(api, count):
            response = client.get(URL, params={**params, "limit": limit})
        assert len(_rows(response.text)) == limit
        reads[limit] = seen
    assert len(reads[12]) - len(reads[4]) == 4
    # the batches, one COUNT at the start, the chain head for the export's 110101
    assert len(reads[12]) <= 6 + 2


def test_an_export_stopped_by_a_database_error_says_so_in_its_last_row(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The status is sent with the first byte: a failure after it can only be
    told in the file (and the log, without the rows' data)."""
    monkeypatch.setattr(audit_routes, "EXPORT_BATCH", 2)
    _query_events(api, [T0 + timedelta(seconds=n) for n in range(5)])
    client = api.client("auditor")

    batches: list[str] = []

    def fail_the_second_batch(statement: str) -> None:
        if not _is_batch(statement):
            return
        batches.append(statement)
        if len(batches) == 2:  # the database gives way under the second batch
            raise OperationalError("SELECT", None, ConnectionError("server closed the connection"))

    with _watch(api, fail_the_second_batch):
        response = client.get(URL, params={**WINDOW, "actor": "CT_SCANNER"})
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[-1].startswith("# EXPORT INCOMPLETE: ")
    assert "after 2 rows" in lines[-1]
    assert [row["target_id"] for row in _rows("\n".join(lines[:-1]))] == ["0", "1"]
    (logged,) = [r for r in caplog.records if "audit CSV export stopped" in r.getMessage()]
    assert logged.getMessage() == "audit CSV export stopped after 2 rows: OperationalError"
    assert "CT_SCANNER" not in logged.getMessage()
