"""Storing one instance: the single path behind C-STORE, `dicom-node import` and reindex.

Order of work, chosen so that nothing acknowledged is ever lost and nothing
half-written is ever indexed:

1. read the header (no pixel decoding; a file is memory-mapped, not read whole)
   and refuse what cannot be indexed or is over ``max_dataset_bytes``, as stored
   or once a Deflated data set is inflated (bounded: domain/inflate.py);
2. write the bytes to a temp file in the store (fsync); a C-STORE's data set is
   in one already, written as it arrived (scp/dataset_limit.py), and only synced;
3. in one database transaction: upsert patient, study, series; insert the
   instance; bump counters; match a new study to its order;
4. rename the temp file into its final place, *then* commit. A crash before the
   commit leaves at most an unindexed file (found by verify/reindex, never
   acknowledged); a failed commit removes the file it had just placed.

The transaction first locks the study row (PostgreSQL ``FOR NO KEY UPDATE``;
SQLite's ``BEGIN IMMEDIATE`` serialises writers anyway), and only then reads
the instance and series rows, each in a statement of its own. A retention
purge holds the same row ``FOR UPDATE`` while it deletes the study's series
and instances: a C-STORE arriving meanwhile waits for it, then finds them gone
and stores the instance afresh (series created again). Had the rows been read
before the lock, a resend would be acknowledged as a duplicate of a row the
purge then deletes, and a new instance would be inserted into a deleted
series. ``NO KEY UPDATE`` is the lock the study counter update takes anyway,
so concurrent receivers of one study queue on it once, in one order, and never
upgrade a shared lock (two holders of ``FOR SHARE`` both updating the counters
would deadlock); unlike ``FOR UPDATE`` it lets other transactions insert rows
that refer to the study (work items, reports) meanwhile.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import cast

from sqlalchemy import Table, bindparam, exists, select, update
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session

from dicom_node.db.changes import record_change
from dicom_node.db.engine import Database
from dicom_node.db.held_syntaxes import record_held_syntax
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient
from dicom_node.db.upsert import insert_ignoring_conflict
from dicom_node.domain.audit import (
    Actor,
    Subject,
    SystemActor,
    TargetKind,
    patient_record_event,
    procedure_event,
    transfer_event,
)
from dicom_node.domain.dataset_header import InstanceHeader, InvalidHeader, read_header
from dicom_node.domain.enums import AuditOutcome, Completeness, MetadataStatus, StudyStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.inflate import DEFAULT_MAX_DATASET_BYTES, DatasetTooLarge
from dicom_node.domain.part10 import dataset_offset
from dicom_node.domain.part10_source import Part10Source, open_part10
from dicom_node.domain.transitions import COMPLETENESS, STUDY_METADATA
from dicom_node.domain.vr import normalize_tm
from dicom_node.log_limit import LogLimiter
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.workflow.completeness import withdraw_from_reading
from dicom_node.services.workflow.matching import match_new_study
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.ingest")
# Lines logged per instance go through this: a modality resending a study into a
# full disk writes one line per kind every 10 s, with a count, not one per
# instance. Keys name the kind (and the peer, where the line names it), never
# patient data or UIDs; they include the store, so that two nodes in one process
# (tests, embedding) do not hold back each other's first line.
_per_instance_log = LogLimiter(log)


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same UID, same content: nothing to do
    KEPT_EXISTING = "kept_existing"  # same UID, other content, policy keep
    REPLACED = "replaced"  # same UID, other content, policy replace
    MISMATCH = "mismatch"  # the dataset contradicts the command that carried it
    REJECTED = "rejected"  # the data cannot be indexed (the sender's fault)
    TOO_LARGE = "too_large"  # over max_dataset_bytes, as sent or inflated: never kept
    FAILED = "failed"  # we could not store it (disk, database): worth a retry


@dataclass(frozen=True, slots=True)
class Source:
    """Where an instance came from, for the index and the audit trail."""

    calling_ae_title: str | None = None
    address: str | None = None
    # who acts when no peer sent it: the CLI's import or reindex; the workflow
    # steps an arrival sets off (matching, an exam started) are the receiver's
    actor: SystemActor = SystemActor.DICOM

    def audit_actor(self) -> Actor:
        """The actor of the events this instance's own arrival writes: the
        sending peer, or the node for files read from disk."""
        if self.calling_ae_title:
            return Actor.peer(self.calling_ae_title, self.address)
        return Actor.system(self.actor)


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: StoreOutcome
    reason: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    new_study: bool = False


@dataclass(frozen=True)
class IngestPolicy:
    duplicate_policy: str = "keep"  # "keep" | "replace"
    # the largest data set taken, as sent and once inflated (settings.max_dataset_bytes)
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES


@dataclass
class _Indexed:
    outcome: StoreOutcome
    relative_path: str
    old_path: str | None = None
    new_study: bool = False
    audit_reason: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


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
    """
    try:
        with open_part10(part10) as data:
            return _store(
                db,
                store,
                data,
                source=source,
                policy=policy,
                expected_sop_class_uid=expected_sop_class_uid,
                expected_sop_instance_uid=expected_sop_instance_uid,
                stored_at=stored_at,
                received=received,
            )
    except OSError as exc:  # the file to store cannot be opened or mapped
        return failed_to_write(store, source, exc, "cannot read the file")
    finally:
        if received and isinstance(part10, Path):
            part10.unlink(missing_ok=True)  # refused or failed (a stored one was renamed)


def refused_too_large(store: FileStore, source: Source, exc: DatasetTooLarge) -> StoreResult:
    """The answer to a data set over max_dataset_bytes (as sent, or inflated),
    with its one log line; nothing of it was kept."""
    received = f": {exc.size} bytes" if exc.size is not None else ""
    _per_instance_log.warning(
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
    why = _failure(exc)
    _per_instance_log.error(
        (store.root, "not stored", why, "file"),
        "instance not stored (%s): %s: %s",
        why,
        what,
        _short(exc),
    )
    return StoreResult(StoreOutcome.FAILED, why)


def _store(
    db: Database,
    store: FileStore,
    data: Part10Source,
    *,
    source: Source,
    policy: IngestPolicy,
    expected_sop_class_uid: str | None,
    expected_sop_instance_uid: str | None,
    stored_at: Path | None,
    received: bool,
) -> StoreResult:
    try:
        header = read_header(
            data, max_dataset_bytes=policy.max_dataset_bytes, scratch_dir=store.tmp
        )
        offset = dataset_offset(data.buffer)
    except DatasetTooLarge as exc:
        return refused_too_large(store, source, exc)
    except InvalidHeader as exc:
        _per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, exc.reason),
            "instance from %s refused: %s",
            source.calling_ae_title,
            exc.reason,
        )
        outcome = StoreOutcome.MISMATCH if exc.mismatch else StoreOutcome.REJECTED
        return StoreResult(outcome, exc.reason)
    except InvalidValue as exc:
        _per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, str(exc)),
            "instance from %s refused: %s",
            source.calling_ae_title,
            exc,
        )
        return StoreResult(StoreOutcome.REJECTED, str(exc))
    mismatch = None
    if expected_sop_class_uid is not None and header.sop_class_uid != expected_sop_class_uid:
        mismatch = "SOPClassUID differs from the command's Affected SOP Class"
    if (
        expected_sop_instance_uid is not None
        and header.sop_instance_uid != expected_sop_instance_uid
    ):
        mismatch = "SOPInstanceUID differs from the command's Affected SOP Instance"
    if mismatch:
        _per_instance_log.warning(
            (store.root, "refused", source.calling_ae_title, mismatch),
            "instance from %s refused: %s",
            source.calling_ae_title,
            mismatch,
        )
        return _result(StoreOutcome.MISMATCH, mismatch, header)

    in_place = stored_at is not None and stored_at == store.absolute(_relative_path(header))
    temp: Path | None = None
    try:
        # Content identity excludes the file meta, which differs between senders.
        digest = data.sha256(offset)
        if received:
            assert data.path is not None
            temp = data.path
            if store.fsync:
                _fsync_file(temp)
        elif not in_place:
            temp = store.write_temp(data.buffer)
        # which file is ours once renamed: another receiver of the same SOP
        # instance may have renamed its own copy over the path since
        temp_inode = temp.stat().st_ino if temp is not None else None
    except OSError as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        result = failed_to_write(store, source, exc)
        return _result(result.outcome, result.reason, header)

    installed: Path | None = None
    indexed: _Indexed | None = None
    committed = False
    try:
        for attempt in (1, 2):
            try:
                with db.unit_of_work() as session:
                    indexed = _index(
                        session,
                        header,
                        digest,
                        data.size,
                        source,
                        policy,
                        installs=temp is not None,
                    )
                    if temp is not None and _needs_file(indexed, store):
                        installed = store.install(temp, indexed.relative_path)
                committed = True
                break
            except _LostInsertRace:
                installed = None
                if attempt == 2:
                    raise
        if installed is not None:
            store.sync_directory(installed)  # before Success: the rename is durable
    except (SQLAlchemyError, OSError, _LostInsertRace) as exc:
        if (
            installed is not None
            and not committed
            and _still_ours(installed, temp_inode)
            and not _row_points_at(db, installed, store)
        ):
            # the transaction that would have pointed at this file rolled back
            installed.unlink(missing_ok=True)
        if temp is not None:
            temp.unlink(missing_ok=True)
        if isinstance(exc, DataError):
            # a value the database refuses: resending cannot help (C000, not A700)
            _per_instance_log.warning(
                (store.root, "cannot be indexed"),
                "instance refused: a value cannot be indexed: %s",
                _short(exc),
            )
            return _result(StoreOutcome.REJECTED, "a value cannot be indexed", header)
        why = _failure(exc)
        _per_instance_log.error(
            (store.root, "not stored", why), "instance not stored (%s): %s", why, _short(exc)
        )
        return _result(StoreOutcome.FAILED, why, header)
    finally:
        if installed is None and temp is not None:
            temp.unlink(missing_ok=True)

    assert indexed is not None
    if (
        installed is not None
        and indexed.old_path is not None
        and indexed.old_path != indexed.relative_path
    ):
        store.remove(indexed.old_path)  # only now that the new copy is committed
    if indexed.outcome in (StoreOutcome.KEPT_EXISTING, StoreOutcome.REPLACED):
        _per_instance_log.warning(
            (store.root, "received again", source.calling_ae_title, indexed.outcome),
            "SOP instance received again with different content from %s: %s",
            source.calling_ae_title,
            indexed.outcome.value,
        )
    return _result(indexed.outcome, indexed.audit_reason, header, new_study=indexed.new_study)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _needs_file(indexed: _Indexed, store: FileStore) -> bool:
    """New content goes in; so does a resend of an indexed instance whose file is
    missing (a crash between commit and directory sync, or a lost disk): the
    resend restores it instead of being waved through as a duplicate."""
    if indexed.outcome in (StoreOutcome.STORED, StoreOutcome.REPLACED):
        return True
    if indexed.outcome is StoreOutcome.DUPLICATE and not store.exists(indexed.relative_path):
        _per_instance_log.warning(
            (store.root, "restored"), "indexed instance file was missing; restored from the resend"
        )
        return True
    return False


def _result(
    outcome: StoreOutcome, reason: str | None, header: InstanceHeader, *, new_study: bool = False
) -> StoreResult:
    return StoreResult(
        outcome,
        reason,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_instance_uid,
        patient_id=header.patient_id,
        accession_number=header.accession_number,
        new_study=new_study,
    )


def _failure(exc: Exception) -> str:
    """What stopped an instance from being stored, for the log and the ErrorComment:
    a full disk (the store's, or SQLite's own file) asks for the operator, not for
    patience, so it is named as such."""
    orig = getattr(exc, "orig", None)
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(orig, sqlite3.Error) and orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    ):
        return "disk full"
    return "database unavailable" if isinstance(exc, SQLAlchemyError) else "storage unavailable"


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Parents:
    """Where a new instance goes: its series and study, and what indexing them did."""

    series_pk: int
    study_pk: int
    completeness: str
    new_study: bool = False
    new_series: bool = False
    quarantined: bool = False


def _index(
    session: Session,
    header: InstanceHeader,
    digest: str,
    size: int,
    source: Source,
    policy: IngestPolicy,
    *,
    installs: bool,
) -> _Indexed:
    """``installs``: this call has a new copy to install (False for a file indexed
    where it lies)."""
    now = datetime.now(UTC)
    connection = session.connection()
    # Lock first, then read (see the module docstring): the study row by its UID,
    # then, in a statement of its own so that it sees what committed while this
    # one waited, the instance, the series and whether the patient agrees.
    study = _lock_study(session, header.study_instance_uid)
    known = connection.execute(
        _SQL.resolve,
        {
            "sop_uid": header.sop_instance_uid,
            "series_uid": header.series_instance_uid,
            "study_pk": study.pk if study is not None else None,
            "patient_pk": study.patient_pk if study is not None else None,
            "patient_id": header.patient_id,
            "issuer": header.issuer_of_patient_id,
        },
    ).one()
    if known.instance_pk is not None:
        existing = session.get(DicomInstance, known.instance_pk)
        assert existing is not None
        return _index_resend(
            session, existing, header, digest, size, source, policy, installs=installs
        )

    same_patient = bool(known.same_patient)
    if study is not None and known.series_pk is not None and same_patient:
        # the common case: the series exists, in this study, for this patient
        parents = _Parents(int(known.series_pk), study.pk, study.completeness)
    else:
        # new series, new study, or the careful path (quarantine...)
        parents = _create_parents(session, header, source, now, study, same_patient=same_patient)
    relative = _relative_path(header)
    inserted = insert_ignoring_conflict(
        session,
        DicomInstance,
        {
            "sop_instance_uid": header.sop_instance_uid,
            "series_pk": parents.series_pk,
            "sop_class_uid": header.sop_class_uid,
            "instance_number": header.instance_number,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "file_path": relative,
            "file_size": size,
            "sha256": digest,
            "calling_ae_title": source.calling_ae_title,
            "source_address": source.address,
            "received_at": now,
            "request_attributes": [
                {k: v for k, v in asdict(item).items() if v} for item in header.request_attributes
            ]
            or None,
            "received_patient_id": header.patient_id,
            "quarantined": parents.quarantined,
        },
        unique=["sop_instance_uid"],
    )
    if inserted is None:
        raise _LostInsertRace()
    # in this transaction: the C-GET acceptor must never miss a pair (db/held_syntaxes.py)
    record_held_syntax(session, header.sop_class_uid, header.transfer_syntax_uid)

    if parents.quarantined:
        # Held (stored, indexed, flagged) but not merged: the other patient's study
        # keeps its counts and modalities until reconciliation decides.
        return _Indexed(StoreOutcome.STORED, relative)
    # Counters move by atomic increments in this transaction: concurrent receivers
    # of one study (threads, processes, nodes) never lose an update.
    connection.execute(_SQL.count_series_instance, {"pk": parents.series_pk})
    connection.execute(
        _SQL.count_study_instance_in_new_series
        if parents.new_series
        else _SQL.count_study_instance,
        {"pk": parents.study_pk, "now": now},
    )
    if parents.new_series and header.modality:
        _add_modality(session, parents.study_pk, header.modality, new_study=parents.new_study)
    if parents.completeness == Completeness.COMPLETE.value:
        record_audit_event(
            session,
            procedure_event(
                "study_reopened",
                source.audit_actor(),
                TargetKind.STUDY,
                parents.study_pk,
                Subject(patient_id=header.patient_id, study_instance_uid=header.study_instance_uid),
                reason="an instance arrived after the study was complete",
                details={
                    "before": {"completeness": Completeness.COMPLETE.value},
                    "after": {"completeness": Completeness.RECEIVING.value},
                },
            ),
        )
        record_change(
            session,
            entity="study",
            entity_id=parents.study_pk,
            action="updated",
            payload={"completeness": Completeness.RECEIVING.value},
        )
    if parents.new_study:
        # the row was made by a Core statement, which the feed's ORM hooks do not see
        record_change(
            session,
            entity="study",
            entity_id=parents.study_pk,
            action="created",
            payload={
                "status": StudyStatus.ACQUIRED.value,
                "completeness": Completeness.RECEIVING.value,
            },
        )
        match_new_study(
            session,
            study_id=parents.study_pk,
            header=header,
            now=now,
            actor=source.audit_actor(),
        )
    return _Indexed(StoreOutcome.STORED, relative, new_study=parents.new_study)


@dataclass(frozen=True, slots=True)
class _LockedStudy:
    """The study row as read under its lock: the completeness this transaction
    overwrites (a stability run cannot complete the study unnoticed meanwhile)."""

    pk: int
    patient_pk: int
    completeness: str


def _lock_study(session: Session, study_instance_uid: str) -> _LockedStudy | None:
    row = session.connection().execute(_SQL.study_locked, {"uid": study_instance_uid}).one_or_none()
    if row is None:
        return None
    return _LockedStudy(int(row.id), int(row.patient_pk), str(row.completeness))


def _create_parents(
    session: Session,
    header: InstanceHeader,
    source: Source,
    now: datetime,
    study: _LockedStudy | None,
    *,
    same_patient: bool,
) -> _Parents:
    """First instance of a series (or a patient mismatch, or a new study): upsert
    what is missing of patient, study, series. ``study``: the study row locked by
    ``_index``, None when there was none.

    An insert that wins returns its id and needs no further read; only a row that
    already existed is looked up.
    """
    if study is not None:
        patient_pk = study.patient_pk if same_patient else _upsert_patient(session, header)
        study_pk, study_patient_pk, new_study = study.pk, study.patient_pk, False
        completeness = study.completeness  # read under the lock
    else:
        patient_pk = _upsert_patient(session, header)
        study_pk, study_patient_pk, new_study, completeness = _upsert_study(
            session, header, patient_pk, now
        )
    quarantined = study_patient_pk != patient_pk
    if quarantined:
        _quarantine(session, study_pk, header, source)
    series_pk, new_series = _upsert_series(session, header, study_pk)
    return _Parents(
        series_pk,
        study_pk,
        completeness,
        new_study=new_study,
        new_series=new_series,
        quarantined=quarantined,
    )


class _SQL:
    """The per-instance statements, built once: parameters bound at execution."""

    _series = cast(Table, DicomSeries.__table__)
    _study = cast(Table, DicomStudy.__table__)
    _patient = cast(Table, Patient.__table__)
    _instance = cast(Table, DicomInstance.__table__)
    # The lock every ingest transaction takes first. One table only: a join would
    # hand back the other tables' rows as they were before the wait.
    # FOR NO KEY UPDATE is PostgreSQL's; SQLite's BEGIN IMMEDIATE already
    # serialises writers (and SQLAlchemy leaves the clause out there).
    study_locked = (
        select(_study.c.id, _study.c.patient_pk, _study.c.completeness)
        .where(_study.c.study_instance_uid == bindparam("uid"))
        .with_for_update(key_share=True)
    )
    # Read after the lock, in one round trip: the instance (a resend?), the series
    # in this study, and whether the study's patient is the header's.
    resolve = select(
        select(_instance.c.id)
        .where(_instance.c.sop_instance_uid == bindparam("sop_uid"))
        .scalar_subquery()
        .label("instance_pk"),
        select(_series.c.id)
        .where(
            _series.c.series_instance_uid == bindparam("series_uid"),
            _series.c.study_pk == bindparam("study_pk"),
        )
        .scalar_subquery()
        .label("series_pk"),
        exists()
        .where(
            _patient.c.id == bindparam("patient_pk"),
            _patient.c.patient_id == bindparam("patient_id"),
            _patient.c.issuer_of_patient_id == bindparam("issuer"),
        )
        .label("same_patient"),
    )
    patient_pk = select(_patient.c.id).where(
        _patient.c.patient_id == bindparam("patient_id"),
        _patient.c.issuer_of_patient_id == bindparam("issuer"),
    )
    series_pk = select(_series.c.id).where(_series.c.series_instance_uid == bindparam("uid"))
    count_series_instance = (
        update(_series)
        .where(_series.c.id == bindparam("pk"))
        .values(instance_count=_series.c.instance_count + 1)
    )
    _study_counts = {
        "instance_count": _study.c.instance_count + 1,
        "last_received_at": bindparam("now"),
        # quiet or complete -> receiving (COMPLETENESS "new_instance"); set in
        # the same UPDATE as the counts, one statement per instance
        "completeness": COMPLETENESS.target("new_instance").value,
    }
    count_study_instance = (
        update(_study).where(_study.c.id == bindparam("pk")).values(**_study_counts)
    )
    count_study_instance_in_new_series = (
        update(_study)
        .where(_study.c.id == bindparam("pk"))
        .values(**_study_counts, series_count=_study.c.series_count + 1)
    )


class _LostInsertRace(Exception):
    """Another receiver committed the same SOPInstanceUID first: redo as a resend."""


def _relative_path(header: InstanceHeader, variant: str | None = None) -> str:
    return FileStore.relative_path(
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_instance_uid,
        variant=variant,
    )


def _index_resend(
    session: Session,
    existing: DicomInstance,
    header: InstanceHeader,
    digest: str,
    size: int,
    source: Source,
    policy: IngestPolicy,
    *,
    installs: bool,
) -> _Indexed:
    if existing.sha256 == digest:
        return _Indexed(StoreOutcome.DUPLICATE, existing.file_path)
    after: dict[str, object] = {"sha256": digest, "file_size": size}
    details: dict[str, object] = {
        "before": {"sha256": existing.sha256, "file_size": existing.file_size},
        "after": after,
        "policy": policy.duplicate_policy,
    }
    series = existing.series
    moved = (series.series_instance_uid, series.study.study_instance_uid) != (
        header.series_instance_uid,
        header.study_instance_uid,
    ) or existing.received_patient_id != header.patient_id
    if moved:
        # Replacing would move an instance between series, studies or patients
        # behind the index's back: that is a correction for a person to make.
        relative, old = existing.file_path, None
        outcome = StoreOutcome.KEPT_EXISTING
        reason = "stored copy kept: the new copy names another series, study or patient"
        after["series_instance_uid"] = header.series_instance_uid
        after["study_instance_uid"] = header.study_instance_uid
    elif policy.duplicate_policy == "replace" and not installs:
        # The new content is a file already in the store (reindex, repair), with
        # no copy to install at a new path: pointing the row elsewhere would point
        # it at nothing, and the file it has must stay.
        relative, old = existing.file_path, None
        outcome = StoreOutcome.KEPT_EXISTING
        reason = "stored copy kept: the new content is a file in the store, not a copy to install"
    elif policy.duplicate_policy == "replace":
        relative = _relative_path(header, variant=digest[:16])
        old = existing.file_path
        existing.file_path = relative
        existing.sha256 = digest
        existing.file_size = size
        existing.transfer_syntax_uid = header.transfer_syntax_uid
        existing.sop_class_uid = header.sop_class_uid
        record_held_syntax(session, header.sop_class_uid, header.transfer_syntax_uid)
        existing.instance_number = header.instance_number
        existing.received_at = datetime.now(UTC)
        outcome, reason = StoreOutcome.REPLACED, "new content replaced the stored copy"
    else:
        relative, old = existing.file_path, None
        outcome, reason = StoreOutcome.KEPT_EXISTING, "stored copy kept, new content discarded"
    record_audit_event(
        session,
        transfer_event(
            "instance_content_conflict",
            source.audit_actor(),
            TargetKind.INSTANCE,
            header.sop_instance_uid,
            _subject(header),
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=reason,
            details=details,
        ),
    )
    return _Indexed(outcome, relative, old_path=old, audit_reason=reason)


def _subject(header: InstanceHeader) -> Subject:
    return Subject(
        patient_id=header.patient_id,
        study_instance_uid=header.study_instance_uid,
        accession_number=header.accession_number,
    )


def _upsert_patient(session: Session, header: InstanceHeader) -> int:
    created = insert_ignoring_conflict(
        session,
        Patient,
        {
            "patient_id": header.patient_id,
            "issuer_of_patient_id": header.issuer_of_patient_id,
            # PN columns: their folded copies are filled by the INSERT (db/models.py)
            "patient_name": header.patient_name,
            "patient_birth_date": header.patient_birth_date,
            "patient_sex": header.patient_sex,
        },
        unique=["patient_id", "issuer_of_patient_id"],
    )
    if created is not None:
        return created
    found: int = (
        session.connection()
        .execute(
            _SQL.patient_pk,
            {"patient_id": header.patient_id, "issuer": header.issuer_of_patient_id},
        )
        .scalar_one()
    )
    return found


def _upsert_study(
    session: Session, header: InstanceHeader, patient_pk: int, now: datetime
) -> tuple[int, int, bool, str]:
    """(study pk, the study's patient pk, created, completeness). A study another
    receiver created meanwhile is locked, as ``_index`` locks a known one, and
    its completeness read under the lock."""
    created = insert_ignoring_conflict(
        session,
        DicomStudy,
        {
            "study_instance_uid": header.study_instance_uid,
            "patient_pk": patient_pk,
            "accession_number": header.accession_number,
            "accession_issuer": header.accession_issuer,
            "study_id": header.study_id,
            "study_date": header.study_date,
            "study_time": header.study_time,
            "study_time_norm": normalize_tm(header.study_time),
            "study_description": header.study_description,
            "referring_physician_name": header.referring_physician_name,
            "name_of_physicians_reading_study": header.name_of_physicians_reading_study,
            "body_part_examined": header.body_part_examined,
            "modality_type": header.modality,
            "metadata_status": MetadataStatus.PENDING.value,
            "status": StudyStatus.ACQUIRED.value,
            "completeness": Completeness.RECEIVING.value,
            "first_received_at": now,
            "last_received_at": now,
        },
        unique=["study_instance_uid"],
    )
    if created is not None:
        # ours, uncommitted: no one else sees it
        return created, patient_pk, True, Completeness.RECEIVING.value
    found = _lock_study(session, header.study_instance_uid)
    assert found is not None  # the conflict was with a committed row
    return found.pk, found.patient_pk, False, found.completeness


def _upsert_series(session: Session, header: InstanceHeader, study_pk: int) -> tuple[int, bool]:
    created = insert_ignoring_conflict(
        session,
        DicomSeries,
        {
            "series_instance_uid": header.series_instance_uid,
            "study_pk": study_pk,
            "modality": header.modality,
            "series_number": header.series_number,
            "series_description": header.series_description,
            "body_part_examined": header.body_part_examined,
            "station_name": header.station_name,
            "performing_physician_name": header.performing_physician_name,
            "series_date": header.series_date,
            "series_time": header.series_time,
            "series_time_norm": normalize_tm(header.series_time),
        },
        unique=["series_instance_uid"],
    )
    if created is not None:
        return created, True
    found: int = (
        session.connection()
        .execute(_SQL.series_pk, {"uid": header.series_instance_uid})
        .scalar_one()
    )
    return found, False


def _add_modality(session: Session, study_pk: int, modality: str, *, new_study: bool) -> None:
    # Re-read under the row lock the counter update just took: no lost update.
    # A study this transaction created has none yet.
    current = (
        None
        if new_study
        else session.scalar(select(DicomStudy.modalities_in_study).where(DicomStudy.id == study_pk))
    )
    values = set(filter(None, (current or "").split("\\")))
    if modality not in values:
        values.add(modality)
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == study_pk)
            .values(modalities_in_study="\\".join(sorted(values)))
        )


def _quarantine(session: Session, study_pk: int, header: InstanceHeader, source: Source) -> None:
    """A known StudyInstanceUID for another patient: flag, never merge.

    The study leaves the reading worklist (its open reading/review items are
    cancelled, a reconciliation item is opened) until a person links it again.
    A rejected study stays rejected: withdrawn, nothing to read or reconcile.
    """
    before = session.scalars(
        select(DicomStudy.metadata_status).where(DicomStudy.id == study_pk)
    ).one()  # the caller holds the study row
    after = (
        STUDY_METADATA.target("patient_conflict").value
        if STUDY_METADATA.allows("patient_conflict", before)
        else before  # rejected stays rejected
    )
    if before != after:
        session.execute(
            update(DicomStudy).where(DicomStudy.id == study_pk).values(metadata_status=after)
        )
    reason = "instance carries a known StudyInstanceUID with a different PatientID"
    record_audit_event(
        session,
        patient_record_event(
            "study_patient_conflict",
            source.audit_actor(),
            TargetKind.STUDY,
            study_pk,
            _subject(header),
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=reason,
            details={
                "before": {"metadata_status": before},
                "after": {"metadata_status": after},
                "sop_instance_uid": header.sop_instance_uid,
            },
        ),
    )
    if after == MetadataStatus.CONFLICT.value:
        withdraw_from_reading(session, study_pk, actor=source.audit_actor(), reason=reason)
