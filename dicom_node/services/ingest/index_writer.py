"""Group commit: the instances of many associations indexed in one transaction.

Each association thread prepares its instance on its own (header read, digest,
temp file synced: instances.py) and hands it to its process's ``IndexWriter``,
then waits for its own answer. The writer (whichever waiting sender leads, see
``IndexWriter``) takes whatever is waiting, up to ``max_batch`` (no timer: a
lone sender's instance is committed at once), once it may write: on SQLite
only after the writers' lock of every process is its own (db/engine.py), so
what arrived while another worker process committed joins this batch. Then
it indexes them:

1. one transaction; each instance in a SAVEPOINT of its own: a value the
   database refuses (DataError, C000) or a constraint it breaks rolls back that
   instance only; a lost insert race is redone as a resend; two instances with
   the same SOP Instance UID behave as one sent after the other;
2. each new file renamed into place inside the transaction, after its rows;
3. one COMMIT (one WAL or PostgreSQL log flush for the batch);
4. each distinct directory synced once (the renames durable), and only then
   is any instance of the batch answered.

A failed COMMIT fails every instance of the batch that was not refused already
(A700, worth a retry) and removes the files it had placed, unless a committed
row points at one (PostgreSQL cannot always say whether a COMMIT whose
connection was lost went through: such a file is kept, an orphan is found by
verify, a missing file would be a lost image). A crash at any point leaves at
most unindexed files, never an acknowledged instance without its row or file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prometheus_client import Summary
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.dataset_header import InstanceHeader
from dicom_node.metrics import REGISTRY
from dicom_node.services.ingest.indexing import (
    Indexed,
    LostInsertRace,
    index_instance,
    needs_file,
)
from dicom_node.services.ingest.results import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    failure_reason,
    per_instance_log,
    result_for,
    short_error,
)
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.ingest")

DEFAULT_MAX_BATCH = 64
# the answer when a batch failed outside the database: built from nothing of
# the instance, so that it cannot fail too (logged where it failed)
_WRITER_FAILED = StoreResult(StoreOutcome.FAILED, "database unavailable")

# count: commits of the index writer; sum: instances they held (sum/count is the
# mean batch). Kept beside the writer it describes (see docs/ingest.md#group-commit).
INGEST_BATCH_INSTANCES = Summary(
    "dicom_node_ingest_batch_instances",
    "Instances per index writer commit (count: commits, sum: instances)",
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An instance ready to index: its header read, its file durable.

    ``temp``: the synced temp file to rename into place (None: the file is
    indexed where it lies, reindex); ``temp_inode`` tells our copy from one
    another receiver of the same instance renamed over the path meanwhile.
    """

    header: InstanceHeader
    digest: str
    size: int
    source: Source
    policy: IngestPolicy
    store: FileStore
    temp: Path | None
    temp_inode: int | None


@dataclass
class _Slot:
    """One instance's place in a batch: what the transaction did with it."""

    item: Prepared
    indexed: Indexed | None = None
    installed: Path | None = None
    refused: StoreResult | None = None  # answered on its own (its SAVEPOINT rolled back)
    # chosen as a PostgreSQL deadlock's victim: its SAVEPOINT rolled back, it is
    # committed again once this batch has committed (and released its locks)
    deferred: bool = False


def commit_batch(db: Database, items: Sequence[Prepared]) -> list[StoreResult]:
    """Index ``items`` in one transaction (module docstring); one result each,
    in order. The temp files are gone afterwards: renamed into place or removed."""
    return _commit(db, lambda: items)


def _commit(db: Database, take: Callable[[], Sequence[Prepared]]) -> list[StoreResult]:
    """``commit_batch`` of what ``take`` hands over once the transaction may write
    (called exactly once, also when the transaction cannot start)."""
    slots: list[_Slot] | None = None
    try:
        try:
            for attempt in (1, 2):
                try:
                    with db.unit_of_work() as session:
                        if slots is None:
                            slots = [_Slot(item) for item in take()]
                        if len(slots) == 1:
                            # alone, its transaction is its savepoint: a SAVEPOINT costs
                            # 0.3-0.7 ms of CPU, the most common batch is one instance
                            _index(session, slots[0])
                        else:
                            # in one order (by study): two batches of two processes
                            # lock the studies they share in the same order
                            for slot in sorted(slots, key=_study_uid):
                                _index_in_savepoint(db, session, slot)
                    break
                except LostInsertRace:
                    # (alone) another transaction committed it first: now a resend
                    if attempt == 2:
                        raise
        except Exception as exc:
            if slots is None:
                slots = [_Slot(item) for item in take()]
            if len(slots) == 1 and isinstance(exc, DataError):
                slots[0].refused = _cannot_be_indexed(slots[0].item, exc)
            return _batch_failed(db, slots, exc)
        assert slots is not None  # taken in the transaction that committed
        INGEST_BATCH_INSTANCES.observe(len(slots))
        results = _after_commit(db, slots)
        deferred = [i for i, slot in enumerate(slots) if slot.deferred]
        if deferred:
            # the deadlock's other party could go on once this batch committed
            again = _commit(db, lambda: [slots[i].item for i in deferred])
            for i, result in zip(deferred, again, strict=True):
                results[i] = result
        return [result for result in results if result is not None]
    finally:
        for slot in slots or ():
            if slot.installed is None and slot.item.temp is not None:
                slot.item.temp.unlink(missing_ok=True)


def _index(session: Session, slot: _Slot) -> None:
    """One instance's rows, then its file renamed into place."""
    item = slot.item
    slot.indexed = None
    slot.indexed = index_instance(
        session,
        item.header,
        item.digest,
        item.size,
        item.source,
        item.policy,
        installs=item.temp is not None,
    )
    session.flush()  # every row first: the rename is its last step
    if item.temp is not None and needs_file(slot.indexed, item.store):
        slot.installed = item.store.install(item.temp, slot.indexed.relative_path)


def _cannot_be_indexed(item: Prepared, exc: DataError) -> StoreResult:
    """A value the database refuses: resending cannot help (C000, not A700)."""
    per_instance_log.warning(
        (item.store.root, "cannot be indexed"),
        "instance refused: a value cannot be indexed: %s",
        short_error(exc),
    )
    return result_for(StoreOutcome.REJECTED, "a value cannot be indexed", item.header)


def _study_uid(slot: _Slot) -> str:
    return slot.item.header.study_instance_uid


def _deadlock(exc: OperationalError) -> bool:
    """PostgreSQL chose this statement as a deadlock's victim (SQLSTATE 40P01):
    two batches each hold a study (or patient, series) row the other needs."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"


def _index_in_savepoint(db: Database, session: Session, slot: _Slot) -> None:
    item = slot.item
    for attempt in (1, 2):
        try:
            with session.begin_nested():
                _index(session, slot)
            return
        except OperationalError as exc:
            if not _deadlock(exc) or slot.installed is not None:
                raise  # the batch fails as a whole (A700), as any database failure does
            # its SAVEPOINT rolled back (before its rename): the rest of the batch
            # goes on, and it is committed again once this batch has committed
            slot.indexed = None
            slot.deferred = True
            return
        except LostInsertRace:
            # another transaction committed the instance first: a resend now
            slot.indexed = None
            if attempt == 2:
                slot.refused = _failed(item, "database unavailable", "insert race lost twice")
        except (DataError, IntegrityError, OSError) as exc:
            _remove_uncommitted(db, slot)
            slot.indexed = None
            if isinstance(exc, DataError):
                slot.refused = _cannot_be_indexed(item, exc)
            else:
                slot.refused = _failed(item, failure_reason(exc), short_error(exc))
            return


def _remove_uncommitted(db: Database, slot: _Slot) -> None:
    """The rows that would have pointed at the renamed file were rolled back (its
    SAVEPOINT, or the whole transaction): remove the file, unless another
    receiver's copy lies there now or a committed row points at it."""
    installed = slot.installed
    slot.installed = None
    if (
        installed is not None
        and _still_ours(installed, slot.item.temp_inode)
        and not _row_points_at(db, installed, slot.item.store)
    ):
        installed.unlink(missing_ok=True)


def _batch_failed(db: Database, slots: list[_Slot], exc: Exception) -> list[StoreResult]:
    if not isinstance(exc, (SQLAlchemyError, OSError, LostInsertRace)):
        log.exception("index writer: unexpected error, batch of %d not stored", len(slots))
    results = []
    why = "database unavailable" if isinstance(exc, LostInsertRace) else failure_reason(exc)
    for slot in slots:
        _remove_uncommitted(db, slot)
        results.append(slot.refused or _failed(slot.item, why, short_error(exc)))
    return results


def _durable_path(slot: _Slot) -> Path | None:
    """The file whose directory entry must be durable before this slot's Success:
    the copy it renamed into place, or, for a duplicate, the copy already there
    (another process may have committed it and not yet synced its directory)."""
    if slot.installed is not None:
        return slot.installed
    indexed = slot.indexed
    if slot.refused is None and indexed is not None and indexed.outcome is StoreOutcome.DUPLICATE:
        return slot.item.store.absolute(indexed.relative_path)
    return None


def _after_commit(db: Database, slots: list[_Slot]) -> list[StoreResult | None]:
    """Each slot's answer (None for a deferred one), once its file is durable."""
    # one fsync per directory: a series' instances share one
    synced: dict[Path, OSError | None] = {}
    for slot in slots:
        path = _durable_path(slot)
        if path is None or path.parent in synced:
            continue
        try:
            slot.item.store.sync_directory(path)
            synced[path.parent] = None
        except OSError as exc:
            synced[path.parent] = exc
    results: list[StoreResult | None] = []
    for slot in slots:
        item, indexed = slot.item, slot.indexed
        if slot.deferred:
            results.append(None)
            continue
        if slot.refused is not None or indexed is None:
            assert slot.refused is not None
            results.append(slot.refused)
            continue
        path = _durable_path(slot)
        error = synced.get(path.parent) if path is not None else None
        if error is not None:
            # committed, but the rename may not survive a power cut: the sender
            # retries and the resend restores the file if it went missing
            results.append(_failed(item, failure_reason(error), short_error(error)))
            continue
        if (
            slot.installed is not None
            and indexed.old_path is not None
            and not _row_points_at(db, item.store.absolute(indexed.old_path), item.store)
        ):
            # only now that the new copy is committed, and only if no committed row
            # points at it: an instance replaced twice in one batch (or by another
            # process meanwhile) may have its old path as its final one again
            item.store.remove(indexed.old_path)
        if indexed.outcome in (StoreOutcome.KEPT_EXISTING, StoreOutcome.REPLACED):
            per_instance_log.warning(
                (item.store.root, "received again", item.source.calling_ae_title, indexed.outcome),
                "SOP instance received again with different content from %s: %s",
                item.source.calling_ae_title,
                indexed.outcome.value,
            )
        results.append(
            result_for(
                indexed.outcome, indexed.audit_reason, item.header, new_study=indexed.new_study
            )
        )
    return results


def _failed(item: Prepared, why: str, detail: str) -> StoreResult:
    per_instance_log.error(
        (item.store.root, "not stored", why), "instance not stored (%s): %s", why, detail
    )
    return result_for(StoreOutcome.FAILED, why, item.header)


def _still_ours(installed: Path, inode: int | None) -> bool:
    try:
        return inode is not None and installed.stat().st_ino == inode
    except OSError:
        return False


def _row_points_at(db: Database, installed: Path, store: FileStore) -> bool:
    """After a failed COMMIT: did it go through all the same? (A connection lost
    during COMMIT on PostgreSQL leaves that unknown.) A file an index row points
    at is never removed; if the database cannot say, the file is kept too: an
    orphan file is found by verify, a missing one would be a lost image."""
    relative = installed.relative_to(store.instances).as_posix()
    try:
        with db.read() as session:
            return (
                session.scalar(select(DicomInstance.id).where(DicomInstance.file_path == relative))
                is not None
            )
    except SQLAlchemyError:
        return True


@dataclass(eq=False)
class _Waiting:
    item: Prepared
    result: StoreResult | None = None


class IndexWriter:
    """The index writer of a process: one batch committed at a time.

    Leader and followers, as database group commits do: ``submit`` queues the
    instance; if no batch is being committed, the caller's own thread commits
    what is queued (a lone sender: just its own, with no hand-off to another
    thread), else it waits, and the batch being committed ends by waking the
    waiters, one of which commits the next batch. No writer thread exists, so
    none can die and leave a sender waiting: whatever a batch raises, its
    senders are answered and the next one leads.
    """

    def __init__(self, db: Database, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._db = db
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: deque[_Waiting] = deque()
        self._leading = False

    def submit(self, item: Prepared) -> StoreResult:
        """Index ``item`` with whatever else waits; its own result."""
        waiting = _Waiting(item)
        with self._cond:
            self._queue.append(waiting)
        while True:
            with self._cond:
                while waiting.result is None and self._leading:
                    self._cond.wait()
                if waiting.result is not None:
                    return waiting.result
                self._leading = True
            self._commit_next()  # may not reach ours (max_batch): then once more

    def _commit_next(self) -> None:
        batch: list[_Waiting] = []
        results: list[StoreResult] | None = None
        try:
            results = _commit(self._db, partial(self._take, batch))
        except Exception:
            log.exception("index writer: batch of %d not stored", len(batch))
        finally:
            # answered whatever happened: no sender waits for ever
            with self._cond:
                for i, waiting in enumerate(batch):
                    waiting.result = results[i] if results is not None else _WRITER_FAILED
                self._leading = False
                self._cond.notify_all()

    def _take(self, batch: list[_Waiting]) -> list[Prepared]:
        """Whatever waits now, up to max_batch: called once the batch may write."""
        with self._cond:
            count = min(self._max_batch, len(self._queue))
            batch.extend(self._queue.popleft() for _ in range(count))
        return [w.item for w in batch]

    def close(self, timeout: float = 60.0) -> None:
        """At shutdown: wait (bounded) for the batch being committed and what is
        queued behind it; their senders commit them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._leading or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("index writer still committing after %.0f s at shutdown", timeout)
                    return
                self._cond.wait(left)
