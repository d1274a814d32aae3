"""Password hashing: argon2id, one hasher for the whole process.

The cost is a setting (``PASSWORD_HASH_*``). The default is argon2-cffi's
RFC 9106 low-memory profile (3 passes over 64 MiB, 4 lanes), about 0.1 s a
hash here: slow for an attacker with a stolen database, and paid once per
sign-in. The test suite lowers it, as Django's does, because it creates
hundreds of accounts; what it tests (argon2id, verification, re-hashing when
the cost changes) does not depend on the cost.
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_KIB = 65536
DEFAULT_PARALLELISM = 4

_lock = threading.Lock()
_hasher = PasswordHasher(
    time_cost=DEFAULT_TIME_COST, memory_cost=DEFAULT_MEMORY_KIB, parallelism=DEFAULT_PARALLELISM
)
_dummy: str | None = None


def configure(*, time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Set the cost of new hashes; existing ones are re-hashed at their next sign-in."""
    global _hasher, _dummy
    with _lock:
        _hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        _dummy = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def dummy_hash() -> str:
    """A hash of nothing, at the current cost: verified against for unknown users,
    so a sign-in costs the same whether the account exists or not."""
    global _dummy
    with _lock:
        if _dummy is None:
            _dummy = _hasher.hash("not-a-real-password-0")
        return _dummy
