"""`dicom-node import` and `dicom-node reindex`: files through the C-STORE path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor, transfer_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.part10 import HEAD_LENGTH, has_part10_prefix
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.storage import FileStore

_REFUSED = (
    StoreOutcome.REJECTED,
    StoreOutcome.MISMATCH,
    StoreOutcome.FAILED,
    StoreOutcome.TOO_LARGE,
)


@dataclass
class ImportSummary:
    outcomes: Counter[str] = field(default_factory=Counter)
    # reason -> how many files, and the first few paths as examples
    refused: dict[str, list[str]] = field(default_factory=dict)
    unreadable: int = 0
    skipped: int = 0  # DICOMDIR media indexes and files that are not DICOM Part 10

    @property
    def total(self) -> int:
        return sum(self.outcomes.values()) + self.unreadable + self.skipped

    @property
    def ok(self) -> bool:
        return self.unreadable == 0 and not any(self.outcomes[o.value] for o in _REFUSED)

    def describe(self) -> str:
        counts = ", ".join(
            f"{self.outcomes[o.value]} {o.value}" for o in StoreOutcome if self.outcomes[o.value]
        )
        lines = [f"{self.total} files: {counts or 'nothing stored'}"]
        if self.unreadable:
            lines.append(f"  {self.unreadable} could not be read")
        if self.skipped:
            lines.append(f"  {self.skipped} skipped (DICOMDIR or not DICOM Part 10)")
        for reason, paths in sorted(self.refused.items()):
            lines.append(f"  refused ({len(paths)}): {reason}, e.g. {paths[0]}")
        return "\n".join(lines)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def import_files(
    db: Database,
    store: FileStore,
    files: list[Path],
    *,
    policy: IngestPolicy,
    actor: SystemActor,
    progress: Callable[[int], None] | None = None,
    in_store: bool = False,
) -> ImportSummary:
    """Store each file as C-STORE would. ``in_store``: the files are the store's
    own (reindex): each is indexed where it lies, none is copied."""
    summary = ImportSummary()
    for done, path in enumerate(files, start=1):
        if path.name.upper() == "DICOMDIR":
            summary.skipped += 1
            continue
        try:
            # the file itself is mapped by store_instance, never read whole: it may
            # be over max_dataset_bytes (refused, counted) or a deflate bomb
            with path.open("rb") as file:
                prefix = file.read(HEAD_LENGTH)
        except OSError:
            summary.unreadable += 1
            continue
        if not has_part10_prefix(prefix):
            summary.skipped += 1  # a README, a viewer on the CD...: not ours to refuse
            continue
        result = store_instance(
            db,
            store,
            part10=path,
            source=Source(actor=actor),
            policy=policy,
            stored_at=path.resolve() if in_store else None,
        )
        summary.outcomes[result.outcome.value] += 1
        if result.outcome in _REFUSED:
            summary.refused.setdefault(result.reason or "unknown", []).append(str(path))
        if progress is not None:
            progress(done)
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            transfer_event(
                "instances_imported",
                Actor.system(actor),
                None,  # many files, many studies: the counts say what came in
                outcome=AuditOutcome.SUCCESS if summary.ok else AuditOutcome.MINOR_FAILURE,
                details={
                    "counts": dict(summary.outcomes),
                    "unreadable": summary.unreadable,
                    "skipped": summary.skipped,
                },
            ),
        )
    return summary
