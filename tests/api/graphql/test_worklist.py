"""The reading worklist over GraphQL: the same page as REST's, the same audit
events, the same claim / release / reassign rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event, select, update

from dicom_node.db.models import AuditEvent, User
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.workflow.worklist_listing import WorklistEntry, worklist_entries
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.builders import audit_actions, seed_study, user_id

LISTING = """
query ($first: Int, $after: String, $queue: QueueType! = READING, $status: [WorklistStatus!],
       $assignedTo: String, $modality: String, $priority: Priority, $overdue: Boolean,
       $sort: WorklistSort! = PRIORITY) {
  worklist(first: $first, after: $after, queue: $queue, status: $status,
           assignedTo: $assignedTo, modality: $modality, priority: $priority,
           overdue: $overdue, sort: $sort) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id status priority queueType overdue version assignedToId
                   assignedToUsername orderId studyId } }
  }
}
"""

ITEM_FIELDS = "id status version assignedToId assignedToUsername claimedAt"
CLAIM = f"mutation ($id: Int!, $version: Int) {{ claimWorklistItem(id: $id, version: $version) {{ {ITEM_FIELDS} }} }}"  # noqa: E501
RELEASE = f"mutation ($id: Int!) {{ releaseWorklistItem(id: $id) {{ {ITEM_FIELDS} }} }}"
REASSIGN = f"mutation ($id: Int!, $user: Int!) {{ reassignWorklistItem(id: $id, userId: $user) {{ {ITEM_FIELDS} }} }}"  # noqa: E501


def _nodes(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [edge["node"] for edge in data["worklist"]["edges"]]


def test_the_worklist_is_rest_s_page_order_totals_filters_and_paging(
    api: ApiServer, graph: Graph
) -> None:
    seed_study(api.db, priority="routine", due_in=timedelta(hours=1))
    seed_study(api.db, priority="stat", due_in=timedelta(hours=3))
    seed_study(api.db, priority="urgent", due_in=timedelta(hours=2), modality="MR")
    seed_study(api.db, priority="stat", due_in=timedelta(minutes=-5))
    seed_study(api.db, priority="routine", due_in=None)
    seed_study(api.db, queue="reconciliation")
    seed_study(api.db, status="completed")
    claimed = seed_study(api.db, priority="urgent")
    client = graph.client("radiologist")
    rest = api.client("radiologist")
    assert client.execute(CLAIM, id=claimed.item_id)["claimWorklistItem"]["status"] == "CLAIMED"

    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"sort": "DUE_AT"}, {"sort": "due_at"}),
        ({"sort": "CREATED_AT"}, {"sort": "created_at"}),
        ({"sort": "NEWEST"}, {"sort": "-created_at"}),
        ({"modality": "mr"}, {"modality": "mr"}),
        ({"priority": "STAT"}, {"priority": "stat"}),
        ({"overdue": True}, {"overdue": "true"}),
        ({"overdue": False}, {"overdue": "false"}),
        ({"assignedTo": "none"}, {"assigned_to": "none"}),
        ({"assignedTo": "me"}, {}),
        ({"status": ["COMPLETED"]}, {"status": "completed"}),
        ({"queue": "RECONCILIATION"}, {"queue": "reconciliation"}),
    ]
    for variables, params in cases:
        data = client.execute(LISTING, **variables)
        if variables == {"assignedTo": "me"}:
            # REST's "me" is the REST client's user: compare by the holder's id
            params = {"assigned_to": str(user_id(api, client.username))}
        expected = rest.get("/api/worklist", params=params).json()
        assert [n["id"] for n in _nodes(data)] == [i["id"] for i in expected["items"]], variables
        assert data["worklist"]["totalCount"] == expected["total"], variables
        for node, item in zip(_nodes(data), expected["items"], strict=True):
            assert node["status"].lower() == item["status"]
            assert node["priority"].lower() == item["priority"]
            assert node["overdue"] == item["overdue"] and node["version"] == item["version"]
            assert node["assignedToUsername"] == item["assigned_to"]
            assert node["orderId"] == item["order_id"]
            assert node["studyId"] == item["study"]["id"]

    # paging by first / after walks REST's pages
    everything = [i["id"] for i in rest.get("/api/worklist").json()["items"]]
    seen: list[int] = []
    after: str | None = None
    while True:
        data = client.execute(LISTING, first=2, after=after)
        seen += [n["id"] for n in _nodes(data)]
        page = data["worklist"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == everything and len(seen) == 6
    second = rest.get("/api/worklist", params={"offset": 2, "limit": 2}).json()
    first_page = client.execute(LISTING, first=2)["worklist"]
    after_two = client.execute(LISTING, first=2, after=first_page["pageInfo"]["endCursor"])
    assert [n["id"] for n in _nodes(after_two)] == [i["id"] for i in second["items"]]


def test_bad_listing_arguments_are_bad_user_input(graph: Graph) -> None:
    client = graph.client("radiologist")
    assert client.attempt(LISTING, assignedTo="you").codes == ["BAD_USER_INPUT"]
    assert client.attempt(LISTING, assignedTo="007").codes == ["BAD_USER_INPUT"]
    assert client.attempt(LISTING, modality="C T").codes == ["BAD_USER_INPUT"]
    assert client.attempt(LISTING, first=0).codes == ["BAD_USER_INPUT"]
    assert client.attempt(LISTING, after="bm9wZQ==").codes == ["BAD_USER_INPUT"]
    unknown_sort = client.attempt("{ worklist(sort: patient_name) { totalCount } }")
    assert unknown_sort.codes == ["GRAPHQL_VALIDATION_FAILED"]


def _listing_events(api: ApiServer) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "worklist_queried")
                .order_by(AuditEvent.id)
            )
        )


def test_the_listing_is_audited_as_rest_once_per_interval_apart_from_rest(
    api: ApiServer, graph: Graph
) -> None:
    seed_study(api.db)
    seed_study(api.db)
    client = graph.client("radiologist")
    client.execute(LISTING, first=1)
    (event_,) = _listing_events(api)
    assert (event_.event_code, event_.actor) == ("110112", client.username)
    assert event_.details["matches"] == 2 and event_.details["returned"] == 1
    assert event_.details["query"]["limit"] == 1 and event_.details["query"]["queue"] == "reading"

    client.execute(LISTING, first=1)  # the next poll: counted, not written
    assert len(_listing_events(api)) == 1
    # a REST poll of the same listing is throttled apart: it writes its own
    rest = api.client("radiologist")
    assert rest.get("/api/worklist", params={"limit": 1}).status_code == 200
    assert len(_listing_events(api)) == 2
    client.execute(LISTING, first=2)  # another listing: its own event
    assert len(_listing_events(api)) == 3
    assert "edges" not in _listing_events(api)[-1].details["query"]  # none asked
    # the records a page shows its items with are named by its event
    client.execute("{ worklist(first: 2) { edges { node { id patient { name } order { id } } } } }")
    events = _listing_events(api)
    assert len(events) == 4 and events[-1].details["query"]["edges"] == ["order", "patient"]


def test_opening_an_item_is_audited_as_a_patient_record_access(
    api: ApiServer, graph: Graph
) -> None:
    seeded = seed_study(api.db)
    client = graph.client("technologist")
    data = client.execute(
        "query ($id: Int!) { worklistItem(id: $id) { id queueType status studyId"
        " study { studyInstanceUid patientId patientBirthDate metadataStatus modalities }"
        " patient { patientId name birthDate sex } } }",
        id=seeded.item_id,
    )
    item = data["worklistItem"]
    assert (item["id"], item["queueType"], item["status"]) == (seeded.item_id, "READING", "PENDING")
    assert item["study"]["studyInstanceUid"] == seeded.study_uid
    # a field the worklist's summary lacks is loaded for it
    assert item["study"]["patientBirthDate"] == "19800101"
    assert item["study"]["metadataStatus"] == "MATCHED"
    assert item["patient"] == {
        "patientId": seeded.patient_id,
        "name": f"PATIENT^{seeded.patient_id[2:]}",
        "birthDate": "19800101",
        "sex": "F",
    }
    (opened,) = audit_actions(api, "WorklistItem", seeded.item_id)
    assert (opened.action, opened.event_code) == ("worklist_item_read", "110110")
    assert opened.patient_id == seeded.patient_id and opened.actor == client.username

    missing = client.attempt("{ worklistItem(id: 999999) { id } }")
    assert missing.codes == ["NOT_FOUND"]
    assert client.attempt("{ worklistItem(id: 0) { id } }").codes == ["BAD_USER_INPUT"]


def test_a_page_with_studies_and_patients_is_a_fixed_number_of_statements(
    api: ApiServer, graph: Graph
) -> None:
    """The study's summary comes with the page; the fields it lacks and the
    patients are one statement each for the whole page, however long it is."""
    client = graph.client("radiologist")
    document = (
        "{ worklist(first: 50) { edges { node { id study { id patientName patientSex } "
        "patient { id name } } } } }"
    )
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    counts: list[int] = []
    for pages in (2, 12):
        while len(client.execute(document)["worklist"]["edges"]) < pages:
            seed_study(api.db)
        event.listen(api.db.engine, "before_cursor_execute", count)
        try:
            statements.clear()
            data = client.execute(document)
        finally:
            event.remove(api.db.engine, "before_cursor_execute", count)
        nodes = [edge["node"] for edge in data["worklist"]["edges"]]
        assert all(n["study"]["patientSex"] == "F" and n["patient"]["name"] for n in nodes)
        counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1], counts


# --------------------------------------------------------------------------- working items


def test_claim_is_rest_s_claim_with_its_audit_event_and_conflicts(
    api: ApiServer, graph: Graph
) -> None:
    seeded = seed_study(api.db)
    first, second = graph.client("radiologist"), graph.client("radiologist")
    me = user_id(api, first.username)

    claimed = first.execute(CLAIM, id=seeded.item_id, version=1)["claimWorklistItem"]

    assert (claimed["status"], claimed["assignedToId"], claimed["version"]) == ("CLAIMED", me, 2)
    assert claimed["assignedToUsername"] == first.username and claimed["claimedAt"]
    (event_,) = audit_actions(api, "WorklistItem", seeded.item_id)
    assert event_.action == "worklist_item_claimed" and event_.actor == first.username
    assert event_.details["after"] == {"status": "claimed", "assigned_to_id": me}

    refused = second.attempt(CLAIM, id=seeded.item_id)
    assert refused.codes == ["CONFLICT"]
    extensions = refused.errors[0]["extensions"]
    assert extensions["currentState"] == "claimed"
    assert extensions["existing"]["assignedTo"] == first.username
    assert second.attempt(CLAIM, id=999999).codes == ["NOT_FOUND"]
    assert second.attempt(CLAIM, id=seeded.item_id, version=0).codes == ["BAD_USER_INPUT"]

    stale = seed_study(api.db)
    outdated = second.attempt(CLAIM, id=stale.item_id, version=7)
    assert outdated.codes == ["CONFLICT"]
    assert outdated.errors[0]["extensions"]["currentState"] == "pending"


def test_release_by_the_holder_and_reassign_by_a_lead_or_admin(
    api: ApiServer, graph: Graph
) -> None:
    seeded = seed_study(api.db)
    holder, other = graph.client("radiologist"), graph.client("radiologist")
    holder.execute(CLAIM, id=seeded.item_id)

    assert other.attempt(RELEASE, id=seeded.item_id).codes == ["FORBIDDEN"]
    released = holder.execute(RELEASE, id=seeded.item_id)["releaseWorklistItem"]
    assert (released["status"], released["assignedToId"]) == ("PENDING", None)
    again = holder.attempt(RELEASE, id=seeded.item_id)
    assert again.codes == ["CONFLICT"]
    assert again.errors[0]["extensions"]["currentState"] == "pending"
    assert audit_actions(api, "WorklistItem", seeded.item_id)[-1].action == (
        "worklist_item_released"
    )

    target = user_id(api, api.user("radiologist"))
    lead = graph.client("radiologist")
    with api.db.unit_of_work() as session:
        session.execute(update(User).where(User.username == lead.username).values(is_lead=True))
    # a radiologist holds worklist:reassign, but only a lead may use it (the service)
    assert other.attempt(REASSIGN, id=seeded.item_id, user=target).codes == ["FORBIDDEN"]
    assert graph.client("scheduler").attempt(REASSIGN, id=seeded.item_id, user=target).codes == [
        "FORBIDDEN"
    ]
    technologist = user_id(api, api.user("technologist"))
    refused = graph.client("admin").attempt(REASSIGN, id=seeded.item_id, user=technologist)
    assert refused.codes == ["BAD_USER_INPUT"]
    assert refused.errors[0]["extensions"]["field"] == "userId"

    moved = lead.execute(REASSIGN, id=seeded.item_id, user=target)["reassignWorklistItem"]

    assert (moved["status"], moved["assignedToId"]) == ("CLAIMED", target)
    reassigned = audit_actions(api, "WorklistItem", seeded.item_id)[-1]
    assert reassigned.action == "worklist_item_reassigned" and reassigned.actor == lead.username
    assert reassigned.details["after"]["assigned_to_id"] == target


def test_roles_without_worklist_permissions_are_forbidden(api: ApiServer, graph: Graph) -> None:
    seeded = seed_study(api.db)
    referring = graph.client("referring_physician")
    assert referring.attempt(LISTING).codes == ["FORBIDDEN"]
    assert referring.attempt(f"{{ worklistItem(id: {seeded.item_id}) {{ id }} }}").codes == [
        "FORBIDDEN"
    ]
    technologist = graph.client("technologist")
    assert technologist.execute(LISTING)["worklist"]["totalCount"] == 1
    assert technologist.attempt(CLAIM, id=seeded.item_id).codes == ["FORBIDDEN"]
    # nothing was claimed, nothing audited as a claim
    assert audit_actions(api, "WorklistItem", seeded.item_id) == []


def test_item_loads_apply_the_visibility_rule(api: ApiServer, graph: Graph) -> None:
    """What worklist_item_by_id (other areas' edges to an item) batches: one
    answer per id in order, None for an item of an order the caller may not see."""
    referring = graph.client("referring_physician")
    theirs = seed_study(api.db, requested_by_id=user_id(api, referring.username))
    others = seed_study(api.db)
    wanted = [others.item_id, theirs.item_id, 999_999]
    with api.db.read() as session:
        seen = worklist_entries(
            session,
            principal=Principal(
                user_id=user_id(api, referring.username),
                username=referring.username,
                role=Role.REFERRING_PHYSICIAN,
            ),
            item_ids=wanted,
        )
        everything = worklist_entries(
            session,
            principal=Principal(user_id=1, username="admin", role=Role.ADMIN),
            item_ids=wanted,
        )

    def ids(entries: list[WorklistEntry | None]) -> list[int | None]:
        return [entry.id if entry else None for entry in entries]

    assert ids(seen) == [None, theirs.item_id, None]
    assert ids(everything) == [others.item_id, theirs.item_id, None]
    assert everything[1] is not None and everything[1].study is not None
    assert everything[1].study.study_instance_uid == theirs.study_uid
