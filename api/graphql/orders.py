"""Orders (ImagingRequest) and reconciliation (REST: /api/orders, /api/reconciliation)."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from api.graphql.context import GraphQLContext


@strawberry.type
class ImagingRequest:
    id: int


async def _orders(context: GraphQLContext, ids: Sequence[int]) -> Sequence[ImagingRequest | None]:
    raise NotImplementedError("orders area: orders by id, within the caller's visibility")


async def order_by_id(context: GraphQLContext, order_id: int) -> ImagingRequest | None:
    """An order by id, batched per operation; None when there is none the
    caller may see (the visibility rule)."""
    return await context.loader(_orders).load(order_id)
