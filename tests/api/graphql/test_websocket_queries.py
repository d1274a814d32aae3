"""Queries over the WebSocket: one connection, many operations, each reading
the database afresh (the connection's context is shared; its loaders are not)."""

from __future__ import annotations

import asyncio

import httpx
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError

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


def test_each_operation_on_a_connection_authenticates_again(graph: Graph, api: ApiServer) -> None:
    """A connection outlives what its token allowed: demoted, then signed out."""
    client = graph.client("admin")
    other_admin = api.client("admin")
    users = "{ users(first: 1) { totalCount } }"

    async def run() -> list[list[str]]:
        codes = []
        async with client.websocket() as session:
            for step in ("as signed in", "demoted", "signed out"):
                if step == "demoted":
                    own_id = (await session.execute(GraphQLRequest("{ me { id } }")))["me"]["id"]
                    demoted = await asyncio.to_thread(
                        other_admin.patch, f"/api/users/{own_id}", json={"role": "auditor"}
                    )
                    assert demoted.status_code == 200, demoted.text
                if step == "signed out":
                    out = await asyncio.to_thread(
                        httpx.post,
                        f"{api.base_url}/api/auth/logout",
                        headers={"Authorization": f"Bearer {client.token}"},
                    )
                    assert out.status_code in (200, 204), out.text
                try:
                    await session.execute(GraphQLRequest(users))
                    codes.append([])
                except TransportQueryError as refused:
                    codes.append(
                        [str((e.get("extensions") or {}).get("code")) for e in refused.errors or []]
                    )
        return codes

    assert asyncio.run(asyncio.wait_for(run(), timeout=60)) == [
        [],
        ["FORBIDDEN"],
        ["UNAUTHENTICATED"],
    ]
