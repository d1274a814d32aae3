"""The document limits (tokens, aliases, depth, complexity), page sizes and the
public shape of an unexpected error.

The limits are checked on the node's own extensions (``limit_extensions`` and
``PublicErrors``, as ``build_schema`` installs them) over a small schema with
connections, executed by strawberry for real: the node's schema has no
connection in this branch's areas yet. The endpoint itself is tested over HTTP
for what its current fields can show."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import strawberry
from graphql import (
    FragmentDefinitionNode,
    OperationDefinitionNode,
    get_introspection_query,
    parse,
)

from api.graphql.errors import INTERNAL_MESSAGE, PublicErrors
from api.graphql.limits import estimate, limit_extensions
from api.graphql.relay import MAX_OFFSET, Connection, connection, cursor_of, page_window
from api.graphql.schema import NodeSchema
from dicom_node.domain.errors import InvalidValue
from dicom_node.settings import Settings
from tests.api.graphql.conftest import Graph

# what a resolver of the toy schema was asked for: stays empty for a refused document
calls: list[str] = []


@strawberry.type
class Leaf:
    name: str

    @strawberry.field
    def child(self) -> Leaf:
        calls.append("child")
        return Leaf(name=f"{self.name}.child")

    @strawberry.field
    def siblings(self) -> list[Leaf]:
        calls.append("siblings")
        return [Leaf(name=f"{self.name}.sibling")]

    @strawberry.field
    def children(self, first: int | None = None, after: str | None = None) -> Connection[Leaf]:
        calls.append("children")
        offset, limit = page_window(first, after)
        nodes = [Leaf(name=f"{self.name}.{i}") for i in range(offset, offset + min(limit, 3))]
        return connection(nodes, total=3, offset=offset)


@strawberry.type
class Query:
    @strawberry.field
    def leaves(self, first: int | None = None, after: str | None = None) -> Connection[Leaf]:
        calls.append("leaves")
        offset, limit = page_window(first, after)
        nodes = [Leaf(name=str(i)) for i in range(offset, offset + min(limit, 3))]
        return connection(nodes, total=3, offset=offset)

    @strawberry.field
    def broken(self) -> str:
        calls.append("broken")
        raise RuntimeError("secret detail 0xDEADBEEF from a row")


def toy(**limits: Any) -> strawberry.Schema:
    settings = Settings.model_validate(limits)
    return NodeSchema(query=Query, extensions=[*limit_extensions(settings), PublicErrors])


def outcome(schema: strawberry.Schema, document: str, **variables: Any) -> dict[str, Any]:
    calls.clear()
    result = asyncio.run(schema.execute(document, variable_values=variables))
    errors = [error.formatted for error in result.errors or []]
    return {
        "data": result.data,
        "errors": errors,
        "codes": [e["extensions"]["code"] for e in errors],
    }


PAGE = "leaves(first: $first) { totalCount edges { node { name } } }"


def test_the_estimate_counts_each_field_once_per_node_of_the_pages_above_it() -> None:
    schema = toy()._schema
    document = parse(
        "query($first: Int) { leaves(first: 10) { totalCount edges { node { name "
        "children(first: $first) { edges { node { ...Named } } } } } } }"
        " fragment Named on Leaf { name child { name } }"
    )
    operation, fragment = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    assert isinstance(fragment, FragmentDefinitionNode)
    fragments = {"Named": fragment}
    # leaves 1 + 10 x (totalCount 1 + edges 1 + node 1 + name 1 + children 1
    #   + first x (edges 1 + node 1 + name 1 + child 1 + its name 1))
    assert estimate(schema, operation, fragments, {"first": 7}) == 1 + 10 * (5 + 7 * 5)
    # a variable not given, or no first at all: the default page of 50
    assert estimate(schema, operation, fragments, {}) == 1 + 10 * (5 + 50 * 5)
    # a variable's default in the operation counts when the variable is not given
    defaulted = parse("query($first: Int = 400) { leaves(first: $first) { totalCount } }")
    operation = defaulted.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    assert estimate(schema, operation, {}, {}) == 1 + 400 * 1
    assert estimate(schema, operation, {}, {"first": 3}) == 1 + 3 * 1
    unpaged = parse("{ leaves { totalCount } }").definitions[0]
    assert isinstance(unpaged, OperationDefinitionNode)
    assert estimate(schema, unpaged, {}, {}) == 1 + 50 * 1


def test_a_plain_list_counts_as_ten_and_nests() -> None:
    """A list that is not a connection is unbounded too: nested (a patient's
    studies' patient's studies), counted as one it let a short document ask
    for a million records."""
    schema = toy()._schema
    nested = parse("{ leaves(first: 2) { edges { node { siblings { siblings { name } } } } } }")
    operation = nested.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    # leaves 1 + 2 x (edges 1 + node 1 + siblings (1 + 10 x (siblings 1 + 10 x name 1)))
    # (a connection's edges are its page: counted by first, not again as a list)
    assert estimate(schema, operation, {}, {}) == 1 + 2 * (2 + 1 + 10 * (1 + 10))
    refused = outcome(
        toy(graphql_max_complexity=200),
        "{ leaves(first: 2) { edges { node { siblings { siblings { name } } } } } }",
    )
    assert refused["codes"] == ["GRAPHQL_VALIDATION_FAILED"] and calls == []


def test_a_document_over_the_complexity_limit_is_refused_before_any_resolver_runs() -> None:
    schema = toy(graphql_max_complexity=1000)
    document = f"query($first: Int) {{ {PAGE} }}"
    allowed = outcome(schema, document, first=200)  # 1 + 200 x 4
    assert allowed["errors"] == [] and calls == ["leaves"]

    refused = outcome(schema, document, first=300)  # 1 + 300 x 4
    assert refused["codes"] == ["GRAPHQL_VALIDATION_FAILED"] and refused["data"] is None
    assert "1201" in refused["errors"][0]["message"]
    assert "at most 1000" in refused["errors"][0]["message"]
    assert calls == []


def test_depth_aliases_and_tokens_over_their_limits_are_refused_before_any_resolver_runs() -> None:
    schema = toy(graphql_max_depth=3, graphql_max_aliases=2, graphql_max_tokens=100)
    deep = outcome(schema, "{ leaves { edges { node { child { child { name } } } } } }")
    aliased = outcome(schema, "{ a: leaves { totalCount } b: leaves { totalCount } c: broken }")
    long = outcome(schema, "{ leaves { " + "totalCount " * 100 + "} }")
    for refused in (deep, aliased, long):
        assert refused["codes"] == ["GRAPHQL_VALIDATION_FAILED"], refused
        assert refused["data"] is None
    assert "exceeds maximum operation depth of 3" in deep["errors"][0]["message"]
    assert "3 aliases found. Allowed: 2" in aliased["errors"][0]["message"]
    assert "100 tokens" in long["errors"][0]["message"]
    assert calls == []


def test_a_page_over_500_is_bad_user_input() -> None:
    refused = outcome(toy(), f"query($first: Int) {{ {PAGE} }}", first=501)
    assert refused["codes"] == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["extensions"]["field"] == "first"
    assert "between 1 and 500" in refused["errors"][0]["message"]


def test_an_unexpected_error_says_internal_error_and_nothing_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed = outcome(toy(), "{ broken }")
    assert failed["codes"] == ["INTERNAL_SERVER_ERROR"]
    assert failed["errors"][0]["message"] == INTERNAL_MESSAGE
    assert "DEADBEEF" not in repr(failed) and "Traceback" not in repr(failed)
    # the node's log has it, for whoever runs the node
    assert any("DEADBEEF" in str(record.exc_info) for record in caplog.records)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_endpoint_refuses_too_many_aliases_and_tokens_and_introspects_signed_in(
    graph: Graph,
) -> None:
    client = graph.client("auditor")
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(31))
    assert client.attempt(f"{{ {aliases} }}").codes == ["GRAPHQL_VALIDATION_FAILED"]
    ids = " ".join(["id"] * 5000)
    assert client.attempt(f"{{ me {{ {ids} }} }}").codes == ["GRAPHQL_VALIDATION_FAILED"]

    schema = client.execute("{ __schema { queryType { name } subscriptionType { name } } }")
    assert schema["__schema"] == {
        "queryType": {"name": "Query"},
        "subscriptionType": {"name": "Subscription"},
    }
    me = client.execute('{ __type(name: "User") { fields { name } } }')
    assert {"name": "username"} in me["__type"]["fields"]
    # the full introspection query clients run (fetch_schema_from_transport) is
    # within every limit
    full = client.execute(get_introspection_query(descriptions=True))
    assert "ChangeEvent" in {type_["name"] for type_ in full["__schema"]["types"]}


def test_cached_verdicts_follow_the_schema_and_the_page_size_of_each_request() -> None:
    """Parse and validation are cached per document (limits.py DocumentChecks):
    the same text must still get each schema's verdict, and the complexity
    verdict of the page size this request sends."""
    strict = toy(graphql_max_complexity=1000, graphql_max_depth=3)
    loose = toy()
    document = f"query($first: Int = 300) {{ {PAGE} }}"
    deep = "{ leaves { edges { node { child { child { name } } } } } }"
    for _ in range(2):
        # the operation's default, 300: 1 + 300 x 4
        refused = outcome(strict, document)
        assert refused["codes"] == ["GRAPHQL_VALIDATION_FAILED"]
        assert "1201" in refused["errors"][0]["message"]
        assert outcome(strict, document, first=200)["errors"] == []
        # a null first is the default page (50)
        assert outcome(strict, document, first=None)["errors"] == []
        assert outcome(strict, document, first=300)["codes"] == ["GRAPHQL_VALIDATION_FAILED"]
        assert outcome(loose, document)["errors"] == []
        assert outcome(strict, deep)["codes"] == ["GRAPHQL_VALIDATION_FAILED"]
        assert outcome(loose, deep)["errors"] == []


def test_a_cursor_past_rest_s_largest_offset_is_bad_user_input() -> None:
    assert page_window(10, cursor_of(MAX_OFFSET - 2)) == (MAX_OFFSET - 1, 10)
    with pytest.raises(InvalidValue) as refused:
        page_window(10, cursor_of(MAX_OFFSET))
    assert refused.value.field == "after"
