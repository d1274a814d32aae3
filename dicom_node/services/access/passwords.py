"""Password hashing: argon2id, one hasher and one gate for the whole process.

The cost is a setting (``PASSWORD_HASH_*``). The default is argon2-cffi's
RFC 9106 low-memory profile (3 passes over 64 MiB, 4 lanes), about 0.1 s a
hash here: slow for an attacker with a stolen database, and paid once per
sign-in. The test suite lowers it, as Django's does, because it creates
hundreds of accounts; what it tests (argon2id, verification, re-hashing when
the cost changes) does not depend on the cost.

Every hash and every verification passes one gate (a semaphore): at most
``max_concurrent_password_hashes`` run at once, so the memory they take is
bounded (64 MiB each by default; sixteen concurrent bogus sign-ins used to take
the node to 1.3 GB). A caller waits up to ``password_hash_wait_seconds`` for a
turn, then gets ``PasswordHashingBusy`` (HTTP 503 with Retry-After). Waiters
are bounded too (``WAITERS_PER_SLOT`` per slot): each holds a thread of the
API's pool, and a flood of waiting sign-ins must not take every thread the
other routes need; beyond that bound the answer is busy at once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dicom_node.domain.errors import DomainError
from dicom_node.log_limit import LogLimiter

log = logging.getLogger(__name__)
# one line per window for a flood of refusals, with the count
_busy_log = LogLimiter(log)

DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_KIB = 65536
DEFAULT_PARALLELISM = 4
DEFAULT_MAX_CONCURRENT = 2
DEFAULT_WAIT_SECONDS = 10.0
# callers allowed to wait for a turn, per concurrent slot (the rest: busy at once)
WAITERS_PER_SLOT = 4


class PasswordHashingBusy(DomainError):
    """Every password-hashing slot stayed taken for the whole wait: try later."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class HashingLoad:
    """The gate's state: hashes running, callers waiting, the most ever running."""

    running: int
    waiting: int
    peak_running: int


class _Gate:
    """A counting semaphore with a bounded queue and a wait limit."""

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._peak = 0

    def load(self) -> HashingLoad:
        with self._lock:
            return HashingLoad(self._running, self._waiting, self._peak)

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._semaphore.acquire(blocking=False):
            with self._lock:
                queue_full = self._waiting >= self.slots * WAITERS_PER_SLOT
                if not queue_full:
                    self._waiting += 1
            if queue_full:
                raise self._busy()
            try:
                acquired = self._semaphore.acquire(timeout=self.wait_seconds)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise self._busy()
        with self._lock:
            self._running += 1
            self._peak = max(self._peak, self._running)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._semaphore.release()

    def _busy(self) -> PasswordHashingBusy:
        _busy_log.warning(
            "busy",
            "password hashing busy: a caller found all %d slots taken (waited up to %.1f s)",
            self.slots,
            self.wait_seconds,
        )
        return PasswordHashingBusy(
            "too many sign-ins at once: try again shortly",
            retry_after=max(1, math.ceil(self.wait_seconds)),
        )


_lock = threading.Lock()
_hasher = PasswordHasher(
    time_cost=DEFAULT_TIME_COST, memory_cost=DEFAULT_MEMORY_KIB, parallelism=DEFAULT_PARALLELISM
)
_gate = _Gate(DEFAULT_MAX_CONCURRENT, DEFAULT_WAIT_SECONDS)
_dummy: str | None = None


def configure(*, time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Set the cost of new hashes; existing ones are re-hashed at their next sign-in."""
    global _hasher, _dummy
    with _lock:
        _hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        _dummy = None


def configure_concurrency(*, max_concurrent: int, wait_seconds: float) -> None:
    """Set how many hashes run at once and how long a caller waits for a turn.

    Called at start-up, before any hashing; a hash running meanwhile finishes
    under the gate it started with."""
    global _gate
    with _lock:
        _gate = _Gate(max_concurrent, wait_seconds)


@contextmanager
def hashing_turn() -> Iterator[None]:
    """A turn at the gate every argon2 call here runs in (PasswordHashingBusy if
    none comes within the wait): for other memory-hungry password work."""
    with _gate.turn():
        yield


def hashing_load() -> HashingLoad:
    """How busy the gate is (for monitoring, and tests)."""
    return _gate.load()


def hash_password(password: str) -> str:
    hasher = _hasher
    with _gate.turn():
        return hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    hasher = _hasher
    with _gate.turn():
        try:
            return hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made at another cost (parses it: no hashing)."""
    return _hasher.check_needs_rehash(password_hash)


def dummy_hash() -> str:
    """A hash of nothing, at the current cost: verified against for unknown users,
    so a sign-in costs the same whether the account exists or not."""
    global _dummy
    with _lock:
        dummy, hasher = _dummy, _hasher
    if dummy is not None:
        return dummy
    # made outside _lock: waiting for a turn must not hold up configure()
    with _gate.turn():
        made = hasher.hash("not-a-real-password-0")
    with _lock:
        if _hasher is hasher and _dummy is None:
            _dummy = made
    return made
