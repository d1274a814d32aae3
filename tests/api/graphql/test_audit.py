"""The audit trail and turnaround through GraphQL: the same filters, order,
pages and figures as REST, and reading the trail audited (110101)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.api.test_turnaround import WINDOW, build
from tests.builders import user_id

EVENTS = """
query($first: Int, $after: String, $actor: String, $actorUserId: Int, $action: String,
      $eventCode: String, $to: DateTime, $order: AuditOrder, $outcome: AuditOutcome) {
  auditEvents(first: $first, after: $after, actor: $actor, actorUserId: $actorUserId,
              action: $action, eventCode: $eventCode, to: $to, order: $order,
              outcome: $outcome) {
    totalCount
    edges { node { id eventCode action actor actorUserId targetClass details } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

TURNAROUND = """
query($from: DateTime, $to: DateTime, $groupBy: GroupBy) {
  turnaround(from: $from, to: $to, groupBy: $groupBy) {
    from to groupBy slaMinutes criticalDeadlineMinutes
    groups { group metrics { metric count open medianMinutes p90Minutes withinSlaPercent } }
  }
}
"""

REST_METRIC = ("metric", "count", "open", "median_minutes", "p90_minutes", "within_sla_percent")
GQL_METRIC = ("metric", "count", "open", "medianMinutes", "p90Minutes", "withinSlaPercent")


def _ids(connection: dict[str, Any]) -> list[int]:
    return [edge["node"]["id"] for edge in connection["edges"]]


def test_audit_listing_filters_order_and_pages_equal_rest(graph: Graph, api: ApiServer) -> None:
    auditor = graph.client("auditor")
    http = api.client("auditor")
    admin = api.client("admin")
    # some events: sign-ins, a REST listing (110101) and a user created by an admin
    admin.post(
        "/api/users",
        json={"username": "gql-audit-target", "password": "0123456789ab", "role": "scheduler"},
    )
    http.get("/api/audit-events")
    # events written by the listings below come after 'to' and are left out
    to = (datetime.now(UTC) + timedelta(milliseconds=1)).isoformat()
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"eventCode": "110101"}, {"event_code": "110101"}),
        ({"actor": http.username}, {"actor": http.username}),  # type: ignore[attr-defined]
        (
            {"actorUserId": user_id(api, admin.username)},  # type: ignore[attr-defined]
            {"actor_user_id": user_id(api, admin.username)},  # type: ignore[attr-defined]
        ),
        ({"action": "sign_in", "order": "OLDEST"}, {"action": "sign_in", "order": "oldest"}),
        ({"outcome": "SUCCESS"}, {"outcome": "success"}),
    ]
    for gql_filters, rest_filters in cases:
        mine = auditor.execute(EVENTS, to=to, first=100, **gql_filters)["auditEvents"]
        theirs = http.get(
            "/api/audit-events", params={"to": to, "limit": 100, **rest_filters}
        ).json()
        assert _ids(mine) == [item["id"] for item in theirs["items"]], gql_filters
        assert mine["totalCount"] == theirs["total"]
        assert mine["totalCount"] > 0, gql_filters

    first = auditor.execute(EVENTS, to=to, first=2)["auditEvents"]
    second = auditor.execute(EVENTS, to=to, first=2, after=first["pageInfo"]["endCursor"])
    paged = http.get("/api/audit-events", params={"to": to, "limit": 4}).json()
    assert _ids(first) + _ids(second["auditEvents"]) == [i["id"] for i in paged["items"]]


def test_reading_the_trail_is_audited_as_110101_with_the_filters(
    graph: Graph, api: ApiServer
) -> None:
    auditor = graph.client("auditor")
    auditor.execute(EVENTS, eventCode="110114", first=5)
    with api.db.read() as session:
        used = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_code == "110101", AuditEvent.actor == auditor.username
            )
        ).all()
    assert len(used) == 1
    assert used[0].details["filters"] == {
        "event_code": "110114",
        "order": "newest",
        "offset": 0,
        "limit": 5,
    }
    assert used[0].source_address == "127.0.0.1"


def test_bad_audit_filters_are_bad_user_input(graph: Graph) -> None:
    auditor = graph.client("auditor")
    outcome = auditor.attempt(EVENTS, action="a\u0000b")
    assert outcome.codes == ["BAD_USER_INPUT"]
    assert outcome.errors[0]["extensions"]["field"] == "action"
    assert auditor.attempt(EVENTS, eventCode="x" * 17).codes == ["BAD_USER_INPUT"]
    assert auditor.attempt(EVENTS, first=0).codes == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    "role", ["scheduler", "technologist", "radiologist", "referring_physician"]
)
def test_only_admins_and_auditors_read_the_trail(graph: Graph, role: str) -> None:
    assert graph.client(role).attempt(EVENTS).codes == ["FORBIDDEN"]


@pytest.mark.parametrize("group_by", ["none", "priority", "radiologist"])
def test_turnaround_equals_rest(graph: Graph, api: ApiServer, group_by: str) -> None:
    build(api)
    rest = (
        api.client("admin").get("/api/turnaround", params={**WINDOW, "group_by": group_by}).json()
    )

    mine = graph.client("radiologist").execute(
        TURNAROUND, groupBy=group_by.upper(), **{"from": WINDOW["from"], "to": WINDOW["to"]}
    )["turnaround"]

    assert mine["groupBy"] == group_by.upper()
    assert mine["slaMinutes"] == rest["sla_minutes"]
    assert mine["criticalDeadlineMinutes"] == rest["critical_deadline_minutes"]
    assert datetime.fromisoformat(mine["from"]) == datetime.fromisoformat(rest["from"])
    assert [
        (
            g["group"],
            [tuple(m[name] for name in GQL_METRIC) for m in g["metrics"]],
        )
        for g in mine["groups"]
    ] == [
        (
            g["group"],
            [tuple(m[name] for name in REST_METRIC) for m in g["metrics"]],
        )
        for g in rest["groups"]
    ]
    assert len(mine["groups"]) >= 1


def test_turnaround_refusals(graph: Graph) -> None:
    for role in ("technologist", "referring_physician"):
        assert graph.client(role).attempt(TURNAROUND).codes == ["FORBIDDEN"]
    too_long = graph.client("admin").attempt(
        TURNAROUND, **{"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
    )
    assert too_long.codes == ["BAD_USER_INPUT"]


def test_one_audit_event_by_id_is_audited_with_its_id(graph: Graph, api: ApiServer) -> None:
    auditor = graph.client("auditor")
    with api.db.read() as session:
        sign_in = session.scalar(
            select(AuditEvent).where(AuditEvent.actor == auditor.username).limit(1)
        )
    assert sign_in is not None
    one = "query($id: Int!) { auditEvent(id: $id) { id action actor } }"

    shown = auditor.execute(one, id=sign_in.id)["auditEvent"]

    assert shown == {"id": sign_in.id, "action": sign_in.action, "actor": auditor.username}
    assert auditor.attempt(one, id=99999999).codes == ["NOT_FOUND"]
    with api.db.read() as session:
        used = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_code == "110101", AuditEvent.actor == auditor.username
            )
        ).all()
    assert [event.target_id for event in used] == [str(sign_in.id)]
    assert graph.client("radiologist").attempt(one, id=sign_in.id).codes == ["FORBIDDEN"]
