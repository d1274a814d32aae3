"""Change notifications between processes and nodes (PostgreSQL LISTEN/NOTIFY).

Every transaction that writes the change feed also runs
``pg_notify('dicom_node_changes', <highest seq>)`` (see ``changes.py``);
PostgreSQL delivers it at commit, to every session listening, on every node,
and never for a rolled-back transaction.

A ``ChangeListener`` is one thread per API process holding one psycopg
connection that LISTENs. Each notification bumps a generation counter and wakes
the asyncio tasks waiting on it (thread-safely, on their own loops). A waiter
takes ``mark()`` *before* it reads the feed and then ``wait(mark, timeout)``:
a notification that arrives between the read and the wait is not lost.

While the connection is down the listener retries with backoff and reports
``connected`` False, so that readers poll fast meanwhile; every (re)connect and
every loss wakes all waiters, since notifications of the gap are gone.
Notifications are hints: readers always read ``change_log`` itself.

SQLite has no notifications; its readers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from typing import Any

import psycopg
from psycopg import sql

from dicom_node.db.changes import NOTIFY_CHANNEL as CHANNEL
from dicom_node.db.engine import POSTGRES_CONNECT_ARGS, Database

log = logging.getLogger("dicom_node.db.notify")

# how often the thread looks up from waiting for notifications to check for stop
STOP_CHECK_SECONDS = 0.2
# how often an idle connection is checked
CHECK_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0

_listeners: weakref.WeakKeyDictionary[Database, ChangeListener] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def listener_for(db: Database) -> ChangeListener | None:
    """The running listener of ``db`` in this process, if any."""
    with _registry_lock:
        return _listeners.get(db)


def start_listener(db: Database, *, wait_seconds: float = 5.0) -> ChangeListener | None:
    """Start listening for ``db`` (PostgreSQL only) and make it ``listener_for(db)``.

    Waits up to ``wait_seconds`` for the first connection, so that a node starts
    with its streams woken by notifications; it keeps retrying after that.
    """
    if db.dialect != "postgresql":
        return None
    listener = ChangeListener(db)
    listener.start()
    with _registry_lock:
        _listeners[db] = listener
    if not listener.wait_connected(wait_seconds):
        log.warning("change notifications not available yet: live streams poll until they are")
    return listener


def stop_listener(db: Database) -> None:
    with _registry_lock:
        listener = _listeners.pop(db, None)
    if listener is not None:
        listener.stop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ChangeListener:
    def __init__(self, db: Database) -> None:
        engine = db.engine
        # the engine's own connection parameters (host, port, user, password, ssl...)
        _args, params = engine.dialect.create_connect_args(engine.url)
        self._params: dict[str, Any] = dict(params)
        # the engine's timeouts and keepalives too: a server gone without closing
        # the socket (a cut network, a hung host) shows within a minute, and a
        # connect attempt never outlives stop_listener's join
        for name, value in POSTGRES_CONNECT_ARGS.items():
            self._params.setdefault(name, value)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)
        self.connected = threading.Event()
        self.latest_seq = 0
        self.notifications = 0

    # ------------------------------------------------------------------ waiters

    def mark(self) -> int:
        """The current generation: pass it to ``wait`` after reading the feed."""
        with self._lock:
            return self._generation

    async def wait(self, mark: int, timeout: float) -> bool:
        """Until a notification newer than ``mark`` (True) or ``timeout`` (False)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._generation != mark:
                return True
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _wake(self) -> None:
        with self._lock:
            self._generation += 1
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            # a closed loop raises RuntimeError: nobody waits there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**self._params, autocommit=True) as connection:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self.connected.set()
                    self._wake()  # what committed while nobody listened: read it now
                    log.info("listening for change notifications (channel %s)", CHANNEL)
                    backoff = BACKOFF_FIRST_SECONDS
                    self._listen(connection)
            except Exception as exc:  # the thread must outlive any failure: retry
                if self._stopping.is_set():
                    break
                message = str(exc).strip().splitlines()
                log.warning(
                    "change notifications unavailable, retrying in %.1f s: %s",
                    backoff,
                    message[0] if message else type(exc).__name__,
                )
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self._wake()  # readers fall back to polling now
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        checked = time.monotonic()
        while not self._stopping.is_set():
            for notice in connection.notifies(timeout=STOP_CHECK_SECONDS):
                if notice.channel != CHANNEL:
                    continue
                self.notifications += 1
                if notice.payload.isdigit():
                    self.latest_seq = max(self.latest_seq, int(notice.payload))
                # wake now, not at the timeout: a burst is read as it comes
                self._wake()
            if time.monotonic() - checked > CHECK_SECONDS:
                # a server that went away without closing the socket shows here (or by
                # the keepalives)
                connection.execute("SELECT 1")
                checked = time.monotonic()
