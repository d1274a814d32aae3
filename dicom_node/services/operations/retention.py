"""Retention: removing the images of old, fully reported studies, and trimming
the change feed.

Images. A study is purged only when everything about it is settled:

- its acquisition is complete and its newest instance (by each instance's own
  ``received_at``, quarantined ones included) arrived more than the retention
  period ago;
- it is matched (or corrected) to its order, so not in reconciliation, and not
  rejected (withdrawn, never silently deleted);
- it holds no quarantined instance: those are another patient's images waiting
  for a person, whatever the study's own status says;
- its order is in a final state with images (performed or discontinued, see
  docs/domain.md#order-states), and no MPPS of the order or the study is still IN PROGRESS;
- it has at least one report, every report is final and signed, and no
  (non-quarantined) instance arrived after the latest signature: images that
  came after the final report were never read (ingest only audits them as
  ``late_instance_after_report``), so they wait for an addendum;
- no worklist item of any queue is open on it, and no critical result of it
  waits to be communicated.

A purge removes the whole study's images: its series and instance rows and
their files. The study row stays, with its counts at zero (the model has no
"purged" flag: instance_count 0 on a complete study is what a purge looks
like; the audit trail says when and why), and so do the order, the reports,
worklist history and audit events. One audit event per study, DICOM "Study
Deleted" (110105), with what was removed.

Order of work, so that the index never points at a missing file: the rows go
in one committed transaction (the study row and its reports locked, every
condition checked again under the locks); then, in a second transaction
holding the study lock again, each file is removed unless a row points at its
path once more (the same instance was stored again after the purge committed).
A crash between the two leaves orphan files, which ``dicom-node verify
--repair`` removes; never a row without its file.

Concurrent C-STORE. Ingest locks the study row (PostgreSQL ``FOR NO KEY
UPDATE``; SQLite's writer lock) before it resolves the instance and series rows:
a C-STORE arriving while a purge transaction is open waits for it, then stores
the instance afresh (its series created again). A study a C-STORE holds is
skipped (``SKIP LOCKED``) and left to the next run.

Change feed. What the trim deletes is always a prefix of the feed (every
entry up to a sequence number), so ``feed_start`` (the lowest number left)
tells a client exactly whether it can resume: see
``services.changes.missed_trimmed_changes``.
The newest entry is never deleted: on SQLite an empty table would hand out
sequence numbers from 1 again, and a client resuming ``since=N`` would never
see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    ChangeLogEntry,
    CriticalResultCommunication,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    PerformedProcedureStep,
    Report,
    WorklistItem,
)
from dicom_node.domain.audit import Actor, SystemActor, study_deleted_event
from dicom_node.domain.enums import (
    OPEN_WORKLIST_STATUSES,
    Completeness,
    MetadataStatus,
    MppsStatus,
    ReportStatus,
    RequestStatus,
)
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import study_subject
from dicom_node.storage import FileStore

_KEEPABLE = (MetadataStatus.MATCHED.value, MetadataStatus.CORRECTED.value)
# an order in one of these states has had its exam, for good (docs/domain.md#order-states). A
# cancelled order carrying images is an inconsistency for a person: kept.
_ORDER_DONE = (RequestStatus.PERFORMED.value, RequestStatus.DISCONTINUED.value)
# paths per IN (...) list: well under SQLite's bound-parameter limit
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class PurgedStudy:
    """What one purge removed from the index; its files are still to go."""

    study_id: int
    instances: int
    series: int
    bytes: int
    file_paths: tuple[str, ...]


def _study_instances(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    """An instance of the study in the enclosing SELECT (from dicom_studies)
    meeting ``where``."""
    return exists().where(
        DicomSeries.study_pk == DicomStudy.id,
        DicomInstance.series_pk == DicomSeries.id,
        *where,
    )


def unread_late_images() -> ColumnElement[bool]:
    """An instance (not quarantined) received after the study's latest report
    signature: nobody read it. Compared inside the instance subquery, against
    the series' study, so the inner subquery correlates one level up only."""
    latest_signature = (
        select(func.max(Report.signed_at))
        .where(Report.dicom_study_id == DicomSeries.study_pk)
        .scalar_subquery()
    )
    return _study_instances(
        DicomInstance.quarantined.is_(False),
        DicomInstance.received_at > latest_signature,
    )


def purge_conditions(cutoff: datetime, *, late_images: bool = False) -> list[ColumnElement[bool]]:
    """The SQL conditions under which a study's images may be removed.

    ``late_images`` True swaps the last condition for its opposite: the
    studies that would go but for images that arrived after the final report.
    """
    has_images = exists().where(DicomSeries.study_pk == DicomStudy.id)
    newest_instance = (
        select(func.max(DicomInstance.received_at))
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .where(DicomSeries.study_pk == DicomStudy.id)
        .scalar_subquery()
    )
    quarantined = _study_instances(DicomInstance.quarantined.is_(True))
    order_done = exists().where(
        ImagingRequest.id == DicomStudy.imaging_request_id,
        ImagingRequest.status.in_(_ORDER_DONE),
    )
    mpps_in_progress = exists().where(
        PerformedProcedureStep.status == MppsStatus.IN_PROGRESS.value,
        or_(
            PerformedProcedureStep.study_instance_uid == DicomStudy.study_instance_uid,
            PerformedProcedureStep.imaging_request_id == DicomStudy.imaging_request_id,
        ),
    )
    has_report = exists().where(Report.dicom_study_id == DicomStudy.id)
    report_not_final = exists().where(
        Report.dicom_study_id == DicomStudy.id,
        or_(Report.status != ReportStatus.FINAL.value, Report.signed_at.is_(None)),
    )
    open_item = exists().where(
        WorklistItem.dicom_study_id == DicomStudy.id,
        WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
    )
    untold_critical = exists().where(
        CriticalResultCommunication.report_id == Report.id,
        Report.dicom_study_id == DicomStudy.id,
        CriticalResultCommunication.communicated_at.is_(None),
    )
    late = unread_late_images()
    return [
        DicomStudy.completeness == Completeness.COMPLETE.value,
        # cheap and indexed; the instances' own times below are what counts
        # (a quarantined arrival does not move last_received_at)
        DicomStudy.last_received_at.is_not(None),
        DicomStudy.last_received_at < cutoff,
        DicomStudy.metadata_status.in_(_KEEPABLE),
        has_images,
        newest_instance < cutoff,
        ~quarantined,
        order_done,
        ~mpps_in_progress,
        has_report,
        ~report_not_final,
        ~open_item,
        ~untold_critical,
        late if late_images else ~late,
    ]


def count_kept_for_late_images(session: Session, *, cutoff: datetime) -> int:
    """Studies past retention, reported and settled, kept only because images
    arrived after their final report (they wait for an addendum)."""
    return int(
        session.scalar(
            select(func.count(DicomStudy.id)).where(*purge_conditions(cutoff, late_images=True))
        )
        or 0
    )


def purge_next_study(
    session: Session,
    *,
    cutoff: datetime,
    after_id: int,
    retention_days: int,
    actor: str,
) -> tuple[int, PurgedStudy | None] | None:
    """Purge the next purgeable study with an id above ``after_id``.

    None when there is none left; else (its id, what was removed), the second
    None when a closer look under the locks kept it after all. The study row is
    taken FOR UPDATE SKIP LOCKED (PostgreSQL): a study another node purges, or
    a C-STORE is adding to, is left to the next run.
    """
    conditions = purge_conditions(cutoff)
    study = session.scalar(
        select(DicomStudy)
        .where(DicomStudy.id > after_id, *conditions)
        .order_by(DicomStudy.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if study is None:
        return None
    # Its reports locked, then everything checked again in a fresh statement:
    # a report that moved (an addendum started) before this point is seen, one
    # that moves after waits for this purge to commit.
    reports = list(
        session.scalars(select(Report).where(Report.dicom_study_id == study.id).with_for_update())
    )
    still = session.scalar(select(DicomStudy.id).where(DicomStudy.id == study.id, *conditions))
    if still is None:
        return study.id, None
    return study.id, _purge(session, study, reports, retention_days=retention_days, actor=actor)


def _purge(
    session: Session,
    study: DicomStudy,
    reports: list[Report],
    *,
    retention_days: int,
    actor: str,
) -> PurgedStudy:
    series_ids = select(DicomSeries.id).where(DicomSeries.study_pk == study.id)
    rows = session.execute(
        select(
            DicomInstance.file_path,
            DicomInstance.file_size,
            DicomInstance.sop_class_uid,
        ).where(DicomInstance.series_pk.in_(series_ids))
    ).all()
    series_count = int(
        session.scalar(select(func.count(DicomSeries.id)).where(DicomSeries.study_pk == study.id))
        or 0
    )
    sop_classes: dict[str, int] = {}
    for row in rows:
        sop_classes[row.sop_class_uid] = sop_classes.get(row.sop_class_uid, 0) + 1
    size = sum(int(row.file_size) for row in rows)
    session.execute(delete(DicomInstance).where(DicomInstance.series_pk.in_(series_ids)))
    session.execute(delete(DicomSeries).where(DicomSeries.study_pk == study.id))
    before = {"instance_count": study.instance_count, "series_count": study.series_count}
    # the ORM change puts the study in the change feed
    study.instance_count = 0
    study.series_count = 0
    record_audit_event(
        session,
        study_deleted_event(
            "study_images_purged",
            # retention is the node's own act (the scheduler's job)
            Actor.system(SystemActor(actor)),
            study.id,
            study_subject(session, study),
            reason=(
                f"retention: last image more than {retention_days} days ago, "
                "every report final and signed after it"
            ),
            details={
                "before": before,
                "after": {"instance_count": 0, "series_count": 0},
                "instances_deleted": len(rows),
                "series_deleted": series_count,
                "bytes_deleted": size,
                "sop_classes": sop_classes,
                "retention_days": retention_days,
                "last_received_at": study.last_received_at.isoformat()
                if study.last_received_at
                else None,
                "report_ids": [report.id for report in reports],
                "order_id": study.imaging_request_id,
            },
        ),
    )
    return PurgedStudy(
        study_id=study.id,
        instances=len(rows),
        series=series_count,
        bytes=size,
        file_paths=tuple(row.file_path for row in rows),
    )


def remove_purged_files(db: Database, store: FileStore, purged: PurgedStudy) -> int:
    """Remove the files of a committed purge; how many were removed.

    Under the study row lock (and, on SQLite, the one write lock), so no
    C-STORE of the study installs a file meanwhile; a path a row points at
    again (the same instance received since the purge) is kept.
    """
    removed = 0
    with db.unit_of_work() as session:
        session.execute(
            select(DicomStudy.id).where(DicomStudy.id == purged.study_id).with_for_update()
        )
        paths = list(purged.file_paths)
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            indexed = set(
                session.scalars(
                    select(DicomInstance.file_path).where(DicomInstance.file_path.in_(chunk))
                )
            )
            for relative in chunk:
                if relative in indexed:
                    continue
                path = store.absolute(relative)
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
        _remove_empty_directories(store, paths)
    return removed


def _remove_empty_directories(store: FileStore, paths: list[str]) -> None:
    """The emptied series and study directories (a non-empty one stays)."""
    directories: set[Path] = set()
    for relative in paths:
        parent = store.absolute(relative).parent
        directories.update((parent, parent.parent))
    # deepest first: a series directory before its study directory
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        if directory == store.instances or not directory.is_relative_to(store.instances):
            continue
        try:
            directory.rmdir()
        except OSError:
            continue  # not empty, or gone already


# --------------------------------------------------------------------------- change feed


def trim_change_log(session: Session, *, before: datetime) -> int:
    """Delete the feed up to the newest entry written before ``before``, never
    the newest entry of all; how many were deleted.

    By sequence number, not by time: ``at`` comes from the clock of whichever
    node wrote the entry, so it is not in ``seq`` order, and deleting by time
    could take an entry out of the middle of the feed, where a client resuming
    before it would never learn it missed it. What goes is always a prefix.
    """
    newest = session.scalar(select(func.max(ChangeLogEntry.seq)))
    if newest is None:
        return 0
    boundary = session.scalar(
        select(func.max(ChangeLogEntry.seq)).where(ChangeLogEntry.at < before)
    )
    if boundary is None:
        return 0
    result: Any = session.execute(
        delete(ChangeLogEntry).where(ChangeLogEntry.seq <= boundary, ChangeLogEntry.seq < newest)
    )
    return int(result.rowcount or 0)
