"""``/graphql``: the GraphQL endpoint on the node's HTTP port.

- ``POST /graphql`` (``application/json``): queries and mutations. No GET
  (a query in a URL lands in proxies' and browsers' logs, and a GET is not
  CSRF-checked), no multipart uploads, no GraphiQL page (it loads its
  scripts from a CDN; the SDL is committed instead, api/graphql/schema.graphql).
- ``/graphql`` over WebSocket, sub-protocol ``graphql-transport-ws`` only:
  subscriptions (and queries). The token comes in ``connection_init``
  (context.py); without a valid one the connection is closed with 4403.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.concurrency import run_in_threadpool
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from api.graphql.context import GraphQLContext, http_context
from api.graphql.schema import build_schema
from dicom_node.domain.errors import DomainError
from dicom_node.settings import Settings

PATH = "/graphql"


def token_of(params: object) -> str | None:
    """The bearer token of a ``connection_init`` payload:
    ``{"Authorization": "Bearer <token>"}`` (the header's spelling, as most
    clients send it; any case of the key)."""
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class NodeGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        token = token_of(context.connection_params)
        if token is None:
            raise ConnectionRejectionError({"message": "send Authorization: Bearer <token>"})
        try:
            principal = await run_in_threadpool(context.sign_in, token)
        except DomainError as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from None
        return {"user": principal.username}


def graphql_router(settings: Settings) -> NodeGraphQLRouter:
    router: NodeGraphQLRouter = NodeGraphQLRouter(
        build_schema(settings),
        path=PATH,
        graphql_ide=None,
        allow_queries_via_get=False,
        context_getter=http_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        # a client that opens a socket and never says who it is holds it for
        # no longer than this
        connection_init_wait_timeout=timedelta(seconds=10),
        max_subscriptions_per_connection=settings.graphql_max_subscriptions_per_user,
        multipart_uploads_enabled=False,
        include_in_schema=False,
    )
    return router
