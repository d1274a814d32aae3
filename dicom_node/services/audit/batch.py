"""Group commit of audit events that someone waits for (the C-FIND Query event).

Each C-FIND used to commit its 110112 Query event in a write transaction of
its own before answering (~1 ms of every query on SQLite, and one write
transaction per query when many peers query at once). An :class:`AuditWriter`
is one thread per process that commits every event waiting at that moment in
one transaction, chained in the order submitted (``record.py`` appends them
as consecutive links). The submitter goes on with its own work (building the
answers) and calls :meth:`AuditTicket.wait` before it answers anything: a
query is never answered without its committed audit row, and when the commit
fails, ``wait`` raises what the commit raised, as the synchronous write did.

A failed batch is retried one event per transaction, so one event the
database refuses fails its own query only. The thread ends after
``IDLE_SECONDS`` without events and starts again on the next one (a process
that never queries has none).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime

from dicom_node.db.engine import Database
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditRecord
from dicom_node.services.audit.record import record_audit_event

log = logging.getLogger("dicom_node.audit")

IDLE_SECONDS = 5.0
MAX_BATCH = 256  # events per transaction: bounds one transaction's size
# a query waits at most this long for its event (the database's own timeouts
# come first; this only catches a writer that can no longer run)
WAIT_SECONDS = 120.0


@dataclass
class AuditTicket:
    """One submitted event: ``wait()`` returns once it is committed."""

    record: AuditRecord
    timestamp: datetime
    _done: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float = WAIT_SECONDS) -> None:
        """Raise what the commit raised (TimeoutError if it never ended)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the audit event was not committed in time")
        if self._error is not None:
            raise self._error

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()


class AuditWriter:
    """The per-process writer of one database's waited-for audit events."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: queue.SimpleQueue[AuditTicket] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._waiting = 0  # submitted, not yet taken by the thread (under _lock)

    def submit(self, record: AuditRecord) -> AuditTicket:
        """Queue ``record`` for the next commit; the event's time is now."""
        ticket = AuditTicket(record, utcnow())
        with self._lock:
            self._queue.put(ticket)
            self._waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
        return ticket

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._waiting == 0:  # nothing can be in the queue: end
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                self._waiting -= len(batch)
            self._commit(batch)

    def _commit(self, batch: list[AuditTicket]) -> None:
        try:
            self._write(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0]._finish(exc)
                return
            log.warning("audit batch of %d events failed, writing them one by one", len(batch))
            for ticket in batch:
                self._commit([ticket])
            return
        for ticket in batch:
            ticket._finish(None)

    def _write(self, batch: list[AuditTicket]) -> None:
        # the Query event's durability, as before: committed without waiting for
        # the disk flush (a power cut may lose the last ones, a crash does not)
        with self._db.unit_of_work(wait_for_disk=False) as session:
            for ticket in batch:
                record_audit_event(session, ticket.record, timestamp=ticket.timestamp)
