"""The reading worklist: people working items (claiming, releasing,
reassigning) and opening one with its patient's details.

Queues (docs/domain.md#worklist-item-states): acquisition | reading | review | critical_comm |
reconciliation. Items are made and closed in ``work_items.py`` (a completed
study puts one in the reading or reconciliation queue, an unscheduled MPPS one
in reconciliation, a submitted report one in review); the queues are listed by
``worklist_listing.py``; here people work them, each step a WORK_ITEM trigger.

A claim is one compare-and-set statement, ``UPDATE ... WHERE id = ? AND
status = 'pending' [AND version = ?]``: on PostgreSQL a second claimer blocks
on the row lock, then re-checks the WHERE against the committed row and
updates nothing; on SQLite writers are serialised. Either way exactly one of
two concurrent claims wins; the other gets 409 naming who holds the item.

A reading or review item of a study that is rejected, unmatched or in conflict
and not released to reading is not claimed (409, ``current_state`` = the
metadata status); rejecting a study cancels its open items (services/query/studies.py).
Claiming or reassigning a reading item hands the study's first-cycle draft to
the new holder (audited); a review item is never reassigned to the author of
the report under review unless ``report_self_review``.

Opening one item (``worklist_item_detail``) shows patient data and is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.changes import record_change
from dicom_node.db.models import DicomStudy, Report, ReportVersion, User, WorklistItem
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import TargetKind, patient_record_event, procedure_event
from dicom_node.domain.enums import (
    MetadataStatus,
    QueueType,
    ReportStatus,
    Role,
    WorklistStatus,
)
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import WORK_ITEM
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.workflow.study_reading import advance_study_reading, has_report
from dicom_node.services.workflow.worklist_listing import (
    ENTRY_COLUMNS,
    WorklistEntry,
    WorklistItemDetail,
    get_worklist_entry,
    load_entry,
    worklist_entries,
)

# radiologists claim reading work; reconciliation and acquisition items are
# worked through their own resources by schedulers and technologists
CLAIMABLE_QUEUES = frozenset({QueueType.READING, QueueType.REVIEW, QueueType.CRITICAL_COMM})


def worklist_item_detail(
    session: Session, *, item_id: int, principal: Principal, source_address: str | None
) -> WorklistItemDetail:
    """One item with its patient's demographics and report; audited as a patient
    record access (PS3.15 A.5.3, 110110)."""
    entry, row = load_entry(session, item_id, utcnow())
    birth_date, sex, issuer = row[len(ENTRY_COLUMNS) :]
    report_id: int | None = None
    report_status: str | None = None
    if entry.study is not None:
        found = session.execute(
            select(Report.id, Report.status)
            .where(Report.dicom_study_id == entry.study.id)
            .order_by(Report.id.desc())
            .limit(1)
        ).first()
        if found is not None:
            report_id, report_status = found
    _record_item_read(session, entry, principal, source_address)
    return WorklistItemDetail(
        entry=entry,
        patient_birth_date=birth_date,
        patient_sex=sex,
        issuer_of_patient_id=issuer,
        report_id=report_id,
        report_status=report_status,
    )


# --------------------------------------------------------------------------- claiming


def _holder(session: Session, item: WorklistItem) -> dict[str, Any]:
    username = (
        session.scalar(select(User.username).where(User.id == item.assigned_to_id))
        if item.assigned_to_id is not None
        else None
    )
    return {
        "id": item.id,
        "status": item.status,
        "version": item.version,
        "assigned_to_id": item.assigned_to_id,
        "assigned_to": username,
    }


def _feed_payload(item: WorklistItem) -> dict[str, Any]:
    # the same shape the ORM hooks write for worklist items (db/changes.py)
    return {
        "queue_type": item.queue_type,
        "status": item.status,
        "priority": item.priority,
        "assigned_to_id": item.assigned_to_id,
        "study_id": item.dicom_study_id,
        "order_id": item.imaging_request_id,
        "overdue": item.overdue,
        "version": item.version,
    }


def current_report_author(session: Session, report: Report) -> int:
    """Who writes the report's current text: its author, or once it has an
    addendum or correction, the radiologist who wrote the latest one."""
    if report.first_addendum_at is None:
        return report.radiologist_id
    author = session.scalar(
        select(ReportVersion.author_id)
        .where(
            ReportVersion.report_id == report.id,
            ReportVersion.kind.in_(("addendum", "correction")),
        )
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )
    return author if author is not None else report.radiologist_id


def _author_under_review(session: Session, study_id: int) -> int | None:
    report = session.scalar(
        select(Report).where(Report.dicom_study_id == study_id).order_by(Report.id.desc()).limit(1)
    )
    return current_report_author(session, report) if report is not None else None


# metadata states that keep a study off reading work unless it was released
UNREADABLE_METADATA = frozenset(
    {MetadataStatus.REJECTED.value, MetadataStatus.UNMATCHED.value, MetadataStatus.CONFLICT.value}
)


def require_readable_study(session: Session, *, study_id: int, doing: str) -> None:
    """409 (``current_state`` = the metadata status) for a rejected, unmatched or
    conflicting study that was not explicitly released to reading
    (docs/domain.md#study-metadata-states:
    unmatched studies stay off the reading worklist unless released)."""
    row = session.execute(
        select(DicomStudy.metadata_status, DicomStudy.released_to_reading).where(
            DicomStudy.id == study_id
        )
    ).first()
    if row is None:
        return
    metadata_status, released = row
    # a release to reading never outlives a rejection (withdrawn: nothing to read)
    if metadata_status == MetadataStatus.REJECTED.value or (
        metadata_status in UNREADABLE_METADATA and not released
    ):
        raise Conflict(
            f"study {study_id} is {metadata_status} and not released to reading: "
            f"it cannot be {doing}",
            current=metadata_status,
            existing={"study_id": study_id, "metadata_status": metadata_status},
        )


def holds_reading_item(session: Session, *, study_id: int, user_id: int) -> bool:
    """Whether the user holds the study's claimed reading item."""
    held = session.scalar(
        select(WorklistItem.id)
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.READING.value,
            WorklistItem.status == WorklistStatus.CLAIMED.value,
            WorklistItem.assigned_to_id == user_id,
        )
        .limit(1)
    )
    return held is not None


def is_first_cycle_draft(report: Report) -> bool:
    """A draft that has never been final (returned drafts included): its
    writer is whoever holds the study's reading item."""
    return report.status == ReportStatus.DRAFT.value and report.first_addendum_at is None


def _move_first_draft(
    session: Session,
    *,
    study_id: int,
    to_user_id: int,
    principal: Principal,
    source_address: str | None,
    entry: WorklistEntry,
) -> None:
    """The study's first-cycle draft follows its reading item to the new holder
    (docs/domain.md#report-states: a draft is written by the assigned radiologist only)."""
    draft = session.scalar(
        select(Report)
        .where(
            Report.dicom_study_id == study_id,
            Report.status == ReportStatus.DRAFT.value,
            Report.first_addendum_at.is_(None),
        )
        .with_for_update()
    )
    if draft is None or draft.radiologist_id == to_user_id:
        return
    previous = draft.radiologist_id
    draft.radiologist_id = to_user_id
    session.flush()
    record_audit_event(
        session,
        patient_record_event(
            "report_reassigned",
            user_actor(principal, source_address),
            TargetKind.REPORT,
            draft.id,
            entry.subject,
            details={
                "before": {"radiologist_id": previous},
                "after": {"radiologist_id": to_user_id},
            },
        ),
    )


def claim_worklist_item(
    session: Session,
    *,
    item_id: int,
    principal: Principal,
    expected_version: int | None = None,
    allow_self_review: bool = False,
    source_address: str | None = None,
) -> WorklistEntry:
    """Claim a pending item for the caller: one atomic compare-and-set.

    Raises Conflict (409) with the item's state and holder when it is not
    pending (or not at ``expected_version``): someone else got there first.
    """
    item = session.get(WorklistItem, item_id)
    if item is None:
        raise NotFound(f"no worklist item {item_id}")
    if item.queue_type not in CLAIMABLE_QUEUES:
        raise Forbidden(f"items of the {item.queue_type} queue are not claimed by radiologists")
    if (
        item.queue_type == QueueType.REVIEW.value
        and not allow_self_review
        and item.dicom_study_id is not None
        and _author_under_review(session, item.dicom_study_id) == principal.user_id
    ):
        raise Forbidden("the author of a report may not review it (report_self_review is off)")
    if (
        item.queue_type in (QueueType.READING.value, QueueType.REVIEW.value)
        and item.dicom_study_id is not None
    ):
        # The study row first, as ingest locks it before the study's items (a
        # conflict withdraws them): the other order could deadlock, and the
        # check below could pass on a study an ingest is making a conflict.
        session.execute(
            select(DicomStudy.id)
            .where(DicomStudy.id == item.dicom_study_id)
            .with_for_update(key_share=True)
        )
        require_readable_study(session, study_id=item.dicom_study_id, doing="claimed")
    now = utcnow()
    conditions = [
        WorklistItem.id == item_id,
        WorklistItem.status.in_([status.value for status in WORK_ITEM.sources("claim")]),
    ]
    if expected_version is not None:
        conditions.append(WorklistItem.version == expected_version)
    result = session.execute(
        update(WorklistItem)
        .where(*conditions)
        .values(
            status=WORK_ITEM.target("claim").value,
            assigned_to_id=principal.user_id,
            claimed_at=now,
            version=WorklistItem.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # the current row, whichever way the UPDATE went (not the identity map's copy)
    session.refresh(item)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        holder = _holder(session, item)
        if WORK_ITEM.allows("claim", item.status):
            message = f"worklist item {item_id} changed (version {item.version}); read it again"
        else:
            message = f"worklist item {item_id} is {item.status}" + (
                f" by {holder['assigned_to']}" if holder["assigned_to"] else ""
            )
        raise Conflict(message, current=item.status, existing=holder)
    # a Core UPDATE bypasses the ORM change-feed hooks: record it by hand
    record_change(
        session,
        entity="worklist_item",
        entity_id=item.id,
        action="updated",
        payload=_feed_payload(item),
        order_id=item.imaging_request_id,
    )
    entry, _ = load_entry(session, item_id, now)
    record_audit_event(
        session,
        procedure_event(
            "worklist_item_claimed",
            user_actor(principal, source_address),
            TargetKind.WORK_ITEM,
            entry.id,
            entry.subject,
            details={
                "before": {"status": WorklistStatus.PENDING.value, "assigned_to_id": None},
                "after": {"status": item.status, "assigned_to_id": principal.user_id},
            },
        ),
    )
    if item.queue_type == QueueType.READING.value and item.dicom_study_id is not None:
        advance_study_reading(
            session,
            study_id=item.dicom_study_id,
            trigger="claim_reading",
            actor=user_actor(principal, source_address),
            reason="reading item claimed",
        )
        entry, _ = load_entry(session, item_id, now)
        _move_first_draft(
            session,
            study_id=item.dicom_study_id,
            to_user_id=principal.user_id,
            principal=principal,
            source_address=source_address,
            entry=entry,
        )
    return entry


def _locked_item(session: Session, item_id: int) -> WorklistItem:
    item = session.get(WorklistItem, item_id, with_for_update=True, populate_existing=True)
    if item is None:
        raise NotFound(f"no worklist item {item_id}")
    return item


def may_reassign(principal: Principal) -> bool:
    return principal.role is Role.ADMIN or (
        principal.role is Role.RADIOLOGIST and principal.is_lead
    )


def release_worklist_item(
    session: Session, *, item_id: int, principal: Principal, source_address: str | None = None
) -> WorklistEntry:
    """claimed -> pending, by the claimant or by whoever may reassign work
    (admin, lead radiologist). A first-cycle draft of the claimant stays as it
    is: it moves to whoever claims the item next (``_move_first_draft``)."""
    item = _locked_item(session, item_id)
    if not WORK_ITEM.allows("release", item.status):
        raise Conflict(
            f"worklist item {item_id} is {item.status}, not claimed",
            current=item.status,
            existing=_holder(session, item),
        )
    if item.assigned_to_id != principal.user_id and not may_reassign(principal):
        raise Forbidden("only the radiologist holding the item, an admin or a lead may release it")
    before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
    item.status = WORK_ITEM.target("release").value
    item.assigned_to_id = None
    item.claimed_at = None
    item.version += 1
    session.flush()
    entry = get_worklist_entry(session, item_id=item_id)
    record_audit_event(
        session,
        procedure_event(
            "worklist_item_released",
            user_actor(principal, source_address),
            TargetKind.WORK_ITEM,
            entry.id,
            entry.subject,
            details={"before": before, "after": {"status": item.status, "assigned_to_id": None}},
        ),
    )
    if (
        item.queue_type == QueueType.READING.value
        and item.dicom_study_id is not None
        and not has_report(session, item.dicom_study_id)  # nobody is reading it any more
    ):
        advance_study_reading(
            session,
            study_id=item.dicom_study_id,
            trigger="release_reading",
            actor=user_actor(principal, source_address),
            reason="reading item released",
        )
    return get_worklist_entry(session, item_id=item_id)


def reassign_worklist_item(
    session: Session,
    *,
    item_id: int,
    user_id: int,
    principal: Principal,
    allow_self_review: bool = False,
    source_address: str | None = None,
) -> WorklistEntry:
    """Give an open item to an active radiologist (admin or lead radiologist).

    A first-cycle draft moves with a reading item, so the new holder carries on
    writing it (audited as well). A review item is never given to the author
    of the report under review unless ``report_self_review`` (422, user_id).
    """
    if not may_reassign(principal):
        raise Forbidden("only an admin or a lead radiologist may reassign work")
    target = session.get(User, user_id)
    if target is None:
        raise InvalidValue(f"no user {user_id}", field="user_id")
    if target.role != Role.RADIOLOGIST.value or not target.is_active:
        raise InvalidValue(f"user {user_id} is not an active radiologist", field="user_id")
    item = _locked_item(session, item_id)
    if not WORK_ITEM.allows("reassign", item.status):
        raise Conflict(
            f"worklist item {item_id} is {item.status}; only open items can be reassigned",
            current=item.status,
            existing=_holder(session, item),
        )
    if (
        item.queue_type == QueueType.REVIEW.value
        and not allow_self_review
        and item.dicom_study_id is not None
        and _author_under_review(session, item.dicom_study_id) == target.id
    ):
        raise InvalidValue(
            f"user {user_id} wrote the report under review and may not review it "
            "(report_self_review is off)",
            field="user_id",
        )
    before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
    item.status = WORK_ITEM.target("reassign").value
    item.assigned_to_id = target.id
    item.claimed_at = utcnow()
    item.version += 1
    session.flush()
    entry = get_worklist_entry(session, item_id=item_id)
    record_audit_event(
        session,
        procedure_event(
            "worklist_item_reassigned",
            user_actor(principal, source_address),
            TargetKind.WORK_ITEM,
            entry.id,
            entry.subject,
            details={
                "before": before,
                "after": {"status": item.status, "assigned_to_id": target.id},
            },
        ),
    )
    if item.queue_type == QueueType.READING.value and item.dicom_study_id is not None:
        advance_study_reading(
            session,
            study_id=item.dicom_study_id,
            trigger="claim_reading",
            actor=user_actor(principal, source_address),
            reason="reading item reassigned",
        )
        _move_first_draft(
            session,
            study_id=item.dicom_study_id,
            to_user_id=target.id,
            principal=principal,
            source_address=source_address,
            entry=entry,
        )
    return get_worklist_entry(session, item_id=item_id)


def record_item_reads(
    session: Session,
    item_ids: Sequence[int],
    *,
    principal: Principal,
    source_address: str | None = None,
) -> None:
    """``worklist_item_read`` for each item of ``item_ids`` the principal may
    see, as ``worklist_item_detail`` records it: an item shown on its own (a
    subscription's record, with its patient) is audited whichever way it is
    reached."""
    for entry in worklist_entries(session, principal=principal, item_ids=item_ids):
        if entry is not None:
            _record_item_read(session, entry, principal, source_address)


def _record_item_read(
    session: Session, entry: WorklistEntry, principal: Principal, source_address: str | None
) -> None:
    record_audit_event(
        session,
        patient_record_event(
            "worklist_item_read",
            user_actor(principal, source_address),
            TargetKind.WORK_ITEM,
            entry.id,
            entry.subject,
            details={"queue_type": entry.queue_type, "status": entry.status},
        ),
    )
