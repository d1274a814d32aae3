"""What a record's edges show is audited as REST audits the record's detail,
whichever way it is reached: a study's series (study_viewed), a report's
critical findings (report_read), a subscription's pushed item or order
(worklist_item_read, order_read). Once per record and operation."""

from __future__ import annotations

import asyncio

from gql import GraphQLRequest
from sqlalchemy import func, select

from dicom_node.db.models import AuditEvent
from dicom_node.domain.enums import Role
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.builders import add_user, claimed_study, new_report, seed_study


def count(api: ApiServer, action: str) -> int:
    with api.db.read() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == action)) or 0)


def test_series_reached_from_a_search_are_a_study_view_each(graph: Graph, api: ApiServer) -> None:
    first, second = seed_study(api.db), seed_study(api.db)
    client = graph.client("technologist")
    client.execute("{ studies(first: 10) { edges { node { id } } } }")
    assert count(api, "study_viewed") == 0  # the search alone: its Query event
    client.execute("{ studies(first: 10) { edges { node { series { seriesInstanceUid } } } } }")
    assert count(api, "study_viewed") == 2
    # a study opened by id is one view, its series included
    client.execute("query ($id: Int!) { study(id: $id) { series { id } } }", id=first.study_id)
    assert count(api, "study_viewed") == 3
    assert second.study_id != first.study_id


def test_a_report_s_critical_findings_are_a_text_read(graph: Graph, api: ApiServer) -> None:
    author = add_user(api.db, Role.RADIOLOGIST)
    new_report(api.db, claimed_study(api.db, author), author)
    client = graph.client("auditor")
    client.execute("{ reports(first: 5) { edges { node { id status } } } }")
    before = count(api, "report_read")
    client.execute(
        "{ reports(first: 5) { edges { node { criticalCommunications { finding } } } } }"
    )
    assert count(api, "report_read") == before + 1


def test_a_pushed_worklist_item_is_audited_as_its_detail(graph: Graph, api: ApiServer) -> None:
    seeded = seed_study(api.db)
    watcher = graph.client("radiologist")
    rest = api.client("radiologist")
    since = int(rest.get("/api/changes", params={"limit": 1}).json()["latest"])
    document = (
        "subscription ($since: Int) { worklistChanges(since: $since) "
        "{ seq worklistItem { id patient { birthDate } } } }"
    )

    async def run() -> dict[str, object]:
        async with watcher.websocket() as session:
            stream = session.subscribe(GraphQLRequest(document, variable_values={"since": since}))
            claimed = await asyncio.to_thread(rest.post, f"/api/worklist/{seeded.item_id}/claim")
            assert claimed.status_code == 200
            result = await asyncio.wait_for(anext(stream), 20)
            await stream.aclose()
            return dict(result["worklistChanges"])

    before = count(api, "worklist_item_read")
    event = asyncio.run(asyncio.wait_for(run(), 60))
    assert event["worklistItem"] == {"id": seeded.item_id, "patient": {"birthDate": "19800101"}}
    assert count(api, "worklist_item_read") == before + 1
