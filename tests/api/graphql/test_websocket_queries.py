"""Queries over the WebSocket: one connection, many operations, each reading
the database afresh (the connection's context is shared; its loaders are not)."""

from __future__ import annotations

import asyncio

from gql import GraphQLRequest

from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.builders import seed_study

STUDY = "query ($id: Int!) { study(id: $id) { status } }"


def test_a_second_query_on_one_connection_sees_what_changed_in_between(
    graph: Graph, api: ApiServer
) -> None:
    seeded = seed_study(api.db)
    item_id = seeded.item_id
    watcher = graph.client("admin")
    radiologist = api.client("radiologist")

    async def run() -> list[dict[str, object]]:
        seen = []
        async with watcher.websocket() as session:
            # a study is read through the operation's study loader
            request = GraphQLRequest(STUDY, variable_values={"id": seeded.study_id})
            seen.append((await session.execute(request))["study"])
            claimed = await asyncio.to_thread(radiologist.post, f"/api/worklist/{item_id}/claim")
            assert claimed.status_code == 200, claimed.text
            seen.append((await session.execute(request))["study"])
        return seen

    before, after = asyncio.run(asyncio.wait_for(run(), timeout=60))
    # a claim starts the study's reading
    assert (before, after) == ({"status": "ACQUIRED"}, {"status": "READING"})
