"""``/graphql``: the GraphQL endpoint on the node's HTTP port.

- ``POST /graphql`` (``application/json``): queries and mutations. No GET
  (a query in a URL lands in proxies' and browsers' logs, and a GET is not
  CSRF-checked), no multipart uploads, no GraphiQL page (it loads its
  scripts from a CDN; the SDL is committed instead, api/graphql/schema.graphql).
- ``/graphql`` over WebSocket, sub-protocol ``graphql-transport-ws`` only:
  subscriptions (and queries). The token comes in ``connection_init``
  (context.py); without a valid one the connection is closed with 4403.
  A subscription sent over HTTP is refused (400): strawberry would run it as
  a query there (a null for every field, an internal error), or stream it
  with nothing re-checking the token while it lives.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from fastapi.concurrency import run_in_threadpool
from graphql import GraphQLError, OperationType, get_operation_ast
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from api.cache import FeedCache
from api.graphql.answers import CachedAnswer, answer_key, audit_listing
from api.graphql.context import GraphQLContext, http_context
from api.graphql.limits import parse_document
from api.graphql.schema import build_schema
from dicom_node.domain.errors import DomainError
from dicom_node.services.query.changes import latest_seq
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


def is_subscription(request: GraphQLRequestData, max_tokens: int) -> bool:
    """Whether the operation ``request`` runs is a subscription (False for a
    document that does not parse: the schema answers that one)."""
    if request.query is None:
        return False
    try:
        # the token limit of the schema (limits.py): no unbounded parse here
        # either; the schema's parse cache, so the document is parsed once
        document = parse_document(request.query, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operation = get_operation_ast(document, request.operation_name)
    return operation is not None and operation.operation == OperationType.SUBSCRIPTION


class NodeGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    max_tokens: int
    # worklist pages' answers (answers.py), as REST's worklist_cache
    answers: FeedCache[CachedAnswer]

    async def execute_operation(
        self,
        request: Any,
        request_adapter: Any,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: GraphQLContext,
        root_value: None,
        sub_response: Any,
    ) -> Any:
        """Over HTTP: a subscription is refused (400), before it runs."""
        requests = request_data if isinstance(request_data, list) else [request_data]
        if any(is_subscription(one, self.max_tokens) for one in requests):
            raise HTTPException(
                400, "subscriptions are served over WebSocket (graphql-transport-ws) only"
            )
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: GraphQLContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """A worklist page's answer, reused while the change feed has not
        moved (answers.py); any other operation as strawberry runs it."""
        key = answer_key(context, request_data, self.max_tokens)
        if key is None:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        # read before the page: a change committed meanwhile moves the feed
        # past it, and the next request computes the page again
        seq = await context.read(latest_seq)
        cached = self.answers.get(key, seq)
        if cached is not None:
            for listing in cached.listings:
                await audit_listing(context, listing)
            return cached.result
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        if not result.errors and context.trace.writes == 0:
            self.answers.put(key, seq, CachedAnswer(result, tuple(context.trace.listings)))
        return result

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
    router.max_tokens = settings.graphql_max_tokens
    router.answers = FeedCache[CachedAnswer](ttl=1.0)
    return router
