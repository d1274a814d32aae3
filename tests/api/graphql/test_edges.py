"""The edges between the GraphQL areas end to end (each area was built and
tested alone): a worklist page with its studies, patients, orders, reports and
holders in a fixed number of statements, an order's and a study's neighbours,
a referring physician's view through the edges, subscription records' edges,
and a field refused on its own while the rest of the page comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import DicomStudy, ImagingRequest
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.api.graphql.test_orders import create, statements, user_id
from tests.api.graphql.test_orders import events as audit_rows
from tests.api.graphql.test_reconciliation import LINK, scheduled_order
from tests.api.graphql.test_subscriptions import claim, events, latest, next_event, release, run
from tests.api.graphql.test_worklist import CLAIM
from tests.api.test_reconciliation import arrive, complete
from tests.builders import (
    Study,
    add_user,
    claimed_study,
    finalize,
    new_report,
    seed_study,
    signed_report,
    submit,
)
from tests.dicomfiles import ct_dataset, to_bytes

# --------------------------------------------------------------------------- worklist page

PAGE = """
query ($first: Int!) { worklist(first: $first) { edges { node {
  id priority
  study { studyInstanceUid patientName }
  patient { patientId }
  order { accessionNumber }
  report { status }
  assignedTo { username }
} } } }
"""


BATCHES = {
    "SELECT dicom_studies.id, patients.id": 1,
    "SELECT imaging_requests.id": 1,
    "SELECT reports.id": 1,
    "SELECT users.id": 2,
}


def test_a_worklist_page_with_its_neighbours_costs_the_same_statements_at_any_size(
    graph: Graph, api: ApiServer
) -> None:
    admin = graph.client("admin")
    holder = add_user(api.db, Role.RADIOLOGIST)
    for _ in range(40):
        new_report(api.db, claimed_study(api.db, holder), holder)

    counts: dict[int, int] = {}
    for size in (5, 40):
        with statements(api) as seen:
            nodes = [edge["node"] for edge in admin.execute(PAGE, first=size)["worklist"]["edges"]]
        assert len(nodes) == size
        for node in nodes:
            assert node["study"]["studyInstanceUid"] and node["study"]["patientName"]
            assert node["patient"]["patientId"].startswith("RS")
            assert node["order"]["accessionNumber"].startswith("RSA")
            assert node["report"] == {"status": "DRAFT"}
            assert node["assignedTo"] == {"username": holder.username}
        # BEGIN is a statement of its own on SQLite only (the engine's
        # transaction hook): counted apart so that one bound fits both backends
        work = [s for s in seen if not s.startswith("BEGIN")]
        counts[size] = len(work)
        # one batch per kind (users: the caller's token and the holders' batch)
        for batch, times in BATCHES.items():
            assert len([s for s in work if s.startswith(batch)]) == times, (batch, work)
    # One page of any size: the caller's token (1), the listing and its total
    # (2), the listing's audit event (2: the chain's head and the insert; 3 on
    # PostgreSQL with its advisory lock), then one batch per neighbour kind:
    # patients (1), orders (1), reports (1), users (1); the study comes with the
    # listing's entries; and the feed position the answer cache is keyed by
    # (1, api/graphql/answers.py). Measured: 10 on SQLite, 11 on PostgreSQL.
    assert counts[5] == counts[40] <= 11, counts


TEXT_PAGE = """
query ($first: Int!) { worklist(first: $first) { edges { node {
  id report { id findings impression versions { version } }
  study { studyInstanceUid accessionNumber } patient { patientId }
} } } }
"""


def test_a_worklist_page_of_report_texts_is_audited_per_report_in_a_fixed_number_of_statements(
    graph: Graph, api: ApiServer
) -> None:
    auditor = graph.client("auditor")
    me = user_id(api, auditor.username)
    holder = add_user(api.db, Role.RADIOLOGIST)
    for _ in range(40):
        new_report(api.db, claimed_study(api.db, holder), holder)

    counts: dict[int, int] = {}
    for size in (5, 40):
        with statements(api) as seen:
            nodes = [e["node"] for e in auditor.execute(TEXT_PAGE, first=size)["worklist"]["edges"]]
        assert [node["report"]["findings"] for node in nodes] == ["Clear lungs."] * size
        counts[size] = len([s for s in seen if not s.startswith("BEGIN")])
        # each text and each version list shown is a read REST audits:
        # still one event per report, whatever the page
        for action in ("report_read", "report_versions_read"):
            read = {
                row.target_id: (row.patient_id, row.study_instance_uid, row.accession_number)
                for row in audit_rows(api, action)
                if row.actor_user_id == me
            }
            # about the report's patient and study, as REST's events are
            assert read == {
                str(node["report"]["id"]): (
                    node["patient"]["patientId"],
                    node["study"]["studyInstanceUid"],
                    node["study"]["accessionNumber"],
                )
                for node in nodes
            }, action
    # The page as above (token 1, listing 2, its audit 2-3, reports 1), then per
    # kind of read, whatever the number of reports: the versions (1) and their
    # reports with studies and patients for the audit events (1) with the
    # events (2-3), the same for the texts' events (1 + 2-3), the feed position
    # (1, the answer cache). Measured: 15 on SQLite, 18 on PostgreSQL; before,
    # two more statements per report (its study, its patient) for each kind of read.
    assert counts[5] == counts[40] <= 18, counts


# --------------------------------------------------------------------------- orders

ORDER_EDGES = """
query ($id: Int!) { order(id: $id) {
  id studies { id order { id } } requestedBy { id username } referringPhysician { id }
} }
"""
ORDERS_PAGE = """
{ orders(first: 50) { edges { node { id studies { id } requestedBy { id } } } } }
"""


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def test_an_orders_studies_and_users_through_the_other_areas(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    admin = graph.client("admin")
    physician = graph.client("referring_physician", display_name="Who Refers")
    order = scheduled_order(api, admin)
    study_id = arrive(api, store)
    admin.execute(LINK, studyId=study_id, input={"orderId": order["id"], "reason": "x"})
    data = admin.execute(ORDER_EDGES, id=order["id"])["order"]
    assert data["studies"] == [{"id": study_id, "order": {"id": order["id"]}}]
    assert data["requestedBy"] == {"id": user_id(api, admin.username), "username": admin.username}
    assert data["referringPhysician"] is None

    # who placed their own order, as for every reader of it
    own = create(physician, patientId="P-OWN")
    mine = physician.attempt(ORDER_EDGES, id=own["id"])
    assert mine.codes == []
    assert mine.data is not None and mine.data["order"]["studies"] == []
    assert mine.data["order"]["requestedBy"]["username"] == physician.username

    for n in range(5):
        create(admin, patientId=f"PAGE{n}")
    with statements(api) as seen:
        page = admin.execute(ORDERS_PAGE)["orders"]["edges"]
    assert len(page) == 7
    # two batches for the whole page, not one per order: the orders' study
    # ids, then those studies
    studies = [s for s in seen if "FROM dicom_studies" in s]
    assert len(studies) == 2, studies


# --------------------------------------------------------------------------- a study's neighbours

STUDY_EDGES = """
query ($id: Int!) { study(id: $id) {
  id order { id } report { id status } patient { patientId studies { id } }
  series { seriesInstanceUid instances(first: 2) {
    totalCount edges { node { sopInstanceUid } } } }
} }
"""
REPORT_EDGES = """
query ($id: Int!) { report(id: $id) {
  id study { id } order { id } radiologist { username }
} }
"""
ITEM_EDGES = """
query ($id: Int!) { worklistItem(id: $id) {
  id study { id } order { id } report { id }
} }
"""
RECONCILIATION_EDGES = """
{ reconciliation(first: 50) { edges { node { studyId study { id studyInstanceUid } } } } }
"""


def three_images(api: ApiServer, store: FileStore, uid: str, series: str, patient_id: str) -> int:
    """A complete, unmatched CT study of three images in one series; its id."""
    for n in range(1, 4):
        image = ct_dataset(
            study_uid=uid, series_uid=series, patient_id=patient_id, instance_number=n
        )
        result = store_instance(
            api.db,
            store,
            part10=to_bytes(image),
            source=Source(calling_ae_title="CT_MAIN_1"),
            policy=IngestPolicy(),
        )
        assert result.outcome is StoreOutcome.STORED
    with api.db.read() as session:
        study_id = session.scalar(select(DicomStudy.id).where(DicomStudy.study_instance_uid == uid))
    assert study_id is not None
    complete(api, study_id)
    return study_id


def test_a_studys_order_report_patient_and_images_and_the_way_back(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    admin = graph.client("admin")
    reader = graph.client("radiologist")
    radiologist = Principal(user_id(api, reader.username), reader.username, Role.RADIOLOGIST)
    order = scheduled_order(api, admin, patient_id="EDGE1")
    uid, series = generate_uid(), generate_uid()
    study_id = three_images(api, store, uid, series, "EDGE1")

    # unmatched: a reconciliation entry, whose study is the study
    entries = admin.execute(RECONCILIATION_EDGES)["reconciliation"]["edges"]
    assert {"studyId": study_id, "study": {"id": study_id, "studyInstanceUid": uid}} in [
        edge["node"] for edge in entries
    ]

    linked = admin.execute(LINK, studyId=study_id, input={"orderId": order["id"], "reason": "x"})
    item_id = linked["linkStudyToOrder"]["readingItemId"]
    reader.execute(CLAIM, id=item_id)
    report_id = new_report(api.db, Study(study_id, order["id"], item_id), radiologist)

    study = admin.execute(STUDY_EDGES, id=study_id)["study"]
    assert study["order"] == {"id": order["id"]}
    assert study["report"] == {"id": report_id, "status": "DRAFT"}
    assert study["patient"]["patientId"] == "EDGE1"
    assert study["patient"]["studies"] == [{"id": study_id}]
    [images] = study["series"]
    assert images["seriesInstanceUid"] == series
    assert images["instances"]["totalCount"] == 3
    assert len(images["instances"]["edges"]) == 2

    report = admin.execute(REPORT_EDGES, id=report_id)["report"]
    assert report == {
        "id": report_id,
        "study": {"id": study_id},
        "order": {"id": order["id"]},
        "radiologist": {"username": reader.username},
    }
    item = reader.execute(ITEM_EDGES, id=item_id)["worklistItem"]
    assert item == {
        "id": item_id,
        "study": {"id": study_id},
        "order": {"id": order["id"]},
        "report": {"id": report_id},
    }


# --------------------------------------------------------------------------- a referring physician

REFERRER_ORDER = """
query ($id: Int!) { order(id: $id) { id studies { id report { id status } } } }
"""
REFERRER_STUDY = """
query ($id: Int!) { study(id: $id) {
  id report { id status } order { id } patient { studies { id } }
} }
"""
REFERRER_REPORT = "query ($id: Int!) { report(id: $id) { id status study { id } } }"


def test_a_referring_physician_reaches_only_their_orders_and_signed_reports_through_edges(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    physician = graph.client("referring_physician")
    rest = api.anonymous()
    rest.headers["Authorization"] = f"Bearer {physician.token}"
    author = add_user(api.db, Role.RADIOLOGIST)
    reviewer = add_user(api.db, Role.RADIOLOGIST)
    own = claimed_study(api.db, author, referring_physician_id=user_id(api, physician.username))
    other = claimed_study(api.db, author)
    draft = new_report(api.db, own, author)
    others_signed = signed_report(api.db, other, author, reviewer)
    # another study of the same patient, of no order of theirs
    with api.db.read() as session:
        patient_id = session.scalar(
            select(ImagingRequest.patient_id).where(ImagingRequest.id == own.order_id)
        )
    assert patient_id is not None
    stranger = three_images(api, store, generate_uid(), generate_uid(), patient_id)
    everyone = graph.client("admin").execute(REFERRER_STUDY, id=own.study_id)["study"]
    assert {s["id"] for s in everyone["patient"]["studies"]} == {own.study_id, stranger}

    # a draft is not theirs to see (REST: 404): null through every edge
    order = physician.execute(REFERRER_ORDER, id=own.order_id)["order"]
    assert order == {"id": own.order_id, "studies": [{"id": own.study_id, "report": None}]}
    study = physician.execute(REFERRER_STUDY, id=own.study_id)["study"]
    assert study == {
        "id": own.study_id,
        "report": None,
        "order": {"id": own.order_id},
        "patient": {"studies": [{"id": own.study_id}]},
    }
    assert rest.get(f"/api/reports/{draft}").status_code == 404
    assert physician.attempt(REFERRER_REPORT, id=draft).codes == ["NOT_FOUND"]

    # someone else's order, study and (signed) report: NOT_FOUND, as REST's 404
    assert physician.attempt(REFERRER_ORDER, id=other.order_id).codes == ["NOT_FOUND"]
    assert physician.attempt(REFERRER_STUDY, id=other.study_id).codes == ["NOT_FOUND"]
    assert physician.attempt(REFERRER_STUDY, id=stranger).codes == ["NOT_FOUND"]
    assert physician.attempt(REFERRER_REPORT, id=others_signed).codes == ["NOT_FOUND"]
    assert rest.get(f"/api/reports/{others_signed}").status_code == 404

    with api.db.unit_of_work() as session:
        submit(session, draft, author)
    with api.db.unit_of_work() as session:
        finalize(session, draft, reviewer)
    signed = {"id": draft, "status": "FINAL"}
    order = physician.execute(REFERRER_ORDER, id=own.order_id)["order"]
    assert order["studies"] == [{"id": own.study_id, "report": signed}]
    assert physician.execute(REFERRER_STUDY, id=own.study_id)["study"]["report"] == signed
    report = physician.execute(REFERRER_REPORT, id=draft)["report"]
    assert report == signed | {"study": {"id": own.study_id}}
    assert rest.get(f"/api/reports/{draft}").status_code == 200


# --------------------------------------------------------------------------- subscriptions

ITEM_CHANGES = """
subscription ($since: Int) { worklistChanges(since: $since) {
  seq action entityId worklistItem { id status assignedTo { username } }
} }
"""
REPORT_CHANGES = """
subscription ($since: Int) { reportChanges(since: $since) {
  seq action entityId report { id status study { id } }
} }
"""


def test_a_change_events_record_is_the_record_as_it_was_when_the_event_was_sent(
    graph: Graph, api: ApiServer
) -> None:
    reader = graph.client("radiologist")
    rest = api.anonymous()
    rest.headers["Authorization"] = f"Bearer {reader.token}"
    me = Principal(user_id(api, reader.username), reader.username, Role.RADIOLOGIST)
    pending = seed_study(api.db)
    mine = claimed_study(api.db, me)
    report_id = new_report(api.db, mine, me)
    start = latest(rest)

    async def test() -> list[dict[str, Any]]:
        async with reader.websocket() as session:
            items = events(session, ITEM_CHANGES, since=start)
            # each change waits for the event before the next: the event's
            # record is read when it is sent
            claim(rest, pending.item_id)
            claimed = await next_event(items)
            release(rest, pending.item_id)
            released = await next_event(items)
            await items.aclose()

            reports = events(session, REPORT_CHANGES, since=start)
            submitted = rest.post(f"/api/reports/{report_id}/submit")
            assert submitted.status_code == 200, submitted.text
            report = await next_event(reports)
            await reports.aclose()
        return [claimed, released, report]

    claimed, released, report = run(test)
    assert claimed["entityId"] == pending.item_id
    assert claimed["worklistItem"] == {
        "id": pending.item_id,
        "status": "CLAIMED",
        "assignedTo": {"username": reader.username},
    }
    assert released["seq"] > claimed["seq"]
    assert released["worklistItem"] == {
        "id": pending.item_id,
        "status": "PENDING",
        "assignedTo": None,
    }
    assert report["entityId"] == report_id
    assert report["report"] == {
        "id": report_id,
        "status": "IN_REVIEW",
        "study": {"id": mine.study_id},
    }


def test_a_referring_physicians_report_events_carry_only_the_signed_report(
    graph: Graph, api: ApiServer
) -> None:
    physician = graph.client("referring_physician")
    writer, signer = graph.client("radiologist"), graph.client("radiologist")
    author = Principal(user_id(api, writer.username), writer.username, Role.RADIOLOGIST)
    study = claimed_study(api.db, author, referring_physician_id=user_id(api, physician.username))
    report_id = new_report(api.db, study, author)
    sessions = {}
    for client in (writer, signer):
        sessions[client.username] = api.anonymous()
        sessions[client.username].headers["Authorization"] = f"Bearer {client.token}"
    start = latest(sessions[writer.username])

    async def test() -> dict[str, Any]:
        async with physician.websocket() as session:
            reports = events(session, REPORT_CHANGES, since=start)
            # the submit's event is not theirs (nothing signed): the first
            # they get is the signing's, its report as signed
            for client, step in ((writer, "submit"), (signer, "finalize")):
                done = sessions[client.username].post(f"/api/reports/{report_id}/{step}")
                assert done.status_code == 200, done.text
            event = await next_event(reports)
            await reports.aclose()
        return event

    event = run(test)
    assert event["entityId"] == report_id
    assert event["report"] == {"id": report_id, "status": "FINAL", "study": {"id": study.study_id}}


# --------------------------------------------------------------------------- a field refused alone

TECHNOLOGIST_PAGE = """
{ worklist(first: 10) { totalCount edges { node {
  id study { id } order { id } report { status }
} } } }
"""


def test_a_technologist_gets_forbidden_on_the_reports_and_the_rest_of_the_page(
    graph: Graph, api: ApiServer
) -> None:
    technologist = graph.client("technologist")
    holder = add_user(api.db, Role.RADIOLOGIST)
    studies = [claimed_study(api.db, holder) for _ in range(3)]
    for study in studies:
        new_report(api.db, study, holder)

    got = technologist.attempt(TECHNOLOGIST_PAGE)
    # one FORBIDDEN per report asked (no reports:read), at that field's path:
    # not a silent null, and not the whole page refused
    assert got.codes == ["FORBIDDEN"] * 3
    assert sorted(tuple(error["path"]) for error in got.errors) == [
        ("worklist", "edges", n, "node", "report") for n in range(3)
    ]
    assert got.data is not None
    page = got.data["worklist"]
    assert page["totalCount"] == 3
    assert sorted(
        (edge["node"]["id"], edge["node"]["study"]["id"], edge["node"]["order"]["id"])
        for edge in page["edges"]
    ) == sorted((s.reading_item_id, s.study_id, s.order_id) for s in studies)
    assert [edge["node"]["report"] for edge in page["edges"]] == [None] * 3
