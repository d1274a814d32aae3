"""The change feed: paged (``/api/changes``) and live (``/api/events``, SSE).

Both read ``change_log`` (written in the same transaction as each change, also
for changes that came in over DICOM), filtered to what the caller's role may
see. The SSE stream uses the feed sequence number as the event id, so a client
that reconnects with ``Last-Event-ID`` (browsers do this by themselves) resumes
exactly after the last event it got.

The stream reads and waits as GraphQL subscriptions do (api/feed.py): woken
by the commit notification on PostgreSQL, polling on SQLite, the token checked
again at every read, so a revoked or expired token ends the stream (within the
fallback interval at most).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import Context, bearer_token, require
from api.feed import ENTITIES, MAX_SEQ, FeedRead, read_feed, wait_for_changes
from api.schemas.common import AUTH_ERRORS, ErrorResponse
from api.streams import SHUTDOWN_EVENT, SlotStreamingResponse, StreamSlot, StreamSlots
from dicom_node.db.notify import listener_for
from dicom_node.domain.errors import AuthenticationFailed, Gone
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.query.changes import (
    Change,
    feed_start,
    latest_seq,
    list_changes,
    missed_trimmed_changes,
)

router = APIRouter(prefix="/api", tags=["changes"])

HEARTBEAT_SECONDS = 15.0


class ChangePublic(BaseModel):
    seq: int
    at: datetime
    entity: str
    entity_id: int
    action: str
    payload: dict[str, Any]


class ChangePage(BaseModel):
    items: list[ChangePublic]
    # pass as ``since`` for the next page; equal to ``since`` when nothing is new
    next_since: int
    latest: int


def _public(change: Change) -> ChangePublic:
    return ChangePublic(
        seq=change.seq,
        at=change.at,
        entity=change.entity,
        entity_id=change.entity_id,
        action=change.action,
        payload=change.payload,
    )


def _entities(entity: list[str] | None) -> set[str] | None:
    return {name for name in entity if name in ENTITIES} or None if entity else None


TRIMMED: dict[int | str, dict[str, Any]] = {
    410: {
        "model": ErrorResponse,
        "description": "`since` is older than the trimmed feed keeps: reload, then "
        "resume from `feed_start - 1`",
    }
}


@router.get("/changes", response_model=ChangePage, responses={**AUTH_ERRORS, **TRIMMED})
def page_changes(
    context: Context,
    user: Annotated[Principal, Depends(require(Permission.CHANGES_READ))],
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the last seq already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    entity: Annotated[list[str] | None, Query(description="order, study, ...")] = None,
) -> ChangePage:
    """Changes after ``since`` that the caller may see, oldest first."""
    with context.db.read() as session:
        changes = list_changes(
            session, principal=user, since=since, limit=limit, entities=_entities(entity)
        )
        latest = latest_seq(session)
        # after the page: a trim committed meanwhile is seen here, not silently skipped
        if missed_trimmed_changes(session, since=since):
            raise Gone(
                "changes after this point were trimmed: reload, then resume",
                feed_start=feed_start(session),
            )
    return ChangePage(
        items=[_public(change) for change in changes],
        next_since=changes[-1].seq if changes else since,
        latest=latest,
    )


TOO_MANY_STREAMS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "the user holds as many open streams as allowed (Retry-After)",
    }
}


@router.get(
    "/events",
    responses={
        **AUTH_ERRORS,
        **TOO_MANY_STREAMS,
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    },
)
def stream_events(
    request: Request,
    context: Context,
    user: Annotated[Principal, Depends(require(Permission.CHANGES_READ))],
    token: Annotated[str, Depends(bearer_token)],
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ)] = None,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="start after this seq")
    ] = None,
    entity: Annotated[list[str] | None, Query()] = None,
) -> SlotStreamingResponse:
    """Live changes as Server-Sent Events; ``id`` is the feed seq (resume with
    ``Last-Event-ID``). Without either, the stream starts at the present. A
    resume point older than the trimmed feed keeps first gets ``event: reset``
    (reload your state), then everything still in the feed. A user holds at most
    ``max_event_streams_per_user`` streams at once (per node): one more is 429.
    When the node stops, each open stream gets ``event: shutdown`` (reconnect
    later) and ends."""
    wanted = _entities(entity)
    start = last_event_id if last_event_id is not None else since

    def poll(after: int) -> FeedRead | None:
        """The next read; None once the token is no longer valid."""
        try:
            return read_feed(context.db, token, after=after, entities=wanted)
        except AuthenticationFailed:
            return None

    def current() -> int:
        with context.db.read() as session:
            return latest_seq(session)

    listener = listener_for(context.db)

    async def events(slot: StreamSlot) -> AsyncIterator[str]:
        after = start if start is not None else await run_in_threadpool(current)
        woken = listener is not None and listener.connected.is_set()
        mode = "woken by notifications" if woken else "polling"
        yield f"retry: 2000\n: stream for {user.username} after {after}, {mode}\n\n"
        last_sent = time.monotonic()
        while True:
            if slot.stopping:
                yield SHUTDOWN_EVENT
                return
            # taken before the read: a notification during the read still wakes us
            mark = listener.mark() if listener is not None else 0
            read_at = time.monotonic()
            read = await run_in_threadpool(poll, after)
            if read is None:
                yield 'event: end\ndata: {"reason": "token expired or revoked"}\n\n'
                return
            if read.trimmed_to is not None:
                # changes after ``after`` were trimmed: the client reloads; the rest
                # follows. The id moves the browser's Last-Event-ID past the gap.
                after = read.trimmed_to - 1
                yield f'id: {after}\nevent: reset\ndata: {{"feed_start": {read.trimmed_to}}}\n\n'
                continue
            changes = read.changes
            for change in changes:
                after = change.seq
                data = _public(change).model_dump_json()
                yield f"id: {change.seq}\nevent: {change.entity}.{change.action}\ndata: {data}\n\n"
            if changes:
                last_sent = time.monotonic()
                continue
            await wait_for_changes(slot, listener, mark=mark, read_at=read_at)
            if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                last_sent = time.monotonic()
                yield ": heartbeat\n\n"

    slots: StreamSlots = request.app.state.event_streams
    # taken last: nothing between here and the response can fail and keep it
    slot = slots.take(user.user_id)
    return SlotStreamingResponse(
        events(slot),
        slot=slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
