"""What a caller's mistake looks like: a coded error, never an internal one."""

from __future__ import annotations

import pytest

from tests.api.graphql.conftest import Graph

LIST = "query ($priority: Priority) { worklist(priority: $priority) { totalCount } }"
ITEM = "query ($id: Int!) { worklistItem(id: $id) { id } }"


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (LIST, {"priority": "NOT_A_PRIORITY"}),  # an enum name the schema does not have
        (ITEM, {"id": 2**40}),  # past GraphQL's 32-bit Int
    ],
)
def test_a_variable_its_type_refuses_is_bad_user_input(
    graph: Graph, document: str, variables: dict[str, object]
) -> None:
    outcome = graph.client("radiologist").attempt(document, **variables)
    assert outcome.data is None
    assert outcome.codes == ["BAD_USER_INPUT"]
    assert "internal" not in outcome.errors[0]["message"]


def test_an_unknown_field_is_a_validation_failure_naming_it(graph: Graph) -> None:
    outcome = graph.client("radiologist").attempt("{ worklist { nosuchfield } }")
    assert outcome.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "nosuchfield" in outcome.errors[0]["message"]
