"""Live-event streams (``GET /api/events``): a cap per user, and their end at shutdown.

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

When the node stops, ``Node.stop`` calls ``end_all`` before it stops the HTTP
server: every open stream wakes from its wait, sends ``SHUTDOWN_EVENT`` (with a
longer reconnect delay, the time a restart takes) and ends, and ``end_all``
waits until they have. Left to the HTTP server, a stream never ends by itself:
uvicorn cancelled each one after its graceful-shutdown timeout, logging an
ERROR with a traceback per stream, and the clients saw the connection cut.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterable, Coroutine, Mapping
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from dicom_node.domain.errors import DomainError
from dicom_node.log_limit import LogLimiter

log = logging.getLogger(__name__)
_refusals = LogLimiter(log)

# what a client refused a stream is told: one of its streams may have ended by then
RETRY_AFTER_SECONDS = 10

# the last event of every stream open when the node stops: a client reconnects
# after ``retry`` ms (to this node restarted, or another behind the same address)
# and resumes with Last-Event-ID as after any reconnect
SHUTDOWN_EVENT = 'retry: 5000\nevent: shutdown\ndata: {"reason": "the node is stopping"}\n\n'

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


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

    @property
    def stopping(self) -> bool:
        """The node is stopping: the stream sends ``SHUTDOWN_EVENT`` and ends."""
        return self._owner.stopping

    async def pause(self, waiting: Coroutine[Any, Any, object]) -> None:
        """Await ``waiting`` (the stream's wait before its next read), cut short
        when the node starts stopping."""
        await self._owner.pause(waiting)


class TooManyStreams(DomainError):
    """A user holds as many live streams as they may; ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamSlots:
    """How many streams each user holds open in this process."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._lock = threading.Lock()
        # notified whenever a stream ends: end_all waits on it
        self._ended = threading.Condition(self._lock)
        self._held: dict[int, int] = {}
        self._stopping = False
        # the streams in a pause, each woken on its own event loop by end_all
        self._pausing: set[_Waiter] = set()

    def take(self, user_id: int) -> StreamSlot:
        """A slot for one more stream, or TooManyStreams (REST: 429 with
        Retry-After, api/errors.py; GraphQL: TOO_MANY_REQUESTS)."""
        with self._lock:
            held = self._held.get(user_id, 0)
            if held >= self.per_user:
                _refusals.warning(
                    user_id,
                    "live-event stream refused: user id %d holds %d (the limit)",
                    user_id,
                    held,
                )
                raise TooManyStreams(
                    f"{held} live-event streams already open for this user "
                    f"(at most {self.per_user}): close one first",
                    retry_after=RETRY_AFTER_SECONDS,
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
            self._ended.notify_all()

    def held(self, user_id: int) -> int:
        with self._lock:
            return self._held.get(user_id, 0)

    @property
    def stopping(self) -> bool:
        with self._lock:
            return self._stopping

    async def pause(self, waiting: Coroutine[Any, Any, object]) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        waiter = (loop, woken)
        with self._lock:
            if self._stopping:
                waiting.close()  # never started: no "never awaited" warning
                return
            self._pausing.add(waiter)
        task = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((task, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            with self._lock:
                self._pausing.discard(waiter)

    def end_all(self, timeout: float) -> int:
        """Make every open stream (and any opened from now on) send
        ``SHUTDOWN_EVENT`` and end; wait up to ``timeout`` seconds for them to
        have ended. Thread-safe. Returns how many are still open."""
        with self._lock:
            self._stopping = True
            pausing, self._pausing = self._pausing, set()
            open_streams = sum(self._held.values())
        if open_streams:
            log.info("ending %d live-event stream(s): the node is stopping", open_streams)
        for loop, woken in pausing:
            # a closed loop raises RuntimeError: nothing waits there any more
            try:
                loop.call_soon_threadsafe(_wake, woken)
            except RuntimeError:
                continue
        with self._lock:
            self._ended.wait_for(lambda: not self._held, timeout)
            left = sum(self._held.values())
        if left:
            log.warning("%d live-event stream(s) still open after %.0f s", left, timeout)
        return left


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
