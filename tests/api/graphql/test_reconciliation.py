"""Reconciliation over GraphQL: the same services, permission, inputs and audit
events as REST /api/reconciliation, with studies that arrived through the
ingest service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import Modality, PerformedProcedureStep, WorklistItem
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.workflow.order_listing import study_ids_of_orders
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph, GraphClient
from tests.api.graphql.test_orders import events, rest, statements, user_id
from tests.api.test_orders import modality
from tests.api.test_reconciliation import arrive, items

SLOT = "2026-11-24T14:30:00Z"

ENTRY = """
kind studyId studyInstanceUid metadataStatus patientId modality linkedOrderId
worklistItemId worklistStatus performedStationAeTitle releasedToReading
"""
LIST = f"""
query ($first: Int, $after: String, $metadataStatus: String, $patientId: String,
       $sort: String) {{
  reconciliation(first: $first, after: $after, metadataStatus: $metadataStatus,
                 patientId: $patientId, sort: $sort) {{
    totalCount
    pageInfo {{ hasNextPage hasPreviousPage endCursor }}
    edges {{ node {{ {ENTRY} }} }}
  }}
}}
"""
LINK = f"""
mutation ($studyId: Int!, $input: LinkStudyInput!) {{
  linkStudyToOrder(studyId: $studyId, input: $input) {{
    study {{ {ENTRY} }} order {{ id status }} readingItemId
  }}
}}
"""
RELEASE = f"""
mutation ($studyId: Int!, $input: ReleaseStudyInput!) {{
  releaseStudyToReading(studyId: $studyId, input: $input) {{ study {{ {ENTRY} }} readingItemId }}
}}
"""
CREATE_ORDER = f"""
mutation ($studyId: Int!, $input: CreateOrderFromStudyInput!) {{
  createOrderFromStudy(studyId: $studyId, input: $input) {{
    study {{ {ENTRY} }}
    order {{ id status priority patientId accessionNumber studyInstanceUid requestedModality }}
    readingItemId
  }}
}}
"""
RESOLVE = f"""
mutation ($itemId: Int!, $input: ResolveItemInput!) {{
  resolveReconciliationItem(itemId: $itemId, input: $input) {{ {ENTRY} }}
}}
"""
CREATE = """
mutation ($input: CreateOrderInput!) { createOrder(input: $input) { id } }
"""
SCHEDULE = """
mutation ($id: Int!, $modalityId: Int!, $at: DateTime!) {
  scheduleOrder(id: $id, input: {modalityId: $modalityId, scheduledAt: $at}) {
    id status studyInstanceUid
  }
}
"""


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def ct_modality(api: ApiServer) -> int:
    """The test's CT modality (made on first use)."""
    with api.db.read() as session:
        found = session.scalar(select(Modality.id).where(Modality.dicom_ae_title == "CT_MAIN_1"))
    return found if found is not None else modality(api)


def scheduled_order(
    api: ApiServer, client: GraphClient, *, patient_id: str = "PAT1"
) -> dict[str, Any]:
    """An urgent CT order of ``patient_id`` (DOE^JANE), scheduled over GraphQL."""
    created = client.execute(
        CREATE,
        input={
            "patientId": patient_id,
            "patientName": "DOE^JANE",
            "patientBirthDate": "19700101",
            "patientSex": "F",
            "requestedModality": "CT",
            "studyDescription": f"CT {generate_uid()[-6:]}",
            "priority": "URGENT",
        },
    )["createOrder"]
    order: dict[str, Any] = client.execute(
        SCHEDULE, id=created["id"], modalityId=ct_modality(api), at=SLOT
    )["scheduleOrder"]
    return order


def nodes(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [edge["node"] for edge in page["edges"]]


def unscheduled_step(api: ApiServer) -> int:
    """An open reconciliation item that only an MPPS opened (no study); its id."""
    with api.db.unit_of_work() as session:
        step = PerformedProcedureStep(
            sop_instance_uid=generate_uid(),
            status="IN PROGRESS",
            performed_station_ae_title="US_1",
            accession_number=None,
        )
        session.add(step)
        session.flush()
        item = WorklistItem(
            performed_procedure_step_id=step.id, queue_type="reconciliation", status="pending"
        )
        session.add(item)
        session.flush()
        return item.id


# --------------------------------------------------------------------------- listing


def test_the_listing_pages_as_rest_and_links_to_the_claimed_order_in_one_statement(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    scheduler = graph.client("scheduler")
    unmatched = arrive(api, store, patient_id="U1")
    conflicts = []
    for patient in ("C1", "C2"):
        claimed = scheduled_order(api, scheduler, patient_id=patient)
        study_id = arrive(
            api,
            store,
            study_uid=claimed["studyInstanceUid"],
            patient_id=patient,
            patient_name="SOMEONE^ELSE",
        )
        conflicts.append((study_id, claimed["id"]))
    unscheduled_step(api)
    http = rest(api, scheduler)

    everything = http.get("/api/reconciliation").json()
    assert everything["total"] == 4
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = scheduler.execute(LIST, first=3, after=after)["reconciliation"]
        expected = http.get("/api/reconciliation", params={"offset": len(seen), "limit": 3}).json()
        assert page["totalCount"] == expected["total"] == 4
        assert [(n["kind"], n["studyId"]) for n in nodes(page)] == [
            (e["kind"], e["study_id"]) for e in expected["items"]
        ]
        seen += nodes(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [(n["kind"], n["studyId"], n["metadataStatus"]) for n in seen] == [
        ("study", unmatched, "unmatched"),
        ("study", conflicts[0][0], "conflict"),
        ("study", conflicts[1][0], "conflict"),
        ("procedure_step", None, None),
    ]
    assert seen[3]["performedStationAeTitle"] == "US_1"
    assert seen[0]["worklistStatus"] == "pending"

    # the conflicting studies' orders: one SELECT of orders for the page (the batch loader)
    document = """
    query { reconciliation(metadataStatus: "conflict") {
      edges { node { studyId linkedOrder { id patientId status } } } } }
    """
    with statements(api) as seen_sql:
        linked = nodes(scheduler.execute(document)["reconciliation"])
    assert [(n["studyId"], n["linkedOrder"]["id"]) for n in linked] == conflicts
    assert linked[0]["linkedOrder"]["status"] == "SCHEDULED"
    order_selects = [
        sql for sql in seen_sql if sql.startswith("SELECT") and "FROM imaging_requests" in sql
    ]
    assert len(order_selects) == 1, order_selects

    def plain_queries() -> int:
        return len([e for e in events(api, "reconciliation_queried") if e.patient_id is None])

    before = plain_queries()
    newest = nodes(scheduler.execute(LIST, sort="-created_at", first=2)["reconciliation"])
    assert [n["studyId"] for n in newest] == [conflicts[1][0], conflicts[0][0]]
    # a listing without a patient: one Query event with its parameters (as REST)
    assert plain_queries() == before + 1
    listing = events(api, "reconciliation_queried")[-1]
    assert listing.details["query"] == {"sort": "-created_at", "offset": 0, "limit": 2}
    assert (listing.details["matches"], listing.details["returned"]) == (4, 2)
    # narrowed to a patient: the service's event, naming the patient
    by_patient = nodes(scheduler.execute(LIST, patientId="U1")["reconciliation"])
    assert [n["studyId"] for n in by_patient] == [unmatched]
    query = events(api, "reconciliation_queried")[-1]
    assert query.event_code == "110112" and query.patient_id == "U1"
    assert plain_queries() == before + 1

    for variables, field in (
        ({"metadataStatus": "matched"}, "metadataStatus"),
        ({"sort": "secret"}, "sort"),
        ({"first": 0}, "first"),
    ):
        outcome = scheduler.attempt(LIST, **variables)
        assert outcome.codes == ["BAD_USER_INPUT"], variables
        assert outcome.errors[0]["extensions"]["field"] == field
    for role in ("technologist", "radiologist", "referring_physician", "auditor"):
        assert graph.client(role).attempt(LIST).codes == ["FORBIDDEN"], role


# --------------------------------------------------------------------------- link


def test_linking_performs_the_order_queues_reading_and_is_audited(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    scheduler = graph.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store)  # no UID or accession of the order: unmatched
    reason = "modality operator typed no accession"

    blank = scheduler.attempt(LINK, studyId=study_id, input={"orderId": order["id"], "reason": " "})
    assert blank.codes == ["BAD_USER_INPUT"] and blank.errors[0]["extensions"]["field"] == "reason"
    refused = graph.client("technologist").attempt(
        LINK, studyId=study_id, input={"orderId": order["id"], "reason": reason}
    )
    assert refused.codes == ["FORBIDDEN"]
    unknown = scheduler.attempt(LINK, studyId=study_id, input={"orderId": 987654, "reason": "x"})
    assert unknown.codes == ["NOT_FOUND"]

    linked = scheduler.execute(
        LINK, studyId=study_id, input={"orderId": order["id"], "reason": reason}
    )["linkStudyToOrder"]
    assert linked["study"]["metadataStatus"] == "matched"
    assert linked["order"] == {"id": order["id"], "status": "PERFORMED"}
    assert linked["readingItemId"] is not None
    assert items(api, study_id) == [
        ("reconciliation", "completed", "routine"),
        ("reading", "pending", "urgent"),
    ]
    (event,) = events(api, "study_linked", study_id)
    assert event.reason == reason and event.actor == scheduler.username
    assert event.details["after"] == {
        "metadata_status": "matched",
        "imaging_request_id": order["id"],
    }

    again = scheduler.attempt(LINK, studyId=study_id, input={"orderId": order["id"], "reason": "x"})
    assert again.errors[0]["extensions"] == {"code": "CONFLICT", "currentState": "matched"}

    # the order's studies, one statement for a batch of orders, within visibility
    scheduler_principal = Principal(
        user_id=user_id(api, scheduler.username),
        username=scheduler.username,
        role=Role.SCHEDULER,
    )
    outsider = graph.client("referring_physician")
    outsider_principal = Principal(
        user_id=user_id(api, outsider.username),
        username=outsider.username,
        role=Role.REFERRING_PHYSICIAN,
    )
    with api.db.read() as session, statements(api) as seen_sql:
        found = study_ids_of_orders(session, [order["id"], 987654], principal=scheduler_principal)
        hidden = study_ids_of_orders(session, [order["id"]], principal=outsider_principal)
    assert found == {order["id"]: [study_id], 987654: []}
    assert hidden == {order["id"]: []}
    assert len([sql for sql in seen_sql if sql.startswith("SELECT")]) == 2


def test_another_patients_order_is_a_conflict_with_existing_until_forced(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    admin = graph.client("admin")
    order = scheduled_order(api, admin, patient_id="PAT9")
    study_id = arrive(api, store, patient_id="PAT1")
    refused = admin.attempt(
        LINK, studyId=study_id, input={"orderId": order["id"], "reason": "same person"}
    )
    assert refused.codes == ["CONFLICT"]
    existing = refused.errors[0]["extensions"]["existing"]
    assert (existing["id"], existing["patientId"]) == (order["id"], "PAT9")
    forced = admin.execute(
        LINK,
        studyId=study_id,
        input={"orderId": order["id"], "reason": "MRN merged", "force": True},
    )["linkStudyToOrder"]
    assert forced["study"]["metadataStatus"] == "matched"
    (event,) = events(api, "study_linked", study_id)
    assert event.details["forced"] is True and event.reason == "MRN merged"


# --------------------------------------------------------------------------- release


def test_an_unmatched_study_is_released_to_reading_with_a_reason(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    scheduler = graph.client("scheduler")
    study_id = arrive(api, store)
    assert graph.client("radiologist").attempt(
        RELEASE, studyId=study_id, input={"reason": "urgent read"}
    ).codes == ["FORBIDDEN"]
    released = scheduler.execute(
        RELEASE, studyId=study_id, input={"reason": "trauma, order to follow", "priority": "STAT"}
    )["releaseStudyToReading"]
    assert released["study"]["releasedToReading"] is True
    assert released["readingItemId"] is not None
    assert ("reading", "pending", "stat") in items(api, study_id)
    (event,) = events(api, "study_released_to_reading", study_id)
    assert event.reason == "trauma, order to follow" and event.actor == scheduler.username
    twice = scheduler.attempt(RELEASE, studyId=study_id, input={"reason": "again"})
    assert twice.codes == ["CONFLICT"]


# --------------------------------------------------------------------------- create order


def test_an_order_created_from_a_study_is_linked_and_audited(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    scheduler = graph.client("scheduler")
    study_id = arrive(api, store, patient_id="WALKIN", accession="ACC77")
    blank = scheduler.attempt(CREATE_ORDER, studyId=study_id, input={"reason": ""})
    assert blank.codes == ["BAD_USER_INPUT"] and blank.errors[0]["extensions"]["field"] == "reason"
    assert graph.client("auditor").attempt(
        CREATE_ORDER, studyId=study_id, input={"reason": "x"}
    ).codes == ["FORBIDDEN"]

    made = scheduler.execute(
        CREATE_ORDER, studyId=study_id, input={"reason": "walk-in trauma", "priority": "STAT"}
    )["createOrderFromStudy"]
    order = made["order"]
    assert (order["patientId"], order["accessionNumber"], order["requestedModality"]) == (
        "WALKIN",
        "ACC77",
        "CT",
    )
    assert (order["priority"], order["status"]) == ("STAT", "PERFORMED")
    assert made["study"]["metadataStatus"] == "matched"
    (created,) = events(api, "order_created", order["id"])
    assert created.reason == "walk-in trauma" and created.details["from_study_id"] == study_id
    (linked,) = events(api, "study_linked_to_new_order", study_id)
    assert linked.details["after"]["imaging_request_id"] == order["id"]


def test_create_order_from_a_study_with_an_open_order_is_a_conflict_until_forced(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    scheduler = graph.client("scheduler")
    order = scheduled_order(api, scheduler, patient_id="PAT7")
    study_id = arrive(api, store, patient_id="PAT7")
    refused = scheduler.attempt(CREATE_ORDER, studyId=study_id, input={"reason": "walk-in"})
    assert refused.codes == ["CONFLICT"]
    assert refused.errors[0]["extensions"]["existing"]["id"] == order["id"]
    forced = scheduler.execute(
        CREATE_ORDER, studyId=study_id, input={"reason": "a second exam", "force": True}
    )["createOrderFromStudy"]
    assert forced["order"]["id"] != order["id"]
    assert events(api, "order_duplicate_forced", forced["order"]["id"])


# --------------------------------------------------------------------------- resolve


def test_an_mpps_only_item_is_resolved_with_a_reason(graph: Graph, api: ApiServer) -> None:
    scheduler = graph.client("scheduler")
    item_id = unscheduled_step(api)
    bad = scheduler.attempt(RESOLVE, itemId=item_id, input={"reason": "x", "outcome": "lost"})
    assert bad.codes == ["BAD_USER_INPUT"] and bad.errors[0]["extensions"]["field"] == "outcome"
    assert graph.client("technologist").attempt(
        RESOLVE, itemId=item_id, input={"reason": "x"}
    ).codes == ["FORBIDDEN"]
    assert scheduler.attempt(RESOLVE, itemId=987654, input={"reason": "x"}).codes == ["NOT_FOUND"]

    resolved = scheduler.execute(RESOLVE, itemId=item_id, input={"reason": "phantom test scan"})
    assert resolved["resolveReconciliationItem"]["worklistStatus"] == "cancelled"
    (event,) = events(api, "worklist_item_cancelled", item_id)
    assert event.reason == "phantom test scan" and event.actor == scheduler.username
    again = scheduler.attempt(RESOLVE, itemId=item_id, input={"reason": "again"})
    assert again.errors[0]["extensions"] == {"code": "CONFLICT", "currentState": "cancelled"}
    assert scheduler.execute(LIST)["reconciliation"]["totalCount"] == 0
