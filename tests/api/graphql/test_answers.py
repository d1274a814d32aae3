"""A polled worklist page is answered from the feed-invalidated cache, as
REST's page is, without ever hiding a change or skipping an audit event."""

from __future__ import annotations

from sqlalchemy import func, select

from dicom_node.db.models import AuditEvent
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.api.graphql.test_orders import statements
from tests.builders import seed_study

PAGE = """{ worklist(first: 10) { totalCount edges { node {
  id status assignedToUsername study { studyInstanceUid patientName } order { accessionNumber }
} } } }"""


def events(api: ApiServer, action: str) -> int:
    with api.db.read() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == action)) or 0)


def test_a_repeated_page_is_reused_until_the_feed_moves(graph: Graph, api: ApiServer) -> None:
    seeded = [seed_study(api.db) for _ in range(3)]
    reader = graph.client("radiologist")
    first = reader.execute(PAGE)  # writes the listing's event: not kept
    second = reader.execute(PAGE)  # nothing written: kept
    with statements(api) as seen:
        third = reader.execute(PAGE)
    assert first == second == third
    # the caller's token and the feed position; no listing, no loads
    work = [s for s in seen if not s.startswith("BEGIN")]
    assert len(work) == 2, work
    assert events(api, "worklist_queried") == 1

    # a claim moves the feed: the next poll shows it at once
    claimed = api.client("radiologist")
    assert claimed.post(f"/api/worklist/{seeded[0].item_id}/claim").status_code == 200
    after = reader.execute(PAGE)["worklist"]["edges"]
    mine = next(e["node"] for e in after if e["node"]["id"] == seeded[0].item_id)
    assert mine["status"] == "CLAIMED"
    assert mine["assignedToUsername"] == claimed.username  # type: ignore[attr-defined]


def test_each_caller_has_their_own_answer_and_their_own_audit_event(
    graph: Graph, api: ApiServer
) -> None:
    seed_study(api.db)
    one, other = graph.client("radiologist"), graph.client("technologist")
    one.execute(PAGE)
    one.execute(PAGE)
    other.execute(PAGE)  # not the first caller's kept answer: computed, audited
    with api.db.read() as session:
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "worklist_queried")
        ).all()
    assert sorted(actors) == sorted([one.username, other.username])


def test_a_page_that_audits_what_it_shows_is_computed_every_time(
    graph: Graph, api: ApiServer
) -> None:
    seeded = seed_study(api.db)
    reader = graph.client("radiologist")
    document = "{ worklist(first: 5) { edges { node { id study { series { id } } } } } }"
    for _ in range(3):
        reader.execute(document)
    # each poll showed the study's series: a study view each time, none skipped
    assert events(api, "study_viewed") == 3
    assert seeded.study_id
