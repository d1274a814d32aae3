"""A short-lived cache of serialized answers, invalidated by the change feed.

The reading worklist is polled by every workstation: 64 readers asking every
second for the same first page would otherwise each pay for the same queries
and the same JSON. An entry is reused only while the change feed has not moved
(any claim, release, new work item or report change moves it, in the same
transaction, so a reader always sees their own claim at once) and for at most
``ttl`` seconds (what the feed does not cover, e.g. a due time passing or an
instance count growing, is at most that stale).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class FeedCache(Generic[V]):
    """Answers (REST: serialized pages; GraphQL: execution results) by key."""

    def __init__(self, *, ttl: float = 1.0, size: int = 256) -> None:
        self._ttl = ttl
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[int, float, V]] = OrderedDict()

    def get(self, key: Hashable, seq: int) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            cached_seq, stored, body = entry
            if cached_seq != seq or time.monotonic() - stored > self._ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return body

    def put(self, key: Hashable, seq: int, body: V) -> None:
        with self._lock:
            self._entries[key] = (seq, time.monotonic(), body)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
