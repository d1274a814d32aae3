"""Who a GraphQL operation acts for, and how its resolvers reach the database.

Over HTTP (``POST /graphql``) the caller is authenticated exactly as on REST
(``api.deps.bearer_token`` and ``current_principal``: a sign-in token or a
service account's API key as ``Authorization: Bearer``, or the browser's
session cookie with its CSRF token), before anything is parsed: an anonymous
request is answered 401 with the API's error shape, so the schema (and
introspection) is only for signed-in users.

Over WebSocket (``graphql-transport-ws``) the token travels in the
``connection_init`` payload (``{"Authorization": "Bearer <token>"}``); a
connection without a valid one is closed (4403). The session cookie is not
accepted there: a WebSocket handshake carries no CSRF token, and a page of
another site could open one with the cookie attached.

Resolvers are ``async``; the services are synchronous SQLAlchemy code, so every
database call goes through ``read``/``write`` here, which run it on the thread
pool (a blocking call on the event loop would stall every other request of the
process).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import State
from starlette.requests import HTTPConnection
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import BaseContext
from strawberry.types import Info

from api.deps import ApiContext, bearer_token, client_address, current_principal, oauth2_scheme
from dicom_node.domain.errors import AuthenticationFailed
from dicom_node.domain.permissions import Principal
from dicom_node.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Listing:
    """A listing's audit: the throttle's key and record_listing's arguments
    (principal, action, query, counts, address), without ``repeats``."""

    key: Hashable
    record: Mapping[str, Any]


@dataclass
class OperationTrace:
    """What one HTTP operation did that its answer's reuse depends on."""

    writes: int = 0
    listings: list[Listing] = field(default_factory=list)


class GraphQLContext(BaseContext):
    """One per HTTP request, or one per WebSocket connection."""

    def __init__(
        self, *, api: ApiContext, state: State, address: str | None, principal: Principal | None
    ) -> None:
        super().__init__()
        self.api = api
        # the application's state: the listing-audit throttle, the subscription
        # slots (objects shared with the REST routes, built in api/app.py)
        self.state = state
        self.address = address
        self._principal = principal
        # the token a WebSocket connection signed in with: re-checked while a
        # subscription lives, so a revoked or expired token ends it
        self.token: str | None = None
        self._loaders: dict[Callable[..., Any], DataLoader[Any, Any]] = {}
        # shared with the operation's copy (for_operation): read by the router
        # to decide whether the answer may be reused (answers.py)
        self.trace = OperationTrace()
        # why the caller is not (or no longer) signed in, for ``user`` to say
        self._refusal = "sign in first: send the token in connection_init"

    @property
    def settings(self) -> Settings:
        return self.api.settings

    @property
    def user(self) -> Principal:
        """The caller. Always set over HTTP; over WebSocket once
        ``connection_init`` carried a valid token (the router refuses any
        operation before that)."""
        if self._principal is None:
            raise AuthenticationFailed(self._refusal)
        return self._principal

    def sign_in(self, token: str) -> Principal:
        """Authenticate a WebSocket connection's token (blocking: call on a thread)."""
        principal = current_principal(self.api, token, self.address)
        self._principal = principal
        self.token = token
        return principal

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(session, ...)`` in a read-only session, on the thread pool."""

        def call() -> T:
            with self.api.db.read() as session:
                return fn(session, *args, **kwargs)

        return await run_in_threadpool(call)

    async def write(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(session, ...)`` in a unit of work that commits before this
        returns (so a mutation's answer is sent only once its change is
        durable, as on REST), on the thread pool."""

        def call() -> T:
            with self.api.db.unit_of_work() as session:
                return fn(session, *args, **kwargs)

        self.trace.writes += 1
        return await run_in_threadpool(call)

    async def for_operation(self) -> GraphQLContext:
        """This context (the caller, the connection) with no loaders yet.

        On a WebSocket the caller is authenticated again, from the token of
        ``connection_init``: a connection lives for hours, and a token revoked
        (signed out, the user deactivated or given another role, the API key
        revoked) must stop working on it as it does on HTTP at the next
        request, not when the socket closes."""
        fresh = copy.copy(self)
        fresh._loaders = {}
        if self.token is not None:
            try:
                fresh._principal = await run_in_threadpool(
                    current_principal, self.api, self.token, self.address
                )
            except AuthenticationFailed as exc:
                fresh._principal = None
                fresh._refusal = str(exc)
        return fresh

    def loader(
        self, batch: Callable[[GraphQLContext, Sequence[K]], Awaitable[Sequence[V]]]
    ) -> DataLoader[K, V]:
        """The operation's DataLoader for ``batch`` (made on first use): every
        ``load(key)`` of one execution step is answered by one call of
        ``batch(context, keys)``, which returns one value per key, in order.
        Per operation, so nothing is cached across requests (a change or a
        revoked visibility is seen by the next request)."""
        existing = self._loaders.get(batch)
        if existing is None:

            async def load(keys: list[K]) -> Sequence[V]:
                return await batch(self, keys)

            existing = DataLoader(load_fn=load)
            self._loaders[batch] = existing
        return existing


class OperationLoaders(SchemaExtension):
    """Each operation gets its own DataLoaders, and on a WebSocket its caller
    authenticated again (``for_operation``). Over HTTP a context is one
    request's anyway; over WebSocket one context serves the whole connection,
    and its loaders' caches would answer a later query (or a subscription's
    next event) with the record as the first operation read it."""

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, GraphQLContext):
            # read by strawberry after this hook has started
            self.execution_context.context = await context.for_operation()
        yield


def check_body_size(request: Request, limit: int) -> None:
    """Refuse a body over ``limit`` bytes before anything reads it (the token
    limit bounds the parser, but only once the JSON has been read whole): by
    its Content-Length, which uvicorn holds the client to. A POST without one
    (chunked) could be of any size: 411."""
    if request.method != "POST":
        return
    declared = request.headers.get("content-length")
    if declared is None:
        raise HTTPException(411, "send Content-Length with a GraphQL request")
    if not declared.isdigit() or int(declared) > limit:
        raise HTTPException(413, f"a GraphQL request is at most {limit} bytes")


def context_of(info: Info[GraphQLContext, Any]) -> GraphQLContext:
    """The operation's context (typed)."""
    return info.context


async def http_context(connection: HTTPConnection) -> GraphQLContext:
    """The context getter of the router (a FastAPI dependency, for both the
    HTTP endpoint and the WebSocket one)."""
    context: ApiContext = connection.app.state.context
    state: State = connection.app.state
    if connection.scope["type"] != "http":
        # WebSocket: authenticated by the connection_init payload (router.py)
        return GraphQLContext(
            api=context, state=state, address=client_address(connection), principal=None
        )
    assert isinstance(connection, Request)  # FastAPI passes the request itself
    request = connection
    check_body_size(request, context.settings.graphql_max_request_bytes)
    token = await bearer_token(request, await oauth2_scheme(request))
    address = client_address(request)
    principal = await run_in_threadpool(current_principal, context, token, address)
    return GraphQLContext(api=context, state=state, address=address, principal=principal)
