"""Following the change feed live: one read and one wait, shared by the two
live front ends, ``GET /api/events`` (Server-Sent Events, api/routes/changes.py)
and GraphQL subscriptions (api/graphql/subscriptions.py).

Each read goes to ``change_log`` itself (the feed every commit that changes an
order, study, worklist item or report writes in its own transaction), with the
caller's token checked again first, so a revoked or expired token ends a live
stream at its next read. Between reads a stream waits for the feed to move: on
PostgreSQL it is woken by the notification every such commit sends
(LISTEN/NOTIFY, ``dicom_node.db.notify``), whichever node or process made the
change, and reads every ``FALLBACK_POLL_SECONDS`` as a safety net; on SQLite,
or while the notification connection is down, it reads every ``POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass

from api.streams import StreamSlot
from dicom_node.db.engine import Database
from dicom_node.db.notify import ChangeListener
from dicom_node.domain.permissions import Principal
from dicom_node.services.access.auth import authenticate
from dicom_node.services.query.changes import (
    Change,
    feed_start,
    list_changes,
    missed_trimmed_changes,
)

# without notifications (SQLite, or the listener reconnecting)
POLL_SECONDS = 0.25
# with notifications: a safety net for a lost one, and the token re-check
FALLBACK_POLL_SECONDS = 3.0
# a burst of notifications (one per commit) is read in batches, not once each
MIN_READ_INTERVAL_SECONDS = 0.05
# entries read at once
BATCH = 200
# as for every id of the API: within what a JSON number holds exactly
MAX_SEQ = 2**53 - 1
ENTITIES = ("order", "study", "worklist_item", "report")


@dataclass(frozen=True)
class FeedRead:
    """One read of the feed for a live stream."""

    # the token's user as they are now (role, lead, key scopes)
    principal: Principal
    changes: list[Change]
    # where the feed now starts, when a trim took entries after the resume
    # point (the client reloads, then resumes from there; ``changes`` is moot)
    trimmed_to: int | None = None


def read_feed(
    db: Database, token: str, *, after: int, entities: Collection[str] | None
) -> FeedRead:
    """The entries after ``after`` (of ``entities``, or all) the token's user
    may see, at most BATCH; AuthenticationFailed once the token is revoked or
    expired. Blocking: call it on the thread pool."""
    with db.read() as session:
        principal = authenticate(session, token)
        changes = list_changes(
            session,
            principal=principal,
            since=after,
            limit=BATCH,
            entities=set(entities) if entities is not None else None,
        )
        # after the read, in its session: a trim committed meanwhile is seen here
        if after and missed_trimmed_changes(session, since=after):
            return FeedRead(principal, changes, trimmed_to=feed_start(session))
        return FeedRead(principal, changes)


async def wait_for_changes(
    slot: StreamSlot, listener: ChangeListener | None, *, mark: int, read_at: float
) -> None:
    """Until the feed may have moved since the read begun at ``read_at`` (the
    listener's ``mark`` taken just before it, so a notification during the read
    still wakes this wait), or the node stops (``slot``)."""
    if listener is not None and listener.connected.is_set():
        await slot.pause(listener.wait(mark, FALLBACK_POLL_SECONDS))
        rest = read_at + MIN_READ_INTERVAL_SECONDS - time.monotonic()
        if rest > 0:
            await slot.pause(asyncio.sleep(rest))
    else:
        await slot.pause(asyncio.sleep(POLL_SECONDS))
