"""The audit trail over HTTP: read-only, filtered, itself audited, append-only in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.services.audit.record import record_audit_event
from tests.api.conftest import ApiServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _seed(api: ApiServer) -> dict[str, int]:
    """Four known events at known times; returns their ids by name."""
    rows = {
        "query": (
            T0,
            AuditRecord(
                event_code=AuditEventCode.QUERY,
                action="query",
                actor="CT_SCANNER",
                target_class="STUDY",
                patient_id="PAT1",
            ),
        ),
        "order": (
            T0 + timedelta(hours=1),
            AuditRecord(
                event_code=AuditEventCode.ORDER_RECORD,
                action="order_scheduled",
                actor="sched1",
                actor_user_id=None,
                target_class="ImagingRequest",
                target_id="17",
                patient_id="PAT1",
                study_instance_uid="1.2.3",
                accession_number="A1",
            ),
        ),
        "failed": (
            T0 + timedelta(hours=2),
            AuditRecord(
                event_code=AuditEventCode.USER_AUTHENTICATION,
                action="sign_in_failed",
                outcome=AuditOutcome.MINOR_FAILURE,
                actor="mallory",
            ),
        ),
        "store": (
            T0 + timedelta(hours=3),
            AuditRecord(
                event_code=AuditEventCode.INSTANCES_TRANSFERRED,
                action="store",
                actor="CT_SCANNER",
                target_class="DicomInstance",
                target_id="1.2.3.4",
                patient_id="PAT2",
                study_instance_uid="1.2.9",
            ),
        ),
    }
    # through the one writer of the trail: each row chained to the one before it
    with api.db.unit_of_work() as session:
        for at, record in rows.values():
            record_audit_event(session, record, timestamp=at)
    with api.db.read() as session:
        return {
            name: session.scalar(
                select(AuditEvent.id).where(
                    AuditEvent.timestamp == at, AuditEvent.action == record.action
                )
            )
            for name, (at, record) in rows.items()
        }


def _ids(response: object) -> list[int]:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    return [item["id"] for item in response.json()["items"]]  # type: ignore[attr-defined]


WINDOW = {"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat()}

FILTER_CASES = [
    ({}, ["store", "failed", "order", "query"]),
    ({"order": "oldest"}, ["query", "order", "failed", "store"]),
    ({"actor": "CT_SCANNER"}, ["store", "query"]),
    ({"action": "order_scheduled"}, ["order"]),
    ({"event_code": "110114"}, ["failed"]),
    ({"target_class": "ImagingRequest", "target_id": "17"}, ["order"]),
    ({"patient_id": "PAT1"}, ["order", "query"]),
    ({"study_instance_uid": "1.2.9"}, ["store"]),
    ({"accession_number": "A1"}, ["order"]),
    ({"outcome": "minor_failure"}, ["failed"]),
    ({"from": (T0 + timedelta(hours=1)).isoformat()}, ["store", "failed", "order"]),
    # 'to' is exclusive; a time without a zone is UTC
    ({"to": "2026-03-01T14:00:00"}, ["order", "query"]),
]


@pytest.mark.parametrize(("params", "expected"), FILTER_CASES)
def test_audit_events_filter_exactly_and_list_newest_first(
    api: ApiServer, params: dict[str, str], expected: list[str]
) -> None:
    ids = _seed(api)
    client = api.client("auditor")
    response = client.get("/api/audit-events", params={**WINDOW, **params})
    assert _ids(response) == [ids[name] for name in expected]
    assert response.json()["total"] == len(expected)


def test_audit_events_filter_by_actor_user_id_and_page(api: ApiServer) -> None:
    admin = api.client("admin")
    me = admin.get("/api/me").json()
    # the admin's sign-in, then their first listing (110101)
    admin.get("/api/audit-events")
    page = admin.get("/api/audit-events", params={"actor_user_id": me["id"], "limit": 1}).json()
    assert page["total"] == 2 and page["limit"] == 1
    (event,) = page["items"]
    assert event["event_code"] == "110101" and event["actor"] == admin.username
    oldest = admin.get(
        "/api/audit-events", params={"actor_user_id": me["id"], "order": "oldest", "limit": 1}
    ).json()
    assert oldest["items"][0]["action"] == "sign_in"
    _seed(api)
    first = admin.get("/api/audit-events", params={**WINDOW, "limit": 2}).json()
    second = admin.get("/api/audit-events", params={**WINDOW, "limit": 2, "offset": 2}).json()
    assert first["total"] == second["total"] == 4
    assert {e["id"] for e in first["items"]}.isdisjoint({e["id"] for e in second["items"]})


def test_reading_the_audit_log_is_itself_audited_as_110101(api: ApiServer) -> None:
    ids = _seed(api)
    client = api.client("auditor")
    assert client.get("/api/audit-events", params={"patient_id": "PAT1"}).status_code == 200
    assert client.get(f"/api/audit-events/{ids['order']}").status_code == 200
    with api.db.read() as session:
        used = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.event_code == "110101", AuditEvent.actor == client.username)
            .order_by(AuditEvent.id)
        ).all()
    assert len(used) == 2
    assert used[0].details["filters"]["patient_id"] == "PAT1"
    assert used[0].actor_role == "auditor" and used[0].source_address == "127.0.0.1"
    assert used[1].target_id == str(ids["order"])


def test_one_audit_event_by_id(api: ApiServer) -> None:
    ids = _seed(api)
    client = api.client("admin")
    body = client.get(f"/api/audit-events/{ids['order']}").json()
    assert body["action"] == "order_scheduled" and body["accession_number"] == "A1"
    assert body["timestamp"].startswith("2026-03-01T13:00:00")
    assert client.get("/api/audit-events/99999999").status_code == 404


@pytest.mark.parametrize(
    "role", ["scheduler", "technologist", "radiologist", "referring_physician"]
)
def test_only_admins_and_auditors_read_the_audit_log(api: ApiServer, role: str) -> None:
    client = api.client(role)
    assert client.get("/api/audit-events").status_code == 403
    assert client.get("/api/audit-events/1").status_code == 403


def test_no_route_changes_or_deletes_audit_events(api: ApiServer) -> None:
    ids = _seed(api)
    client = api.client("admin")
    one = f"/api/audit-events/{ids['order']}"
    for method, url in [
        ("PUT", one),
        ("PATCH", one),
        ("DELETE", one),
        ("POST", "/api/audit-events"),
        ("PUT", "/api/audit-events"),
        ("PATCH", "/api/audit-events"),
        ("DELETE", "/api/audit-events"),
    ]:
        response = client.request(method, url, json={"action": "x"})
        assert response.status_code == 405, (method, url)
        assert response.json()["error"]["code"] == "method_not_allowed"
    with api.db.read() as session:
        assert session.scalar(select(AuditEvent.action).where(AuditEvent.id == ids["order"])) == (
            "order_scheduled"
        )
        assert session.scalar(select(AuditEvent.id).where(AuditEvent.id == ids["query"]))


def test_the_api_database_refuses_update_and_delete_of_audit_events(api: ApiServer) -> None:
    ids = _seed(api)
    with pytest.raises(DBAPIError, match="append-only"), api.db.unit_of_work() as session:
        session.execute(
            update(AuditEvent).where(AuditEvent.id == ids["order"]).values(outcome="major_failure")
        )
    with pytest.raises(DBAPIError, match="append-only"), api.db.unit_of_work() as session:
        session.execute(text("UPDATE audit_events SET reason = 'tampered'"))
    with pytest.raises(DBAPIError, match="append-only"), api.db.unit_of_work() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == ids["failed"]))
    with pytest.raises(DBAPIError, match="append-only"), api.db.unit_of_work() as session:
        session.execute(text("DELETE FROM audit_events"))
    response = api.client("auditor").get("/api/audit-events", params=WINDOW).json()
    assert response["total"] == 4
    assert all(item["reason"] is None for item in response["items"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"outcome": "meh"}, "query.outcome"),
        ({"from": "yesterday"}, "query.from"),
        ({"actor": "a\x00b"}, "query.actor"),
        ({"target_id": "\x1f"}, "query.target_id"),
    ],
)
def test_bad_audit_filters_are_422(api: ApiServer, params: dict[str, str], field: str) -> None:
    response = api.client("auditor").get("/api/audit-events", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_an_empty_or_reversed_interval_finds_nothing(api: ApiServer) -> None:
    _seed(api)
    client = api.client("auditor")
    for params in (
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"from": T0.isoformat(), "to": T0.isoformat()},
    ):
        response = client.get("/api/audit-events", params=params)
        assert response.status_code == 200
        assert response.json()["total"] == 0
