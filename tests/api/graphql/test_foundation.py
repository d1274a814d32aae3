"""The endpoint itself: authentication as on REST, one error shape, no GET."""

from __future__ import annotations

import pytest

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
