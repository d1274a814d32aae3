"""Users, imaging centers and modalities (REST: /api/users, /api/imaging-centers,
/api/modalities), and ``me``: the caller."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry
from strawberry.types import Info

from api.graphql.context import GraphQLContext
from dicom_node.domain.permissions import Principal


@strawberry.type
class User:
    id: int
    username: str
    role: str
    display_name: str | None
    is_lead: bool

    @classmethod
    def of_principal(cls, principal: Principal) -> User:
        return cls(
            id=principal.user_id,
            username=principal.username,
            role=principal.role.value,
            display_name=principal.display_name,
            is_lead=principal.is_lead,
        )


async def _users(context: GraphQLContext, ids: Sequence[int]) -> Sequence[User | None]:
    raise NotImplementedError("admin area: users by id (one SELECT for all ids)")


async def user_by_id(context: GraphQLContext, user_id: int) -> User | None:
    """A user by id, batched per operation (None: no such user)."""
    return await context.loader(_users).load(user_id)


@strawberry.type
class Query:
    @strawberry.field(description="The caller: who the token signs in as.")
    def me(self, info: Info[GraphQLContext, None]) -> User:
        return User.of_principal(info.context.user)
