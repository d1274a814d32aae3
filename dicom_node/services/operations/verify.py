"""`dicom-node verify`: does the index agree with the files in the store?

Seven kinds of disagreement (paths are relative to the store's ``instances/`` and
made only of UIDs, so a report names no patient):

- missing: an index row whose file is gone (an acknowledged image is lost);
- orphan: a DICOM file under ``instances/`` of a SOP instance the index does
  not know (an interrupted ingest, or a file put there by hand) - ``--repair``
  indexes it where it lies;
- superseded: a DICOM file of a SOP instance the index holds at another path
  (the old copy a replace left when interrupted between its commit and
  removing the old file) - never imported: importing it would move the indexed
  instance to content nobody sent last; ``--remove-superseded`` removes it, but
  only once the indexed copy of the same instance verifies (a copy whose
  indexed twin is missing or damaged may be the best one left: it is kept);
- stray: a file without the DICM prefix (``.nfs*``, an editor's backup) -
  reported only;
- purged: a file of a study whose images retention purged (Study Deleted
  audited) whose inode last changed before the purge: a purge interrupted
  between removing the rows and the files - ``--remove-purged`` removes it;
- size: the file's length differs from the indexed ``file_size``;
- content: the SHA-256 of the file's dataset (the bytes after the file meta, as
  ingest hashes them) differs from the indexed ``sha256``.

Ingest renames a file into place before it commits its row, so while the node
receives, a file can be seen briefly without its row. Orphan and missing
candidates are looked up again after the listing so that such in-flight
instances are not reported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance, DicomSeries, DicomStudy
from dicom_node.db.types import as_utc
from dicom_node.domain.audit import Actor, SystemActor, application_activity_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10 import HEAD_LENGTH, has_part10_prefix, stream_dataset_offset
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.storage import FileStore

CHUNK = 1 << 20
_LOOKUP_BATCH = 500
# DICOM "Study Deleted" (PS3.15 A.5.3.x, 110105): what retention records per purge
STUDY_DELETED = "110105"


@dataclass(frozen=True, slots=True)
class FileDigest:
    size: int
    file_sha256: str  # the whole file, as `sha256sum` prints it
    content_sha256: str | None  # the dataset after the file meta, as the index keeps it


def digest_file(path: Path, *, copy_to: BinaryIO | None = None) -> FileDigest:
    """Hash a stored instance in one streaming pass, optionally copying it.

    ``content_sha256`` is None when the file is not DICOM Part 10 (no way to
    find where its dataset starts): it then matches no index digest. Memory
    stays at one chunk whatever the file holds (a damaged header included).
    """
    whole = hashlib.sha256()
    content = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        try:  # domain.part10's walk, a value skipped by a seek
            offset: int | None = stream_dataset_offset(source)
        except InvalidValue:  # not Part 10, or its file meta is cut short
            offset = None
        source.seek(0)
        data = source.read(CHUNK)
        while data:
            whole.update(data)
            if offset is not None and size + len(data) > offset:
                content.update(memoryview(data)[max(0, offset - size) :])
            size += len(data)
            if copy_to is not None:
                copy_to.write(data)
            data = source.read(CHUNK)
    return FileDigest(size, whole.hexdigest(), content.hexdigest() if offset is not None else None)


def has_dicm_prefix(path: Path) -> bool:
    """Does the file start like DICOM Part 10 (128-byte preamble, then "DICM")?"""
    try:
        with path.open("rb") as source:
            return has_part10_prefix(source.read(HEAD_LENGTH))
    except OSError:
        return False


class ProblemKind(StrEnum):
    MISSING = "missing"
    ORPHAN = "orphan"
    SUPERSEDED = "superseded"
    STRAY = "stray"
    PURGED = "purged"
    SIZE = "size"
    CONTENT = "content"


PROBLEM_TITLES = {
    ProblemKind.MISSING: "indexed but the file is missing",
    ProblemKind.ORPHAN: "file in the store that the index does not know (orphan)",
    ProblemKind.SUPERSEDED: (
        "other copy of an instance indexed elsewhere (old copy left by an interrupted "
        "replace): --remove-superseded removes it once the indexed copy verifies"
    ),
    ProblemKind.STRAY: "not a DICOM file (no DICM prefix): left in place",
    ProblemKind.PURGED: "file of a study whose images were purged (an interrupted purge)",
    ProblemKind.SIZE: "file size differs from the index",
    ProblemKind.CONTENT: "file content differs from the index (SHA-256)",
}


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    indexed: int
    files: int
    hashed: int  # files whose content was hashed (0 with quick)
    problems: dict[ProblemKind, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def count(self, kind: ProblemKind) -> int:
        return len(self.problems.get(kind, ()))

    def describe(self, *, limit: int | None = None) -> str:
        lines = [
            f"{self.indexed} indexed instances, {self.files} files in the store, "
            f"{self.hashed} hashed"
        ]
        if self.ok:
            lines.append("no problems found")
        for kind in ProblemKind:
            paths = self.problems.get(kind, ())
            if not paths:
                continue
            lines.append(f"{kind.value} ({len(paths)}): {PROBLEM_TITLES[kind]}")
            shown = paths if limit is None else paths[:limit]
            lines.extend(f"  {path}" for path in shown)
            if len(shown) < len(paths):
                lines.append(f"  ... and {len(paths) - len(shown)} more")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RepairResult:
    before: IntegrityReport
    after: IntegrityReport
    indexed: int  # orphans now indexed
    import_summary: str | None  # None: orphans were not imported
    purge_leftovers_removed: int | None = None  # None: not asked to remove them
    superseded_removed: int | None = None  # None: not asked to remove them
    # (path, why) of the superseded copies that removing them left in place
    superseded_kept: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        actions = []
        if self.import_summary is not None:
            actions.append(
                f"{self.indexed} orphan files indexed ({self.import_summary}), "
                f"{self.after.count(ProblemKind.ORPHAN)} orphans left"
            )
        if self.purge_leftovers_removed is not None:
            actions.append(f"{self.purge_leftovers_removed} purge leftovers removed")
        elif self.before.count(ProblemKind.PURGED):
            actions.append("purge leftovers kept (--remove-purged removes them)")
        if self.superseded_removed is not None:
            actions.append(
                f"{self.superseded_removed} superseded copies removed, "
                f"{len(self.superseded_kept)} kept"
            )
        elif self.before.count(ProblemKind.SUPERSEDED):
            actions.append(
                "superseded copies kept (--remove-superseded removes those whose "
                "indexed copy verifies)"
            )
        lines = [self.before.describe(), f"repair: {', '.join(actions) or 'nothing to do'}"]
        if self.superseded_kept:
            lines.append(f"superseded copies kept ({len(self.superseded_kept)}):")
            lines.extend(f"  {path}: {why}" for path, why in self.superseded_kept)
        lines.extend(["after repair:", self.after.describe()])
        return "\n".join(lines)


def verify_store(
    db: Database,
    store: FileStore,
    *,
    quick: bool = False,
) -> IntegrityReport:
    """Compare every index row with its file, and every file with the index.

    ``quick`` compares sizes only (no file is hashed)."""
    # Rows first, then files: a row read here had its file renamed into place
    # before it committed, so only files can be "too new" (see the module doc).
    with db.read() as session:
        rows = {
            path: (size, digest)
            for path, size, digest in session.execute(
                select(DicomInstance.file_path, DicomInstance.file_size, DicomInstance.sha256)
            )
        }
    on_disk = _list_files(store)
    missing: list[str] = []
    size_mismatch: list[str] = []
    content_mismatch: list[str] = []
    hashed = 0
    for relative, (size, digest) in sorted(rows.items()):
        if relative not in on_disk:
            missing.append(relative)
            continue
        path = store.instances / relative
        try:
            if quick:
                actual_size = path.stat().st_size
                if actual_size != size:
                    size_mismatch.append(relative)
                continue
            found = digest_file(path)
        except FileNotFoundError:
            missing.append(relative)
            continue
        hashed += 1
        if found.size != size:
            size_mismatch.append(relative)
        elif found.content_sha256 != digest:
            content_mismatch.append(relative)
    orphans = sorted(on_disk - rows.keys())
    # look again: ingest committed meanwhile (orphans), or a replaced instance's
    # row moved to its new file (missing)
    committed_since = _indexed_among(db, orphans)
    orphans = [path for path in orphans if path not in committed_since]
    stray = [path for path in orphans if not has_dicm_prefix(store.instances / path)]
    not_dicom = set(stray)
    orphans = [path for path in orphans if path not in not_dicom]
    superseded = _superseded(db, store, orphans)
    orphans = [path for path in orphans if path not in superseded]
    purged = _purge_leftovers(db, store, orphans)
    orphans = [path for path in orphans if path not in purged]
    still_indexed = _indexed_among(db, missing)
    missing = [
        path for path in missing if path in still_indexed and not (store.instances / path).is_file()
    ]
    problems = {
        ProblemKind.MISSING: tuple(missing),
        ProblemKind.ORPHAN: tuple(orphans),
        ProblemKind.SUPERSEDED: tuple(sorted(superseded)),
        ProblemKind.STRAY: tuple(stray),
        ProblemKind.PURGED: tuple(sorted(purged)),
        ProblemKind.SIZE: tuple(size_mismatch),
        ProblemKind.CONTENT: tuple(content_mismatch),
    }
    return IntegrityReport(
        indexed=len(rows),
        files=len(on_disk),
        hashed=hashed,
        problems={kind: paths for kind, paths in problems.items() if paths},
    )


def _list_files(store: FileStore) -> set[str]:
    """Every regular file under instances/, relative, POSIX separators (tmp/ is not looked at)."""
    found: set[str] = set()
    for directory, _dirs, names in os.walk(store.instances):
        base = Path(directory)
        for name in names:
            path = base / name
            if path.is_file() and not path.is_symlink():
                found.add(path.relative_to(store.instances).as_posix())
    return found


def _sop_uid_candidates(path: Path, relative: str) -> tuple[str, ...]:
    """The SOP Instance UID of an orphan: from the file, else from its name
    (``<sop>.dcm``, or ``<sop>.<variant>.dcm`` as a replace names the new copy)."""
    try:
        dataset = dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], defer_size=1024
        )
        value = str(dataset.get("SOPInstanceUID", "") or "").strip("\0 ")
        if value:
            return (value,)
    except Exception:  # a damaged file: fall back to its name  # noqa: S110
        pass
    stem = relative.rsplit("/", 1)[-1].removesuffix(".dcm")
    without_variant = stem.rsplit(".", 1)[0]
    return (stem, without_variant) if without_variant != stem else (stem,)


def _superseded(db: Database, store: FileStore, orphans: list[str]) -> set[str]:
    """Orphans of an instance the index holds at another path: the old copy a
    replace left when interrupted between its commit and removing the old file
    (or a new copy whose replace never committed). Importing one would change
    the indexed instance behind the operator's back, so it is only reported."""
    candidates = {path: _sop_uid_candidates(store.instances / path, path) for path in orphans}
    uids = sorted({uid for values in candidates.values() for uid in values})
    indexed: set[str] = set()
    with db.read() as session:
        for start in range(0, len(uids), _LOOKUP_BATCH):
            indexed.update(
                session.scalars(
                    select(DicomInstance.sop_instance_uid).where(
                        DicomInstance.sop_instance_uid.in_(uids[start : start + _LOOKUP_BATCH])
                    )
                )
            )
    return {path for path, values in candidates.items() if indexed.intersection(values)}


def _written_before(path: Path, moment: datetime) -> bool | None:
    """Was the file last written (its inode changed) before ``moment``? st_ctime,
    not st_mtime: copy tools (cp -a, rsync -a, shutil.copy2) keep the mtime of
    the original, none can set the ctime. None when the file is gone."""
    try:
        changed = datetime.fromtimestamp(path.stat().st_ctime, UTC)
    except FileNotFoundError:
        return None
    return changed <= as_utc(moment)


def _purge_leftovers(db: Database, store: FileStore, orphans: list[str]) -> set[str]:
    """Orphans that retention meant to remove: their study (the first path part)
    had its images purged (audited as Study Deleted) after the file was written.
    A file written (or put back) after the purge is a new arrival, not a leftover."""
    studies = sorted({path.split("/", 1)[0] for path in orphans})
    purged_at: dict[str, datetime] = {}
    with db.read() as session:
        for start in range(0, len(studies), _LOOKUP_BATCH):
            batch = studies[start : start + _LOOKUP_BATCH]
            for study_uid, latest in session.execute(
                select(AuditEvent.study_instance_uid, func.max(AuditEvent.timestamp))
                .where(
                    AuditEvent.event_code == STUDY_DELETED,
                    AuditEvent.study_instance_uid.in_(batch),
                )
                .group_by(AuditEvent.study_instance_uid)
            ):
                if study_uid is not None and latest is not None:
                    purged_at[study_uid] = latest
    leftovers: set[str] = set()
    for path in orphans:
        when = purged_at.get(path.split("/", 1)[0])
        if when is not None and _written_before(store.instances / path, when):
            leftovers.add(path)
    return leftovers


def _indexed_among(db: Database, paths: list[str]) -> set[str]:
    indexed: set[str] = set()
    with db.read() as session:
        for start in range(0, len(paths), _LOOKUP_BATCH):
            batch = paths[start : start + _LOOKUP_BATCH]
            indexed.update(
                session.scalars(
                    select(DicomInstance.file_path).where(DicomInstance.file_path.in_(batch))
                )
            )
    return indexed


def repair_store(
    db: Database,
    store: FileStore,
    *,
    actor: SystemActor,
    index_orphans: bool = True,
    remove_purged: bool = False,
    remove_superseded: bool = False,
    quick: bool = False,
) -> RepairResult:
    """``index_orphans``: index the orphan files (DICOM files of instances the
    index does not know) where they lie, through the C-STORE path;
    ``remove_purged``: remove the purge leftovers, as retention meant to;
    ``remove_superseded``: remove the superseded copies whose instance's indexed
    copy verifies (hashed even with ``quick``); the others are kept, with why.

    Nothing else is changed: non-DICOM files, missing and damaged files are
    reported again (missing ones need a resend or a restore).
    The import runs with the duplicate policy "keep" whatever the node's: an
    instance indexed meanwhile is never replaced by an orphan copy. The run is
    audited.
    """
    before = verify_store(db, store, quick=quick)
    summary: str | None = None
    if index_orphans:
        orphans = [store.instances / path for path in before.problems.get(ProblemKind.ORPHAN, ())]
        imported = import_files(
            db,
            store,
            orphans,
            policy=IngestPolicy(duplicate_policy="keep"),
            actor=actor,
            in_store=True,
        )
        summary = imported.describe().splitlines()[0]
    removed: int | None = None
    if remove_purged:
        removed = _remove_purge_leftovers(db, store, before.problems.get(ProblemKind.PURGED, ()))
    superseded_removed: int | None = None
    superseded_kept: tuple[tuple[str, str], ...] = ()
    if remove_superseded:
        superseded_removed, superseded_kept = _remove_superseded(
            db, store, before.problems.get(ProblemKind.SUPERSEDED, ())
        )
    after = verify_store(db, store, quick=quick)
    indexed = (
        before.count(ProblemKind.ORPHAN) - after.count(ProblemKind.ORPHAN) if index_orphans else 0
    )
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            application_activity_event(
                "integrity_repair",
                Actor.system(actor),
                None,  # the store as a whole
                outcome=AuditOutcome.SUCCESS if after.ok else AuditOutcome.MINOR_FAILURE,
                details={
                    "before": {kind.value: before.count(kind) for kind in ProblemKind},
                    "after": {kind.value: after.count(kind) for kind in ProblemKind},
                    "orphans_indexed": indexed,
                    "purge_leftovers_removed": removed or 0,
                    "superseded_removed": superseded_removed or 0,
                    "superseded_kept": len(superseded_kept),
                },
            ),
        )
    return RepairResult(
        before, after, indexed, summary, removed, superseded_removed, superseded_kept
    )


def _remove_purge_leftovers(db: Database, store: FileStore, paths: Sequence[str]) -> int:
    """Remove files of purged studies, each study under its row lock (as retention
    does): a C-STORE of the same study waits, so a file it renames into place
    and is about to commit is never the one removed here."""
    by_study: dict[str, list[str]] = {}
    for item in paths:
        by_study.setdefault(item.split("/", 1)[0], []).append(item)
    removed = 0
    for study_uid, study_paths in sorted(by_study.items()):
        with db.unit_of_work() as session:
            session.execute(
                select(DicomStudy.id)
                .where(DicomStudy.study_instance_uid == study_uid)
                .with_for_update()
            )
            purged_at = session.scalar(
                select(func.max(AuditEvent.timestamp)).where(
                    AuditEvent.event_code == STUDY_DELETED,
                    AuditEvent.study_instance_uid == study_uid,
                )
            )
            indexed = set(
                session.scalars(
                    select(DicomInstance.file_path).where(DicomInstance.file_path.in_(study_paths))
                )
            )
            for relative in study_paths:
                path = store.instances / relative
                if relative in indexed or purged_at is None:
                    continue
                if not _written_before(path, purged_at):
                    continue
                _remove_file(path)
                removed += 1
    return removed


def _remove_file(path: Path) -> None:
    """Remove a file of the store, then its series and study directories if that
    left them empty."""
    path.unlink(missing_ok=True)
    for directory in (path.parent, path.parent.parent):
        try:
            directory.rmdir()  # only when empty
        except OSError:
            break


KEPT_INDEXED_MISSING = "the indexed copy is missing, this copy may be the best one left"
KEPT_INDEXED_DAMAGED = (
    "the indexed copy does not verify (size or SHA-256 differs from the index), "
    "this copy may be the best one left"
)
KEPT_INDEXED_UNREADABLE = "the indexed copy cannot be read, this copy may be the best one left"
KEPT_INDEXED_IS_THIS = "the indexed path leads to this very file (a link)"
KEPT_INDEXED_LINK = "the indexed copy is reached through a symbolic link, check by hand"
KEPT_OTHER_STUDY = "its instance is indexed in another study, check by hand"
KEPT_INDEX_CHANGED = "the index changed meanwhile, no longer a superseded copy"
KEPT_AMBIGUOUS = "its header and its file name point at different instances, check by hand"


@dataclass(frozen=True, slots=True)
class _IndexedCopy:
    study_instance_uid: str
    file_path: str
    file_size: int
    sha256: str


def _remove_superseded(
    db: Database, store: FileStore, paths: Sequence[str]
) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Remove superseded copies whose instance's indexed copy verifies (size and
    content SHA-256, as verify checks them): never the only good copy.

    The indexed copies are hashed first, without a lock: on SQLite the study row
    lock is the one writer lock, and hashing under it would hold every C-STORE
    of the node for as long. Then each study is handled under its row lock,
    which every ingest of that study takes before it indexes or installs a
    file: the index is read again, and a copy is removed only if its instance's
    row and indexed file (inode, size, mtime) are still the ones that verified.
    A path the index now holds, or an instance it no longer knows, is not
    touched. An instance indexed in another study than the copy's directory is
    not what an interrupted replace leaves (a replace never moves an instance
    between studies): kept for a person. Returns how many were removed and the
    kept ones with why."""
    by_study: dict[str, list[str]] = {}
    for item in paths:
        by_study.setdefault(item.split("/", 1)[0], []).append(item)
    removed = 0
    kept: list[tuple[str, str]] = []
    for study_uid, study_paths in sorted(by_study.items()):
        candidates = {
            relative: _sop_uid_candidates(store.instances / relative, relative)
            for relative in study_paths
        }
        uids = sorted({uid for values in candidates.values() for uid in values})
        with db.read() as session:
            indexed = _indexed_copies(session, uids)
        verified: dict[str, tuple[_IndexedCopy, tuple[int, int, int]]] = {}
        for relative in sorted(study_paths):
            path = store.instances / relative
            copies = [indexed[uid] for uid in candidates[relative] if uid in indexed]
            # taken before hashing: a rewrite while it is hashed is caught too
            signature = _signature(store.instances / copies[0].file_path) if copies else None
            why = _superseded_problem(store, study_uid, relative, path, copies)
            if why is not None:
                kept.append((relative, why))
            elif signature is not None:
                verified[relative] = (copies[0], signature)
            else:
                kept.append((relative, KEPT_INDEX_CHANGED))
        if not verified:
            continue
        with db.unit_of_work() as session:
            session.execute(
                select(DicomStudy.id)
                .where(DicomStudy.study_instance_uid == study_uid)
                .with_for_update()
            )
            now_indexed = _indexed_copies(session, uids)
            for relative, (copy, signature) in sorted(verified.items()):
                path = store.instances / relative
                if not path.is_file():
                    continue  # gone meanwhile: nothing left to remove
                current = [now_indexed[uid] for uid in candidates[relative] if uid in now_indexed]
                if current != [copy] or _signature(store.instances / copy.file_path) != signature:
                    kept.append((relative, KEPT_INDEX_CHANGED))
                    continue
                _remove_file(path)
                removed += 1
    return removed, tuple(sorted(kept))


def _indexed_copies(session: Session, uids: Sequence[str]) -> dict[str, _IndexedCopy]:
    indexed: dict[str, _IndexedCopy] = {}
    for start in range(0, len(uids), _LOOKUP_BATCH):
        for sop_uid, row_study, file_path, file_size, sha256 in session.execute(
            select(
                DicomInstance.sop_instance_uid,
                DicomStudy.study_instance_uid,
                DicomInstance.file_path,
                DicomInstance.file_size,
                DicomInstance.sha256,
            )
            .join(DicomSeries, DicomSeries.id == DicomInstance.series_pk)
            .join(DicomStudy, DicomStudy.id == DicomSeries.study_pk)
            .where(DicomInstance.sop_instance_uid.in_(uids[start : start + _LOOKUP_BATCH]))
        ):
            indexed[sop_uid] = _IndexedCopy(row_study, file_path, file_size, sha256)
    return indexed


def _superseded_problem(
    store: FileStore, study_uid: str, relative: str, path: Path, copies: list[_IndexedCopy]
) -> str | None:
    """Why the superseded copy at ``relative`` must stay; None when its one
    indexed copy verifies."""
    if not copies or any(copy.file_path == relative for copy in copies):
        return KEPT_INDEX_CHANGED
    if any(copy.study_instance_uid != study_uid for copy in copies):
        return KEPT_OTHER_STUDY
    if len(copies) > 1:
        return KEPT_AMBIGUOUS
    return _indexed_copy_problem(store, copies[0], path)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _indexed_copy_problem(store: FileStore, copy: _IndexedCopy, superseded: Path) -> str | None:
    """Why the indexed copy cannot stand in for ``superseded``; None when it verifies."""
    path = store.instances / copy.file_path
    try:
        if path.resolve() == superseded.resolve():
            return KEPT_INDEXED_IS_THIS
        # verify lists no symbolic link (the indexed copy is "missing" to it); a
        # link, or one among its directories, may lead out of the store: never
        # let it stand in for a real file
        if _through_a_link(store, path):
            return KEPT_INDEXED_LINK
        found = digest_file(path)
    except FileNotFoundError:
        return KEPT_INDEXED_MISSING
    except OSError:
        return KEPT_INDEXED_UNREADABLE
    if found.size != copy.file_size or found.content_sha256 != copy.sha256:
        return KEPT_INDEXED_DAMAGED
    return None


def _through_a_link(store: FileStore, path: Path) -> bool:
    """Whether ``path`` or a directory between it and the store's instances is a
    symbolic link."""
    current = path
    while current != store.instances and current.is_relative_to(store.instances):
        if current.is_symlink():
            return True
        current = current.parent
    return False
