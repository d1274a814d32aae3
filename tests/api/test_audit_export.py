"""The audit trail as CSV (GET /api/audit-events.csv): the listing's filters and
permissions, streamed in batches up to a cap, formula cells defused, and the
export itself audited (110101)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

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
