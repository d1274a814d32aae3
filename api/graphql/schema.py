"""The GraphQL schema: each area's root fields merged into one Query,
Mutation and Subscription type.

One module per area (as api/routes/ has one per REST area), each with its
types and, where it has them, a ``Query``, ``Mutation`` and ``Subscription``
class of root fields; this module only puts them together. Types of another
area are referred to through the functions that area exports (``order_by_id``,
``study_by_id``...), so each area keeps its own loads and its own visibility.

The printed schema (SDL) is committed as ``api/graphql/schema.graphql`` and a
test compares it with this one, so any change to the schema shows in review:
``python -m api.graphql.sdl`` writes it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from api.graphql import (
    admin,
    audit,
    orders,
    reconciliation,
    reports,
    studies,
    subscriptions,
    worklist,
)
from api.graphql.context import OperationLoaders
from api.graphql.errors import PublicErrors
from api.graphql.limits import limit_extensions
from dicom_node.settings import Settings

AREAS: tuple[ModuleType, ...] = (
    admin,
    orders,
    reconciliation,
    studies,
    worklist,
    reports,
    audit,
    subscriptions,
)


def _root(name: str) -> Any:
    parts = tuple(getattr(area, name) for area in AREAS if hasattr(area, name))
    return merge_types(name, parts) if parts else None


class NodeSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Nothing: an unexpected error is logged with its traceback where it
        is made public (errors.py); a refusal or a bad document is the
        caller's, answered to them, not a failure of the node."""


def build_schema(settings: Settings) -> strawberry.Schema:
    """The schema with the limits of ``settings``."""
    return NodeSchema(
        query=_root("Query"),
        mutation=_root("Mutation"),
        subscription=_root("Subscription"),
        extensions=[*limit_extensions(settings), PublicErrors, OperationLoaders],
    )
