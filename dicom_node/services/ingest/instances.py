"""Storing one instance: the single path behind C-STORE, `dicom-node import` and reindex.

Order of work, chosen so that nothing acknowledged is ever lost and nothing
half-written is ever indexed:

1. read the header (no pixel decoding; a file is memory-mapped, not read whole)
   and refuse what cannot be indexed or is over ``max_dataset_bytes``, as stored
   or once a Deflated data set is inflated (bounded: domain/inflate.py);
2. write the bytes to a temp file in the store (fsync); a C-STORE's data set is
   in one already, written as it arrived (scp/dataset_limit.py), and only synced.
   Steps 1 and 2 run on the caller's thread, in parallel with other senders;
3. hand the instance to the index writer (index_writer.py), which indexes it
   with whatever else is waiting, in one database transaction: per instance
   (in a SAVEPOINT) upsert patient, study, series; insert the instance; bump
   counters; match a new study to its order (indexing.py);
4. rename each temp file into its final place, *then* commit, then sync the
   directories, and only then answer. A crash before the commit leaves at most
   unindexed files (found by verify/reindex, never acknowledged); a failed
   commit removes the files it had just placed.

Without a writer (import, reindex, tests) the same ``commit_batch`` runs on the
caller's thread as a batch of one: one ingest path, not two.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dicom_node.db.engine import Database
from dicom_node.domain.dataset_header import InvalidHeader, read_header
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.domain.part10 import dataset_offset
from dicom_node.domain.part10_source import Part10Source, open_part10
from dicom_node.metrics import observe_ingest_stage
from dicom_node.services.ingest.index_writer import IndexWriter, Prepared, commit_batch
from dicom_node.services.ingest.indexing import relative_path
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

__all__ = [
    "IngestPolicy",
    "Source",
    "StoreOutcome",
    "StoreResult",
    "failed_to_write",
    "refused_too_large",
    "store_instance",
]


def store_instance(
    db: Database,
    store: FileStore,
    *,
    part10: bytes | Path,
    source: Source,
    policy: IngestPolicy,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
    stored_at: Path | None = None,
    received: bool = False,
    writer: IndexWriter | None = None,
) -> StoreResult:
    """Store and index one DICOM Part 10 file, given as bytes or as a file.

    ``expected_*`` are the C-STORE command's Affected SOP Class/Instance UIDs: a
    dataset that contradicts its command is refused (status A900). Files read
    from disk have no command; their often sloppy file meta is not held against them.
    ``stored_at``: where the bytes already lie in the store (reindex); a file at
    its own UID path is indexed where it is instead of being copied over itself.
    ``received``: ``part10`` is a temp file in the store's tmp/ written for this
    call (a C-STORE's data set as it arrived): it is synced and renamed into
    place, or removed, never copied.
    ``writer``: the process's index writer (group commit); None commits this
    instance alone, on this thread.
    """
    try:
        with open_part10(part10) as data:
            prepared = _prepare(
                store,
                data,
                source=source,
                policy=policy,
                expected_sop_class_uid=expected_sop_class_uid,
                expected_sop_instance_uid=expected_sop_instance_uid,
                stored_at=stored_at,
                received=received,
            )
            if isinstance(prepared, StoreResult):
                return prepared
            started = time.perf_counter()
            result = (
                writer.submit(prepared) if writer is not None else commit_batch(db, [prepared])[0]
            )
            observe_ingest_stage("index", time.perf_counter() - started)
            return result
    except OSError as exc:  # the file to store cannot be opened or mapped
        return failed_to_write(store, source, exc, "cannot read the file")
    finally:
        if received and isinstance(part10, Path):
            part10.unlink(missing_ok=True)  # refused or failed (a stored one was renamed)


def refused_too_large(store: FileStore, source: Source, exc: DatasetTooLarge) -> StoreResult:
    """The answer to a data set over max_dataset_bytes (as sent, or inflated),
    with its one log line; nothing of it was kept."""
    received = f": {exc.size} bytes" if exc.size is not None else ""
    per_instance_log.warning(
        (store.root, "too large", source.calling_ae_title, exc.inflated),
        "instance from %s refused: %s%s",
        source.calling_ae_title or source.actor,
        exc.reason,
        received,
    )
    return StoreResult(StoreOutcome.TOO_LARGE, exc.reason)


def failed_to_write(
    store: FileStore, source: Source, exc: OSError, what: str = "cannot write the file"
) -> StoreResult:
    """The answer to an instance whose file could not be written (or read)."""
    why = failure_reason(exc)
    per_instance_log.error(
        (store.root, "not stored", why, "file"),
        "instance not stored (%s): %s: %s",
        why,
        what,
        short_error(exc),
    )
    return StoreResult(StoreOutcome.FAILED, why)


def _prepare(
    store: FileStore,
    data: Part10Source,
    *,
    source: Source,
    policy: IngestPolicy,
    expected_sop_class_uid: str | None,
    expected_sop_instance_uid: str | None,
    stored_at: Path | None,
    received: bool,
) -> Prepared | StoreResult:
    """Steps 1 and 2 of the module docstring: the instance ready to index, with
    its file durable, or the answer that refuses it."""
    started = time.perf_counter()
    try:
        header = read_header(
            data, max_dataset_bytes=policy.max_dataset_bytes, scratch_dir=store.tmp
        )
        offset = dataset_offset(data.buffer)
        # Content identity excludes the file meta, which differs between senders.
        digest = data.sha256(offset)
    except DatasetTooLarge as exc:
        return refused_too_large(store, source, exc)
    except InvalidHeader as exc:
        per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, exc.reason),
            "instance from %s refused: %s",
            source.calling_ae_title,
            exc.reason,
        )
        outcome = StoreOutcome.MISMATCH if exc.mismatch else StoreOutcome.REJECTED
        return StoreResult(outcome, exc.reason)
    except InvalidValue as exc:
        per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, str(exc)),
            "instance from %s refused: %s",
            source.calling_ae_title,
            exc,
        )
        return StoreResult(StoreOutcome.REJECTED, str(exc))
    observe_ingest_stage("header", time.perf_counter() - started)
    mismatch = None
    if expected_sop_class_uid is not None and header.sop_class_uid != expected_sop_class_uid:
        mismatch = "SOPClassUID differs from the command's Affected SOP Class"
    if (
        expected_sop_instance_uid is not None
        and header.sop_instance_uid != expected_sop_instance_uid
    ):
        mismatch = "SOPInstanceUID differs from the command's Affected SOP Instance"
    if mismatch:
        per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, mismatch),
            "instance from %s refused: %s",
            source.calling_ae_title,
            mismatch,
        )
        return result_for(StoreOutcome.MISMATCH, mismatch, header)

    in_place = stored_at is not None and stored_at == store.absolute(relative_path(header))
    temp: Path | None = None
    try:
        if received:
            assert data.path is not None
            temp = data.path
            if store.fsync:
                # On this thread, in parallel with the other senders, not in the
                # writer: measured in docs/ingest.md#group-commit.
                started = time.perf_counter()
                _fsync_file(temp)
                observe_ingest_stage("sync", time.perf_counter() - started)
        elif not in_place:
            started = time.perf_counter()
            temp = store.write_temp(data.buffer)  # written and synced
            observe_ingest_stage("write", time.perf_counter() - started)
        # which file is ours once renamed: another receiver of the same SOP
        # instance may have renamed its own copy over the path since
        temp_inode = temp.stat().st_ino if temp is not None else None
    except OSError as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        result = failed_to_write(store, source, exc)
        return result_for(result.outcome, result.reason, header)
    return Prepared(header, digest, data.size, source, policy, store, temp, temp_inode)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
