"""The endpoint itself: authentication as on REST, one error shape, no GET."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from api.deps import CSRF_HEADER, SESSION_COOKIE, csrf_token_for
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_me_names_the_caller(graph: Graph) -> None:
    client = graph.client("radiologist", is_lead=True)
    data = client.execute("{ me { username role isLead } }")
    assert data["me"] == {"username": client.username, "role": "radiologist", "isLead": True}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_token_is_a_401_before_anything_is_parsed_introspection_too(api: ApiServer) -> None:
    response = api.anonymous().post("/graphql", json={"query": "{ __schema { types { name } } }"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_query_in_a_get_is_refused(graph: Graph, api: ApiServer) -> None:
    client = graph.client("admin")
    response = api.anonymous().get(
        "/graphql",
        params={"query": "{ me { username } }"},
        headers={"Authorization": f"Bearer {client.token}"},
    )
    assert response.status_code == 400
    assert client.username not in response.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_body_over_the_cap_is_413_and_one_of_unknown_length_411(
    graph: Graph, api: ApiServer
) -> None:
    client = graph.client("admin")
    headers = {"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"}
    padding = " " * api.settings.graphql_max_request_bytes
    big = api.anonymous().post(
        "/graphql", content='{"query": "{ me { username } }"' + padding + "}", headers=headers
    )
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ me { username } }"}'

    unknown = api.anonymous().post("/graphql", content=chunks(), headers=headers)
    assert unknown.status_code == 411
    assert unknown.json()["error"]["code"] == "length_required"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_session_cookie_needs_its_csrf_token_on_graphql_too(
    graph: Graph, api: ApiServer
) -> None:
    client = graph.client("radiologist")
    browser = api.anonymous()
    browser.cookies.set(SESSION_COOKIE, client.token)
    body = {"query": "{ me { username } }"}
    forged = browser.post("/graphql", json=body)
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]["message"]
    page = browser.post("/graphql", json=body, headers={CSRF_HEADER: csrf_token_for(client.token)})
    assert page.status_code == 200
    assert page.json()["data"]["me"]["username"] == client.username


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("payload", ["none", "wrong token", "cookie only"])
def test_a_websocket_without_a_valid_token_in_connection_init_is_closed_4403(
    graph: Graph, api: ApiServer, payload: str
) -> None:
    client = graph.client("radiologist")
    url = api.base_url.replace("http://", "ws://") + "/graphql"

    async def connect() -> int | None:
        headers = {"Cookie": f"{SESSION_COOKIE}={client.token}"} if payload == "cookie only" else {}
        init: dict[str, object] = {"type": "connection_init"}
        if payload == "wrong token":
            init["payload"] = {"Authorization": "Bearer not-a-token"}
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], additional_headers=headers
        ) as socket:
            await socket.send(json.dumps(init))
            try:
                await asyncio.wait_for(socket.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(connect()) == 4403


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_websocket_message_over_the_cap_closes_the_connection(make_node: Any) -> None:
    """Over WebSocket the cap is uvicorn's ws_max_size, set by node.py."""
    node = make_node(graphql_max_request_bytes=4096)
    url = f"ws://127.0.0.1:{node.http_port}/graphql"

    async def send_big() -> int | None:
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {"x": "y" * 8192}}))
            try:
                await asyncio.wait_for(socket.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(send_big()) == 1009  # message too big
