"""A service account's API key on /graphql: as on REST, the role narrowed by
the key's scopes, over HTTP and WebSocket, audited as the service account."""

from __future__ import annotations

import asyncio

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportConnectionFailed
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import GraphClient


def _key(api: ApiServer, *scopes: str) -> str:
    admin = api.client("admin")
    account = admin.post("/api/service-accounts", json={"name": "portal", "role": "technologist"})
    assert account.status_code == 201, account.text
    issued = admin.post(
        f"/api/service-accounts/{account.json()['id']}/keys", json={"scopes": list(scopes)}
    )
    assert issued.status_code == 201, issued.text
    return str(issued.json()["key"])


def test_a_key_reads_what_its_scopes_allow_and_nothing_else(api: ApiServer) -> None:
    portal = GraphClient(api, _key(api, "read-images"), "portal")
    assert portal.execute("{ studies(first: 5) { totalCount } }")["studies"]["totalCount"] == 0
    # the role (technologist) may read orders; the key's scope does not
    refused = portal.attempt("{ orders(first: 5) { totalCount } }")
    assert refused.codes == ["FORBIDDEN"]
    assert "scopes" in refused.errors[0]["message"]
    with api.db.read() as session:
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "study_search")
        ).all()
    assert actors == ["portal"]


def test_a_key_signs_in_a_websocket_and_a_wrong_one_is_refused(api: ApiServer) -> None:
    key = _key(api, "read-images")
    url = api.base_url.replace("http://", "ws://") + "/graphql"

    async def ask(token: str) -> dict[str, object]:
        client = Client(
            transport=WebsocketsTransport(
                url=url,
                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
                init_payload={"Authorization": f"Bearer {token}"},
            )
        )
        async with client as session:
            result: dict[str, object] = await session.execute(
                GraphQLRequest("{ me { username role } }")
            )
            return result

    assert asyncio.run(asyncio.wait_for(ask(key), 30)) == {
        "me": {"username": "portal", "role": "technologist"}
    }
    # an unknown key: the server closes the socket at connection_init (4403)
    with pytest.raises(TransportConnectionFailed):
        asyncio.run(asyncio.wait_for(ask("dnk_" + "x" * 43), 30))
