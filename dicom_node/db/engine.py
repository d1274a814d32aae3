"""One engine per process, and the unit-of-work sessions built on it."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

# registers the change-feed hooks on every session of every process (see changes.py)
from dicom_node.db import changes as _changes  # noqa: F401

SQLITE_BUSY_TIMEOUT_MS = 30_000
# libpq waits for ever by default: a database host that vanished (powered off,
# black-holed by a firewall) would hang every C-STORE and C-FIND instead of
# answering 0xA700. Give up connecting after 10 s, and notice a dead peer on an
# open connection within ~30 s (keepalives; unacknowledged data after 30 s).
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # pre-ping: a restarted PostgreSQL must not hand stale connections to the SCP;
    # hide_parameters: a database error's message must not carry patient data
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        hide_parameters=True,
        connect_args=POSTGRES_CONNECT_ARGS,
    )


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit reported to a modality survives a power cut, WAL included.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # C-FIND matching is case-sensitive (PS3.4 C.2.2.2); SQLite's LIKE is not,
        # unless told. PN matches case-insensitively through its folded column.
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        # synchronous can only change outside a transaction: set per transaction,
        # remembered per connection so the usual FULL costs no extra statement
        wanted = "NORMAL" if options.get("no_flush_wait", False) else "FULL"
        if connection.info.get("synchronous", "FULL") != wanted:
            connection.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            connection.info["synchronous"] = wanted
        # Writers take the write lock up front so two writers queue on busy_timeout
        # instead of deadlocking on a read-to-write lock upgrade.
        immediate = options.get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _WriterQueue:
    """Queues SQLite writers of every process on one file lock, in the kernel.

    SQLite lets one writer in at a time and makes the others poll: its busy
    handler sleeps 1, 2, 5, 10... ms between tries, so with two DICOM worker
    processes a writer often slept well past the moment the lock came free
    (measured: an eighth of the C-STORE handler's time). A blocking ``flock``
    wakes the next writer as soon as the current one releases it; SQLite's own
    lock is then free when BEGIN IMMEDIATE asks. Threads of one process queue on
    a mutex first (flock is held per open file, not per thread). Readers never
    wait here (WAL).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._mutex = threading.Lock()
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._mutex:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o640)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._mutex:  # never under a writer that still holds it
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _writer_queue(url: str) -> _WriterQueue | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return _WriterQueue(f"{parsed.database}.writers")


class Database:
    """The engine and its two kinds of unit of work: read and write."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writers = _writer_queue(url)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        self._unflushed_writer = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True, no_flush_wait=True),
            expire_on_commit=False,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def unit_of_work(self, *, wait_for_disk: bool = True) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on error.

        ``wait_for_disk=False`` commits without waiting for the disk flush
        (PostgreSQL ``synchronous_commit = off`` for this transaction, SQLite
        ``synchronous = NORMAL``): a crash of the node loses nothing, a power
        cut or an OS crash may lose the last fraction of a second of such
        commits. Never for images, orders or reports; for records whose wait
        would sit in front of an answer (the Query audit before C-FIND matches).
        Later commits that wait for the disk flush these too, in order.
        """
        maker = self._writer if wait_for_disk else self._unflushed_writer
        queued = self._writers.held() if self._writers is not None else nullcontext()
        with queued, maker() as session, session.begin():
            if not wait_for_disk and self.dialect == "postgresql":
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()
