"""`dicom-node verify`: does the index agree with the files in the store?

Five kinds of disagreement (paths are relative to the store's ``instances/`` and
made only of UIDs, so a report names no patient):

- missing: an index row whose file is gone (an acknowledged image is lost);
- orphan: a file under ``instances/`` that no row points at (an interrupted
  ingest, or a file put there by hand) - ``--repair`` indexes it;
- size: the file's length differs from the indexed ``file_size``;
- purged: an orphan of a study whose images retention purged (Study Deleted
  audited after the file was written): a purge interrupted between removing the
  rows and the files - ``--repair`` removes it, as the purge meant to;
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

from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, DicomInstance, DicomStudy
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.audit import record_audit_event
from dicom_node.services.importing import import_files
from dicom_node.services.ingest import IngestPolicy
from dicom_node.storage import FileStore

CHUNK = 1 << 20
# the file meta is a few hundred bytes; a head this long holds it in practice
_HEAD = 64 * 1024
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
    find where its dataset starts): it then matches no index digest.
    """
    whole = hashlib.sha256()
    content = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        head = source.read(_HEAD)
        offset = _content_offset(head, source)
        data = head
        while data:
            whole.update(data)
            if offset is not None and size + len(data) > offset:
                content.update(memoryview(data)[max(0, offset - size) :])
            size += len(data)
            if copy_to is not None:
                copy_to.write(data)
            data = source.read(CHUNK)
    return FileDigest(size, whole.hexdigest(), content.hexdigest() if offset is not None else None)


def _content_offset(head: bytes, source: BinaryIO) -> int | None:
    """Where the dataset starts; reads no further than ``head`` unless the file
    meta is longer than it (then the whole file is read once more)."""
    try:
        offset = dataset_offset(head)
    except InvalidValue:
        offset = None
    if offset is not None and (len(head) < _HEAD or offset + 8 <= len(head)):
        return offset
    if len(head) < _HEAD:
        return None  # the whole file was read and it is not Part 10
    # file meta beyond the head (or ending exactly at it): decide on the whole file
    position = source.tell()
    source.seek(0)
    everything = source.read()
    source.seek(position)
    try:
        return dataset_offset(everything)
    except InvalidValue:
        return None


class ProblemKind(StrEnum):
    MISSING = "missing"
    ORPHAN = "orphan"
    PURGED = "purged"
    SIZE = "size"
    CONTENT = "content"


PROBLEM_TITLES = {
    ProblemKind.MISSING: "indexed but the file is missing",
    ProblemKind.ORPHAN: "file in the store that the index does not know (orphan)",
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
    import_summary: str
    purge_leftovers_removed: int = 0

    def describe(self) -> str:
        left = self.after.count(ProblemKind.ORPHAN)
        return "\n".join(
            [
                self.before.describe(),
                f"repair: {self.indexed} orphan files indexed ({self.import_summary}), "
                f"{left} orphans left, {self.purge_leftovers_removed} purge leftovers removed",
                "after repair:",
                self.after.describe(),
            ]
        )


def verify_store(
    db: Database,
    store: FileStore,
    *,
    quick: bool = False,
) -> IntegrityReport:
    """Compare every index row with its file, and every file with the index.

    ``quick`` compares sizes only (no file is read)."""
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
    purged = _purge_leftovers(db, store, orphans)
    orphans = [path for path in orphans if path not in purged]
    still_indexed = _indexed_among(db, missing)
    missing = [
        path for path in missing if path in still_indexed and not (store.instances / path).is_file()
    ]
    problems = {
        ProblemKind.MISSING: tuple(missing),
        ProblemKind.ORPHAN: tuple(orphans),
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


def _purge_leftovers(db: Database, store: FileStore, orphans: list[str]) -> set[str]:
    """Orphans that retention meant to remove: their study (the first path part)
    had its images purged (audited as Study Deleted) after the file was written.
    A file written after the purge is a new arrival, not a leftover."""
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
        if when is None:
            continue
        try:
            written = datetime.fromtimestamp((store.instances / path).stat().st_mtime, UTC)
        except FileNotFoundError:
            continue
        if written <= when:
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


def repair_orphans(
    db: Database,
    store: FileStore,
    *,
    policy: IngestPolicy,
    actor: str,
    quick: bool = False,
) -> RepairResult:
    """Index the orphan files through the C-STORE path, where they lie, and finish
    interrupted purges.

    An orphan file the import cannot index (not DICOM, a UID the index refuses,
    a copy of an instance indexed elsewhere) stays and is reported again. A purge
    leftover (see ``_purge_leftovers``) is removed as retention meant to, not
    brought back. Missing files cannot be repaired here: they need a resend or a
    restore. The run is audited.
    """
    before = verify_store(db, store, quick=quick)
    orphans = [store.instances / path for path in before.problems.get(ProblemKind.ORPHAN, ())]
    summary = import_files(db, store, orphans, policy=policy, actor=actor, in_store=True)
    removed = _remove_purge_leftovers(db, store, before.problems.get(ProblemKind.PURGED, ()))
    after = verify_store(db, store, quick=quick)
    indexed = before.count(ProblemKind.ORPHAN) - after.count(ProblemKind.ORPHAN)
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.APPLICATION_ACTIVITY,
                action="integrity_repair",
                outcome=AuditOutcome.SUCCESS if after.ok else AuditOutcome.MINOR_FAILURE,
                actor=actor,
                details={
                    "before": {kind.value: before.count(kind) for kind in ProblemKind},
                    "after": {kind.value: after.count(kind) for kind in ProblemKind},
                    "orphans_indexed": indexed,
                    "purge_leftovers_removed": removed,
                },
            ),
        )
    return RepairResult(before, after, indexed, summary.describe().splitlines()[0], removed)


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
                try:
                    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                except FileNotFoundError:
                    continue
                if relative in indexed or purged_at is None or written > purged_at:
                    continue
                path.unlink(missing_ok=True)
                removed += 1
                for directory in (path.parent, path.parent.parent):
                    try:
                        directory.rmdir()  # only when empty
                    except OSError:
                        break
    return removed
