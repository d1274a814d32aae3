"""GraphQL through real clients: ``gql`` over HTTP (httpx) and over WebSocket
(graphql-transport-ws), against the API served by uvicorn (tests/api/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport
from gql.transport.websockets import WebsocketsTransport

from dicom_node.domain.permissions import Permission
from tests.api.conftest import ApiServer


@dataclass(frozen=True)
class PermissionCase:
    """One operation that needs ``permission`` (and no other permission the
    caller might lack), for the permission matrix (test_permission_matrix.py):
    every role the table grants it must not get FORBIDDEN, every other role
    must. Ids may name nothing: an allowed role may get NOT_FOUND or a
    CONFLICT, never FORBIDDEN. Each area lists its cases in
    ``cases_<area>.py`` as ``CASES``."""

    permission: Permission
    document: str
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What an operation got: its data, or its errors' codes and messages."""

    data: dict[str, Any] | None
    errors: list[dict[str, Any]]

    @property
    def codes(self) -> list[str]:
        return [str((error.get("extensions") or {}).get("code")) for error in self.errors]


class GraphClient:
    """A signed-in gql client over HTTP; ``username`` names its user."""

    def __init__(self, server: ApiServer, token: str, username: str) -> None:
        self.server = server
        self.token = token
        self.username = username
        self.client = Client(
            transport=HTTPXTransport(
                url=f"{server.base_url}/graphql",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ),
            fetch_schema_from_transport=False,
        )

    def execute(self, document: str, **variables: Any) -> dict[str, Any]:
        """The data; an error fails the test with its message."""
        request = GraphQLRequest(document, variable_values=variables)
        result: dict[str, Any] = self.client.execute(request)
        return result

    def attempt(self, document: str, **variables: Any) -> Outcome:
        """The data or the errors, for a test that expects a refusal."""
        try:
            return Outcome(self.execute(document, **variables), [])
        except TransportQueryError as exc:
            return Outcome(exc.data, list(exc.errors or []))

    def websocket(self) -> Client:
        """A gql client over graphql-transport-ws, signed in by ``connection_init``."""
        url = self.server.base_url.replace("http://", "ws://") + "/graphql"
        return Client(
            transport=WebsocketsTransport(
                url=url,
                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
                init_payload={"Authorization": f"Bearer {self.token}"},
            ),
            fetch_schema_from_transport=False,
        )


class Graph:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.clients: list[GraphClient] = []

    def client(self, role: str, **extra: Any) -> GraphClient:
        """A gql client for a new user of ``role`` (extra: create_user's fields)."""
        name = self.server.user(role, **extra)
        client = GraphClient(self.server, self.server.token(name), name)
        self.clients.append(client)
        return client


@pytest.fixture
def graph(api: ApiServer) -> Graph:
    return Graph(api)
