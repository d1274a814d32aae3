"""The reading worklist (REST: /api/worklist)."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from api.graphql.context import GraphQLContext


@strawberry.type
class WorklistItem:
    id: int


async def _items(context: GraphQLContext, ids: Sequence[int]) -> Sequence[WorklistItem | None]:
    raise NotImplementedError("worklist area: items by id")


async def worklist_item_by_id(context: GraphQLContext, item_id: int) -> WorklistItem | None:
    """A worklist item by id, batched per operation."""
    return await context.loader(_items).load(item_id)
