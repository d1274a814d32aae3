"""A cap on the live-event streams (``GET /api/events``) one user holds open.

Each open stream costs this process a read of the change feed every poll
(four a second on SQLite) in its thread pool: 200 idle streams on one token
took ``/api/me`` from 5 ms to a 720 ms median. A user may hold
``max_event_streams_per_user`` at once (a few browser tabs); one more is 429
with Retry-After in the error shape, before anything is streamed.

A slot is freed when its response ends, however it ends: the stream stopped
(token revoked), the client went away (the server notices the disconnect at
once and cancels the stream), or an error. The count is per process, which is
per node: the cost it bounds (this process's event loop, thread pool and
database connections) is per process too, and an in-memory count needs no
clean-up after a crash. Behind a load balancer over N nodes a user can hold N
times the cap in all, each node bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterable, Mapping

from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from dicom_node.log_limit import LogLimiter

log = logging.getLogger(__name__)
_refusals = LogLimiter(log)

# what a client refused a stream is told: one of its streams may have ended by then
RETRY_AFTER_SECONDS = 10


class StreamSlot:
    """One held stream; ``release`` is idempotent."""

    def __init__(self, owner: StreamSlots, user_id: int) -> None:
        self._owner = owner
        self._user_id = user_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner.give_back(self._user_id)


class StreamSlots:
    """How many streams each user holds open in this process."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}

    def take(self, user_id: int) -> StreamSlot:
        """A slot for one more stream, or 429 (HTTPException, in the error shape)."""
        with self._lock:
            held = self._held.get(user_id, 0)
            if held >= self.per_user:
                _refusals.warning(
                    user_id,
                    "live-event stream refused: user id %d holds %d (the limit)",
                    user_id,
                    held,
                )
                raise HTTPException(
                    status_code=429,
                    detail=(
                        f"{held} live-event streams already open for this user "
                        f"(at most {self.per_user}): close one first"
                    ),
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._held[user_id] = held + 1
        return StreamSlot(self, user_id)

    def give_back(self, user_id: int) -> None:
        with self._lock:
            left = self._held.get(user_id, 0) - 1
            if left > 0:
                self._held[user_id] = left
            else:
                self._held.pop(user_id, None)

    def held(self, user_id: int) -> int:
        with self._lock:
            return self._held.get(user_id, 0)


class SlotStreamingResponse(StreamingResponse):
    """A streaming response that gives its slot back when it ends, however."""

    def __init__(
        self,
        content: AsyncIterable[str],
        *,
        slot: StreamSlot,
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
