"""Orders over GraphQL: the same services, permissions, visibility and audit
events as REST /api/orders, compared with REST where it is cheap."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sql_event
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, User
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.workflow.order_listing import orders_by_ids
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph, GraphClient
from tests.api.test_orders import modality

SLOT = "2026-11-24T14:30:00+01:00"

FIELDS = """
id status priority patientId patientName requestedModality studyDescription
requestedById referringPhysicianId accessionNumber studyInstanceUid scheduledAt
scheduledModalityId cancelReason examStartedAt examCompletedAt createdAt
"""
CREATE = f"""
mutation ($input: CreateOrderInput!) {{ createOrder(input: $input) {{ {FIELDS} }} }}
"""
ORDER = f"query ($id: Int!) {{ order(id: $id) {{ {FIELDS} }} }}"
LIST = """
query ($first: Int, $after: String, $sort: String, $status: [RequestStatus!],
       $patientId: String, $modality: String) {
  orders(first: $first, after: $after, sort: $sort, status: $status,
         patientId: $patientId, modality: $modality) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id patientId status } }
  }
}
"""


def order_input(**fields: Any) -> dict[str, Any]:
    return {
        "patientId": "PAT1",
        "issuerOfPatientId": "HOSP",
        "patientName": "Müller^Hans",
        "patientBirthDate": "19700101",
        "patientSex": "M",
        "requestedModality": "CT",
        "studyDescription": "CT Head without contrast",
        "priority": "ROUTINE",
        "clinicalIndication": "headache",
        "referringPhysicianName": "WHO^REFERS",
    } | fields


def create(client: GraphClient, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = client.execute(CREATE, input=order_input(**fields))["createOrder"]
    return created


def events(api: ApiServer, action: str, target_id: object | None = None) -> list[AuditEvent]:
    with api.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target_id is not None:
            query = query.where(AuditEvent.target_id == str(target_id))
        return list(session.scalars(query.order_by(AuditEvent.id)))


def user_id(api: ApiServer, username: str) -> int:
    with api.db.read() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found


@contextmanager
def statements(api: ApiServer) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (by this process: the test's server too)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sql_event.listen(api.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sql_event.remove(api.db.engine, "before_cursor_execute", record)


def rest(api: ApiServer, client: GraphClient) -> httpx.Client:
    """REST as the same user as ``client`` (to compare the two answers)."""
    session = api.anonymous()
    session.headers["Authorization"] = f"Bearer {client.token}"
    return session


# --------------------------------------------------------------------------- create


def test_a_created_order_is_requested_by_the_caller_and_audited(
    graph: Graph, api: ApiServer
) -> None:
    scheduler = graph.client("scheduler")
    order = create(scheduler)
    assert order["status"] == "REQUESTED" and order["priority"] == "ROUTINE"
    assert order["requestedById"] == user_id(api, scheduler.username)
    assert order["accessionNumber"] is None and order["studyInstanceUid"] is None
    (event,) = events(api, "order_created", order["id"])
    assert event.event_code == "110109" and event.patient_id == "PAT1"
    assert event.actor_user_id == order["requestedById"]
    # REST reads the same order
    assert rest(api, scheduler).get(f"/api/orders/{order['id']}").json()["patient_name"] == (
        "Müller^Hans"
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"patientName": ""}, "patientName"),
        ({"patientBirthDate": "19801340"}, "patientBirthDate"),
        ({"patientBirthDate": "1980-01-01"}, "patientBirthDate"),
        ({"requestedModality": "XYZ"}, "requestedModality"),
        ({"patientSex": "X"}, "patientSex"),
        ({"patientName": "A=B=C=D"}, "patientName"),
        ({"studyDescription": "   "}, "studyDescription"),
        ({"force": True}, "forceReason"),
        ({"force": True, "forceReason": "  "}, "forceReason"),
        ({"imagingCenterId": 0}, "imagingCenterId"),
    ],
)
def test_invalid_order_input_is_bad_user_input_naming_the_field_as_rest(
    graph: Graph, api: ApiServer, fields: dict[str, Any], field: str
) -> None:
    scheduler = graph.client("scheduler")
    outcome = scheduler.attempt(CREATE, input=order_input(**fields))
    assert outcome.codes == ["BAD_USER_INPUT"]
    assert outcome.errors[0]["extensions"]["field"] == field
    assert events(api, "order_created") == []


def test_roles_without_orders_create_get_forbidden(graph: Graph, api: ApiServer) -> None:
    for role in ("technologist", "radiologist", "auditor"):
        outcome = graph.client(role).attempt(CREATE, input=order_input())
        assert outcome.codes == ["FORBIDDEN"], role
    assert events(api, "order_created") == []


# --------------------------------------------------------------------------- duplicates


def test_a_duplicate_is_a_conflict_with_the_existing_order_and_a_reasoned_force_creates_it(
    graph: Graph, api: ApiServer
) -> None:
    scheduler = graph.client("scheduler")
    first = create(scheduler)
    again = scheduler.attempt(
        CREATE, input=order_input(studyDescription="  ct HEAD   without CONTRAST")
    )
    assert again.codes == ["CONFLICT"]
    existing = again.errors[0]["extensions"]["existing"]
    assert (existing["id"], existing["status"]) == (first["id"], "requested")

    forced = create(scheduler, force=True, forceReason="repeat after motion artefact")
    assert forced["id"] != first["id"]
    (override,) = events(api, "order_duplicate_forced", forced["id"])
    assert override.reason == "repeat after motion artefact"
    assert override.details["existing_order_id"] == first["id"]
    (created,) = events(api, "order_created", forced["id"])
    assert created.details["duplicate_override"] == {
        "existing_order_id": first["id"],
        "reason": "repeat after motion artefact",
    }


def test_a_duplicate_of_another_physicians_order_is_refused_without_showing_it(
    graph: Graph,
) -> None:
    mine = graph.client("referring_physician")
    other = graph.client("referring_physician")
    first = create(mine)
    refused = other.attempt(CREATE, input=order_input())
    assert refused.codes == ["CONFLICT"]
    assert "existing" not in refused.errors[0]["extensions"]
    assert f"order {first['id']}" not in refused.errors[0]["message"]


# --------------------------------------------------------------------------- visibility, reads


def test_a_referring_physician_sees_only_their_orders(graph: Graph, api: ApiServer) -> None:
    mine = graph.client("referring_physician")
    theirs = graph.client("referring_physician")
    own = create(mine, patientId="P-MINE")
    other = create(theirs, patientId="P-THEIRS")

    assert mine.execute(ORDER, id=own["id"])["order"]["id"] == own["id"]
    hidden = mine.attempt(ORDER, id=other["id"])
    assert hidden.codes == ["NOT_FOUND"] and hidden.data == {"order": None}
    listed = mine.execute(LIST)["orders"]
    assert [e["node"]["id"] for e in listed["edges"]] == [own["id"]]
    assert listed["totalCount"] == 1
    assert mine.execute(LIST, patientId="P-THEIRS")["orders"]["totalCount"] == 0
    cancel = mine.attempt(
        'mutation ($id: Int!) { cancelOrder(id: $id, reason: "x") { id } }', id=other["id"]
    )
    assert cancel.codes == ["NOT_FOUND"]
    update = mine.attempt(
        "mutation ($id: Int!) { updateOrder(id: $id, input: {priority: STAT}) { id } }",
        id=other["id"],
    )
    assert update.codes == ["NOT_FOUND"]

    staff = graph.client("scheduler").execute(LIST)["orders"]
    assert {e["node"]["id"] for e in staff["edges"]} == {own["id"], other["id"]}


def test_reads_are_audited_as_on_rest(graph: Graph, api: ApiServer) -> None:
    scheduler = graph.client("scheduler")
    order = create(scheduler)
    scheduler.execute(LIST, first=10)  # no patient: a Query naming none
    (listing,) = events(api, "orders_queried")
    assert listing.event_code == "110112" and listing.patient_id is None
    assert listing.details["matches"] == 1 and listing.details["returned"] == 1
    assert listing.details["query"] == {"offset": 0, "limit": 10}
    scheduler.execute(LIST, patientId="PAT1", status=["REQUESTED"])
    query = events(api, "orders_queried")[-1]
    assert query.event_code == "110112" and query.patient_id == "PAT1"
    assert query.details["query"]["status"] == ["requested"]
    assert "Müller" not in str(query.details)

    scheduler.execute(ORDER, id=order["id"])
    (read,) = events(api, "order_read", order["id"])
    assert read.event_code == "110110" and read.actor == scheduler.username


def test_the_connection_pages_as_the_rest_listing(graph: Graph, api: ApiServer) -> None:
    scheduler = graph.client("scheduler")
    for patient in ("C3", "A1", "E5", "B2", "D4"):
        create(scheduler, patientId=patient)
    create(scheduler, patientId="F6", requestedModality="MR")
    http = rest(api, scheduler)

    seen: list[int] = []
    after = None
    while True:
        page = scheduler.execute(LIST, first=2, after=after, sort="-patient_id")["orders"]
        offset = len(seen)
        expected = http.get(
            "/api/orders", params={"sort": "-patient_id", "offset": offset, "limit": 2}
        ).json()
        assert [e["node"]["id"] for e in page["edges"]] == [o["id"] for o in expected["items"]]
        assert page["totalCount"] == expected["total"] == 6
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (offset > 0)
        assert info["hasNextPage"] is (offset + 2 < 6)
        assert info["endCursor"] == page["edges"][-1]["cursor"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert len(seen) == len(set(seen)) == 6

    # the default order (newest first) and a filter, as REST
    page = scheduler.execute(LIST, modality="CT")["orders"]
    expected = http.get("/api/orders", params={"modality": "CT"}).json()
    assert [e["node"]["id"] for e in page["edges"]] == [o["id"] for o in expected["items"]]
    assert page["totalCount"] == expected["total"] == 5


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 1001}, "first"),
        ({"after": "not-a-cursor"}, "after"),
        ({"sort": "secret"}, "sort"),
        ({"modality": "XYZ"}, "modality"),
        ({"patientId": "x" * 65}, "patientId"),
    ],
)
def test_bad_listing_arguments_are_bad_user_input(
    graph: Graph, api: ApiServer, variables: dict[str, Any], field: str
) -> None:
    outcome = graph.client("scheduler").attempt(LIST, **variables)
    assert outcome.codes == ["BAD_USER_INPUT"]
    assert outcome.errors[0]["extensions"]["field"] == field
    assert events(api, "orders_queried") == []


def test_an_id_out_of_range_is_bad_user_input(graph: Graph) -> None:
    outcome = graph.client("scheduler").attempt(ORDER, id=0)
    assert outcome.codes == ["BAD_USER_INPUT"]


# --------------------------------------------------------------------------- changes

SCHEDULE = f"""
mutation ($id: Int!, $modalityId: Int!, $at: DateTime!) {{
  scheduleOrder(id: $id, input: {{modalityId: $modalityId, scheduledAt: $at}}) {{ {FIELDS} }}
}}
"""
CANCEL = f"""
mutation ($id: Int!, $reason: String!) {{ cancelOrder(id: $id, reason: $reason) {{ {FIELDS} }} }}
"""
START = f"mutation ($id: Int!) {{ startOrder(id: $id) {{ {FIELDS} }} }}"
COMPLETE = f"mutation ($id: Int!) {{ completeOrder(id: $id) {{ {FIELDS} }} }}"
UPDATE = f"""
mutation ($id: Int!, $input: UpdateOrderInput!) {{
  updateOrder(id: $id, input: $input) {{ {FIELDS} clinicalIndication }}
}}
"""


def test_schedule_reschedule_start_and_complete_are_the_rest_transitions(
    graph: Graph, api: ApiServer
) -> None:
    scheduler = graph.client("scheduler")
    technologist = graph.client("technologist")
    order = create(scheduler)
    device = modality(api)

    naive = scheduler.attempt(SCHEDULE, id=order["id"], modalityId=device, at="2026-11-24T14:30:00")
    assert naive.codes == ["BAD_USER_INPUT"]
    refused = technologist.attempt(SCHEDULE, id=order["id"], modalityId=device, at=SLOT)
    assert refused.codes == ["FORBIDDEN"]
    wrong = scheduler.attempt(
        SCHEDULE, id=order["id"], modalityId=modality(api, type="MR", ae="MR_1"), at=SLOT
    )
    assert wrong.codes == ["CONFLICT"]

    scheduled = scheduler.execute(SCHEDULE, id=order["id"], modalityId=device, at=SLOT)
    booked = scheduled["scheduleOrder"]
    assert booked["status"] == "SCHEDULED" and booked["scheduledModalityId"] == device
    assert booked["accessionNumber"] and booked["studyInstanceUid"]
    assert booked["scheduledAt"].startswith("2026-11-24T13:30:00")
    (moved,) = events(api, "order_scheduled", order["id"])
    assert moved.actor == scheduler.username
    later = "2026-11-25T08:00:00+00:00"
    again = scheduler.execute(SCHEDULE, id=order["id"], modalityId=device, at=later)
    assert again["scheduleOrder"]["accessionNumber"] == booked["accessionNumber"]
    (rescheduled,) = events(api, "order_rescheduled", order["id"])
    assert rescheduled.details["after"]["modality_id"] == device

    assert scheduler.attempt(START, id=order["id"]).codes == ["FORBIDDEN"]
    assert technologist.attempt(COMPLETE, id=order["id"]).errors[0]["extensions"] == {
        "code": "CONFLICT",
        "currentState": "scheduled",
    }
    started = technologist.execute(START, id=order["id"])["startOrder"]
    assert started["status"] == "IN_PROGRESS" and started["examStartedAt"]
    assert len(events(api, "order_in_progress", order["id"])) == 1
    done = technologist.execute(COMPLETE, id=order["id"])["completeOrder"]
    assert done["status"] == "PERFORMED" and done["examCompletedAt"]
    assert len(events(api, "order_performed", order["id"])) == 1

    late = scheduler.attempt(CANCEL, id=order["id"], reason="too late")
    assert late.errors[0]["extensions"] == {"code": "CONFLICT", "currentState": "performed"}


def test_cancel_needs_a_reason_and_is_audited(graph: Graph, api: ApiServer) -> None:
    scheduler = graph.client("scheduler")
    order = create(scheduler)
    blank = scheduler.attempt(CANCEL, id=order["id"], reason="  ")
    assert blank.codes == ["BAD_USER_INPUT"] and blank.errors[0]["extensions"]["field"] == "reason"
    assert graph.client("radiologist").attempt(CANCEL, id=order["id"], reason="x").codes == [
        "FORBIDDEN"
    ]
    cancelled = scheduler.execute(CANCEL, id=order["id"], reason="wrong patient")["cancelOrder"]
    assert (cancelled["status"], cancelled["cancelReason"]) == ("CANCELLED", "wrong patient")
    (event,) = events(api, "order_cancelled", order["id"])
    assert event.reason == "wrong patient" and event.actor == scheduler.username


def test_an_edit_changes_only_the_fields_sent_and_is_audited_before_and_after(
    graph: Graph, api: ApiServer
) -> None:
    scheduler = graph.client("scheduler")
    order = create(scheduler)
    changed = scheduler.execute(
        UPDATE, id=order["id"], input={"priority": "STAT", "patientName": None}
    )["updateOrder"]
    # null for a field that cannot be empty leaves it as it is (as REST)
    assert (changed["priority"], changed["patientName"]) == ("STAT", "Müller^Hans")
    assert changed["clinicalIndication"] == "headache"
    (event,) = events(api, "order_updated", order["id"])
    assert event.details == {"before": {"priority": "routine"}, "after": {"priority": "stat"}}
    cleared = scheduler.execute(UPDATE, id=order["id"], input={"clinicalIndication": None})
    assert cleared["updateOrder"]["clinicalIndication"] is None

    bad = scheduler.attempt(UPDATE, id=order["id"], input={"patientSex": "X"})
    assert bad.codes == ["BAD_USER_INPUT"] and bad.errors[0]["extensions"]["field"] == "patientSex"
    assert graph.client("technologist").attempt(
        UPDATE, id=order["id"], input={"priority": "STAT"}
    ).codes == ["FORBIDDEN"]


def test_a_referring_physician_edits_and_cancels_their_own_order_only_while_requested(
    graph: Graph, api: ApiServer
) -> None:
    physician = graph.client("referring_physician")
    order = create(physician)
    edited = physician.execute(UPDATE, id=order["id"], input={"clinicalIndication": "worse"})
    assert edited["updateOrder"]["clinicalIndication"] == "worse"
    graph.client("scheduler").execute(SCHEDULE, id=order["id"], modalityId=modality(api), at=SLOT)
    assert physician.attempt(UPDATE, id=order["id"], input={"priority": "STAT"}).codes == [
        "FORBIDDEN"
    ]
    assert physician.attempt(CANCEL, id=order["id"], reason="no longer needed").codes == [
        "FORBIDDEN"
    ]


# --------------------------------------------------------------------------- batches


def test_the_batch_service_answers_the_visible_orders_of_a_batch_in_one_statement(
    graph: Graph, api: ApiServer
) -> None:
    """What ``order_by_id``'s loader calls: one SELECT for the whole batch, an
    order outside the caller's visibility absent (as a missing one)."""
    mine = graph.client("referring_physician")
    own = [create(mine, patientId=f"P{n}")["id"] for n in range(3)]
    other = create(graph.client("scheduler"), patientId="OTHER")["id"]
    physician = Principal(
        user_id=user_id(api, mine.username), username=mine.username, role=Role.REFERRING_PHYSICIAN
    )
    with api.db.read() as session, statements(api) as seen:
        found = orders_by_ids(session, [*own, other, 987654], principal=physician)
    assert sorted(found) == sorted(own) and found[own[0]].patient_id == "P0"
    assert len([sql for sql in seen if sql.startswith("SELECT")]) == 1


def test_the_users_of_an_order_show_who_they_are_and_their_account_only_to_admins(
    graph: Graph,
) -> None:
    """As every edge to a user: who placed the order (id, username, name,
    role) for whoever may read it; the account (email...) is users:manage."""
    scheduler = graph.client("scheduler")
    order = create(scheduler)
    document = """
    query ($id: Int!) { order(id: $id) {
      id requestedById referringPhysicianName requestedBy { id username } referringPhysician { id }
    } }
    """
    outcome = scheduler.attempt(document, id=order["id"])
    assert outcome.codes == []
    assert outcome.data is not None
    assert outcome.data["order"] == {
        "id": order["id"],
        "requestedById": order["requestedById"],
        "referringPhysicianName": "WHO^REFERS",
        "requestedBy": {"id": order["requestedById"], "username": scheduler.username},
        "referringPhysician": None,
    }
    account = scheduler.attempt(
        "query ($id: Int!) { order(id: $id) { requestedBy { email } } }", id=order["id"]
    )
    assert account.codes == ["FORBIDDEN"]
