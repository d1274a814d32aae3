"""Live changes over ``graphql-transport-ws``: the change feed of ``/api/changes``
and ``/api/events`` (SSE) as subscriptions.

Each event is one entry of ``change_log`` (the same rows, the same filter by
the caller's role and visibility: ``services/query/changes.py``), and its
``seq`` is the feed position: a client that reconnects passes the last ``seq``
it got as ``since`` and gets every change after it, none twice. Without
``since`` a subscription starts at the present.

Reading and waking up are the SSE stream's (api/feed.py): on PostgreSQL the
change notification (LISTEN/NOTIFY) with a fallback poll, on SQLite a poll.
Every read re-checks the connection's token, so a revoked or
expired token ends the subscription with ``UNAUTHENTICATED``; a ``since`` older
than the trimmed feed keeps ends it with ``GONE`` (``feedStart``: reload, then
resume from ``feedStart - 1``).

A user holds at most ``graphql_max_subscriptions_per_user`` subscriptions on
this node, over all their connections (each costs a feed read per poll on the
thread pool, as an SSE stream does): one more ends at once with
``TOO_MANY_REQUESTS``. The slot is given back when the subscription ends,
whether it completes, the client stops it or the socket drops (the server
cancels the operation, which runs the generator's ``finally``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, cast

import strawberry
from fastapi.concurrency import run_in_threadpool
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from api.feed import ENTITIES, MAX_SEQ, read_feed, wait_for_changes
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.orders import ImagingRequest, order_read_by_id
from api.graphql.reports import Report, report_by_id
from api.graphql.worklist import WorklistItem, worklist_item_read_by_id
from api.streams import StreamSlot, StreamSlots, TooManyStreams
from dicom_node.db.notify import listener_for
from dicom_node.domain.errors import Gone, InvalidValue
from dicom_node.domain.permissions import Permission
from dicom_node.services.query.changes import (
    Change,
    latest_seq,
)

# the slots object on app.state (api/app.py): one per process, as the SSE streams'
SLOTS_STATE = "graphql_subscriptions"


@strawberry.type(description="One entry of the change feed (as /api/changes lists it).")
class ChangeEvent:
    seq: int = strawberry.field(
        description="the feed position: pass the last one received as `since` to resume"
    )
    at: datetime
    entity: str = strawberry.field(description="order, study, worklist_item or report")
    entity_id: int
    action: str
    payload: JSON
    # what this event's record edge loads with: a context of its own, so each
    # event reads the record as it is when the event is sent (a connection's
    # context, and its loaders' cache, live as long as the connection), for the
    # caller as the token stood at the read
    scope: strawberry.Private[GraphQLContext]

    @strawberry.field(
        description="the changed worklist item (null for another entity, or gone)",
        extensions=[requires(Permission.WORKLIST_READ)],
    )
    async def worklist_item(self, info: Info[GraphQLContext, None]) -> WorklistItem | None:
        if self.entity != "worklist_item":
            return None
        # a record pushed on its own: audited as its REST detail read
        return await worklist_item_read_by_id(self.scope, self.entity_id)

    @strawberry.field(
        description="the changed report (null for another entity, or one the caller may not see)",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def report(self, info: Info[GraphQLContext, None]) -> Report | None:
        if self.entity != "report":
            return None
        return await report_by_id(self.scope, self.entity_id)

    @strawberry.field(
        description="the changed order (null for another entity, or one the caller may not see)",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def order(self, info: Info[GraphQLContext, None]) -> ImagingRequest | None:
        if self.entity != "order":
            return None
        return await order_read_by_id(self.scope, self.entity_id)

    @classmethod
    def of(cls, change: Change, scope: GraphQLContext) -> ChangeEvent:
        return cls(
            scope=scope,
            seq=change.seq,
            at=change.at,
            entity=change.entity,
            entity_id=change.entity_id,
            action=change.action,
            payload=cast(JSON, change.payload),
        )


def _start(since: int | None) -> int | None:
    if since is not None and not 0 <= since <= MAX_SEQ:
        raise InvalidValue(f"since must be between 0 and {MAX_SEQ}", field="since")
    return since


def _take_slot(context: GraphQLContext) -> StreamSlot:
    slots: StreamSlots = getattr(context.state, SLOTS_STATE)
    try:
        return slots.take(context.user.user_id)
    except TooManyStreams as refused:
        # in a subscription's words (TOO_MANY_REQUESTS, errors.py)
        raise TooManyStreams(
            f"{slots.per_user} subscriptions already open for this user "
            f"(at most {slots.per_user} on this node): stop one first",
            retry_after=refused.retry_after,
        ) from None


async def changes_of(
    context: GraphQLContext, since: int | None, entities: set[str]
) -> AsyncGenerator[ChangeEvent, None]:
    """The feed's entries of ``entities`` after ``since`` (or from now), live,
    until the token stops being valid, the feed was trimmed past the resume
    point, or the node stops."""
    token = context.token
    if token is None:
        # over HTTP nothing re-checks a token while the stream lives
        raise GraphQLError(
            "subscriptions are served over WebSocket (graphql-transport-ws) only",
            extensions={"code": "BAD_REQUEST"},
        )
    db = context.api.db

    def present() -> int:
        with db.read() as session:
            return latest_seq(session)

    slot = _take_slot(context)
    try:
        after = since if since is not None else await run_in_threadpool(present)
        listener = listener_for(db)
        while not slot.stopping:
            # taken before the read: a notification during the read still wakes us
            mark = listener.mark() if listener is not None else 0
            read_at = time.monotonic()
            # raises AuthenticationFailed (UNAUTHENTICATED) once revoked or expired
            read = await run_in_threadpool(read_feed, db, token, after=after, entities=entities)
            if read.trimmed_to is not None:
                raise Gone(
                    "changes after this point were trimmed: reload, then resume from feedStart - 1",
                    feed_start=read.trimmed_to,
                )
            for change in read.changes:
                after = change.seq
                scope = GraphQLContext(
                    api=context.api,
                    state=context.state,
                    address=context.address,
                    principal=read.principal,
                )
                yield ChangeEvent.of(change, scope)
            if read.changes:
                continue
            await wait_for_changes(slot, listener, mark=mark, read_at=read_at)
    finally:
        slot.release()


def _entities(entities: list[str] | None) -> set[str]:
    if not entities:
        return set(ENTITIES)
    unknown = sorted(set(entities) - set(ENTITIES))
    if unknown:
        raise InvalidValue(
            f"unknown entities {', '.join(unknown)} (known: {', '.join(ENTITIES)})",
            field="entities",
        )
    return set(entities)


Since = Annotated[
    int | None,
    strawberry.argument(
        description="the last seq already received; without it, changes from now on"
    ),
]


def _subscribe(
    info: Info[GraphQLContext, None], since: int | None, entities: set[str]
) -> AsyncGenerator[ChangeEvent, None]:
    # checked here, before the stream starts: a bad argument is the operation's
    # first (and only) error
    return changes_of(info.context, _start(since), entities)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Changes to the reading worklist.",
        extensions=[requires(Permission.CHANGES_READ), requires(Permission.WORKLIST_READ)],
    )
    async def worklist_changes(
        self,
        info: Info[GraphQLContext, None],
        since: Since = None,
    ) -> AsyncGenerator[ChangeEvent, None]:
        return _subscribe(info, since, {"worklist_item"})

    @strawberry.subscription(
        description="Changes to reports (a referring physician: final ones of their orders).",
        extensions=[requires(Permission.CHANGES_READ), requires(Permission.REPORTS_READ)],
    )
    async def report_changes(
        self,
        info: Info[GraphQLContext, None],
        since: Since = None,
    ) -> AsyncGenerator[ChangeEvent, None]:
        return _subscribe(info, since, {"report"})

    @strawberry.subscription(
        description="Changes to orders (a referring physician: their orders).",
        extensions=[requires(Permission.CHANGES_READ), requires(Permission.ORDERS_READ)],
    )
    async def order_changes(
        self,
        info: Info[GraphQLContext, None],
        since: Since = None,
    ) -> AsyncGenerator[ChangeEvent, None]:
        return _subscribe(info, since, {"order"})

    @strawberry.subscription(
        description="Every change the caller may see (as /api/events), optionally of "
        "some entities only: order, study, worklist_item, report.",
        extensions=[requires(Permission.CHANGES_READ)],
    )
    async def changes(
        self,
        info: Info[GraphQLContext, None],
        since: Since = None,
        entities: list[str] | None = None,
    ) -> AsyncGenerator[ChangeEvent, None]:
        return _subscribe(info, since, _entities(entities))
