"""The reading worklist: listing the queues, claiming, releasing, reassigning.

Queues (docs/domain.md#worklist-item-states): acquisition | reading | review | critical_comm |
reconciliation. Items are made elsewhere (a completed study puts one in the
reading or reconciliation queue, an unscheduled MPPS one in reconciliation, a
submitted report one in review); here people work them.

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

Listing a queue is one SELECT (items ordered through ``ix_worklist_items_queue``,
then joined to study, patient, order and user for the page only) and is not
audited per call: it is the screen radiologists poll, and an audit row per
refresh would make the audit log useless and the queue slow. Opening one item
(``worklist_item_detail``) shows patient data and is audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, union_all, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.db.changes import record_change
from dicom_node.db.models import DicomStudy, Patient, Report, ReportVersion, User, WorklistItem
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import (
    MetadataStatus,
    Priority,
    QueueType,
    ReportStatus,
    Role,
    StudyStatus,
    WorklistStatus,
)
from dicom_node.domain.errors import Conflict, Forbidden, InvalidValue, NotFound
from dicom_node.domain.matching import PRIORITY_RANK
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event

OPEN_STATUSES = (WorklistStatus.PENDING, WorklistStatus.CLAIMED)
# radiologists claim reading work; reconciliation and acquisition items are
# worked through their own resources by schedulers and technologists
CLAIMABLE_QUEUES = frozenset({QueueType.READING, QueueType.REVIEW, QueueType.CRITICAL_COMM})


@dataclass(frozen=True, slots=True)
class StudySummary:
    id: int
    study_instance_uid: str
    accession_number: str | None
    modality: str | None
    description: str | None
    status: str
    patient_name: str | None
    patient_id: str | None
    series_count: int
    instance_count: int


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    id: int
    queue_type: str
    status: str
    priority: str
    due_at: datetime | None
    # stored flag (set by escalation) or past due now: see _is_overdue
    overdue: bool
    assigned_to_id: int | None
    assigned_to_username: str | None
    claimed_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    version: int
    order_id: int | None
    performed_procedure_step_id: int | None
    notes: str | None
    study: StudySummary | None


@dataclass(frozen=True, slots=True)
class WorklistItemDetail:
    entry: WorklistEntry
    patient_birth_date: str | None
    patient_sex: str | None
    issuer_of_patient_id: str | None
    report_id: int | None
    report_status: str | None


@dataclass(frozen=True, slots=True)
class WorklistPage:
    items: list[WorklistEntry]
    total: int


@dataclass(frozen=True, slots=True)
class WorklistFilter:
    """What ``GET /api/worklist`` narrows by; ``assigned_to`` is a user id,
    ``UNASSIGNED`` for nobody, or None for anyone."""

    queue: QueueType = QueueType.READING
    statuses: tuple[WorklistStatus, ...] = OPEN_STATUSES
    assigned_to: int | None = None
    modality: str | None = None
    priority: Priority | None = None
    overdue: bool | None = None


UNASSIGNED = -1


# --------------------------------------------------------------------------- reading


def _overdue_condition(now: datetime) -> ColumnElement[bool]:
    return or_(
        WorklistItem.overdue.is_(True),
        and_(WorklistItem.completed_at.is_(None), WorklistItem.due_at < now),
        and_(
            WorklistItem.completed_at.is_not(None),
            WorklistItem.completed_at > WorklistItem.due_at,
        ),
    )


def _is_overdue(
    stored: bool, due_at: datetime | None, completed_at: datetime | None, now: datetime
) -> bool:
    """Overdue now, not only when the escalation job last looked: an open item
    past its due time, or one completed after it."""
    if stored:
        return True
    if due_at is None:
        return False
    return (completed_at or now) > due_at


def _order_by() -> tuple[Any, ...]:
    # ix_worklist_items_queue is (queue_type, status, priority_rank, due_at)
    return (
        WorklistItem.priority_rank,
        WorklistItem.due_at.asc().nulls_last(),
        WorklistItem.id,
    )


_ENTRY_COLUMNS = (
    WorklistItem.id,
    WorklistItem.queue_type,
    WorklistItem.status,
    WorklistItem.priority,
    WorklistItem.due_at,
    WorklistItem.overdue,
    WorklistItem.assigned_to_id,
    User.username,
    WorklistItem.claimed_at,
    WorklistItem.completed_at,
    WorklistItem.created_at,
    WorklistItem.version,
    WorklistItem.imaging_request_id,
    WorklistItem.performed_procedure_step_id,
    WorklistItem.notes,
    DicomStudy.id,
    DicomStudy.study_instance_uid,
    DicomStudy.accession_number,
    DicomStudy.modality_type,
    DicomStudy.study_description,
    DicomStudy.status,
    Patient.patient_name,
    Patient.patient_id,
    DicomStudy.series_count,
    DicomStudy.instance_count,
)


def _entry(row: Sequence[Any], now: datetime) -> WorklistEntry:
    (
        item_id,
        queue_type,
        status,
        priority,
        due_at,
        stored_overdue,
        assigned_to_id,
        username,
        claimed_at,
        completed_at,
        created_at,
        version,
        order_id,
        mpps_id,
        notes,
        study_id,
        study_uid,
        accession,
        modality,
        description,
        study_status,
        patient_name,
        patient_id,
        series_count,
        instance_count,
    ) = row[: len(_ENTRY_COLUMNS)]
    study = (
        StudySummary(
            id=study_id,
            study_instance_uid=study_uid,
            accession_number=accession,
            modality=modality,
            description=description,
            status=study_status,
            patient_name=patient_name,
            patient_id=patient_id,
            series_count=series_count,
            instance_count=instance_count,
        )
        if study_id is not None
        else None
    )
    return WorklistEntry(
        id=item_id,
        queue_type=queue_type,
        status=status,
        priority=priority,
        due_at=due_at,
        overdue=_is_overdue(bool(stored_overdue), due_at, completed_at, now),
        assigned_to_id=assigned_to_id,
        assigned_to_username=username,
        claimed_at=claimed_at,
        completed_at=completed_at,
        created_at=created_at,
        version=version,
        order_id=order_id,
        performed_procedure_step_id=mpps_id,
        notes=notes,
        study=study,
    )


def _with_joins(query: Any) -> Any:
    return (
        query.outerjoin(DicomStudy, DicomStudy.id == WorklistItem.dicom_study_id)
        .outerjoin(Patient, Patient.id == DicomStudy.patient_pk)
        .outerjoin(User, User.id == WorklistItem.assigned_to_id)
    )


def _narrowing(query: WorklistFilter, now: datetime) -> list[ColumnElement[bool]]:
    """The filters besides queue and status."""
    conditions: list[ColumnElement[bool]] = []
    if query.modality is not None:
        conditions.append(DicomStudy.modality_type == query.modality)
    if query.assigned_to == UNASSIGNED:
        conditions.append(WorklistItem.assigned_to_id.is_(None))
    elif query.assigned_to is not None:
        conditions.append(WorklistItem.assigned_to_id == query.assigned_to)
    if query.priority is not None:
        conditions.append(WorklistItem.priority_rank == PRIORITY_RANK[query.priority])
    if query.overdue is True:
        conditions.append(_overdue_condition(now))
    elif query.overdue is False:
        conditions.append(~_overdue_condition(now))
    return conditions


def _matching(columns: Any, query: WorklistFilter) -> Any:
    statement = select(*columns)
    if query.modality is not None:
        statement = statement.join(DicomStudy, DicomStudy.id == WorklistItem.dicom_study_id)
    return statement


def list_worklist(
    session: Session,
    *,
    query: WorklistFilter,
    offset: int,
    limit: int,
    now: datetime | None = None,
) -> WorklistPage:
    """One page of a queue, STAT -> urgent -> routine, then earliest due first.

    The page is one statement: for each wanted status, the first
    ``offset + limit`` item ids in queue order are read straight off
    ``ix_worklist_items_queue`` (queue_type, status, priority_rank, due_at), so
    no sort of the whole queue is needed (a plain ``status IN (...)`` would
    sort every open item on every call); the candidates are merged, the page
    cut, and only its rows joined to study, patient and assignee. ``total`` is
    a second, index-only count.
    """
    moment = now or utcnow()
    narrowing = _narrowing(query, moment)
    statuses = [status.value for status in dict.fromkeys(query.statuses)]
    per_status = [
        _matching((WorklistItem.id, WorklistItem.priority_rank, WorklistItem.due_at), query)
        .where(WorklistItem.queue_type == query.queue.value, WorklistItem.status == status)
        .where(*narrowing)
        .order_by(*_order_by())
        .limit(offset + limit)
        .subquery()
        for status in statuses
    ]
    candidates = (
        per_status[0]
        if len(per_status) == 1
        else union_all(*(select(part) for part in per_status)).subquery()
    )
    page = (
        select(candidates.c.id)
        .order_by(
            candidates.c.priority_rank,
            candidates.c.due_at.asc().nulls_last(),
            candidates.c.id,
        )
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    statement = _with_joins(
        select(*_ENTRY_COLUMNS).join(page, page.c.id == WorklistItem.id)
    ).order_by(*_order_by())
    rows = session.execute(statement).all()
    total = session.scalar(
        _matching((func.count(),), query)
        .select_from(WorklistItem)
        .where(WorklistItem.queue_type == query.queue.value, WorklistItem.status.in_(statuses))
        .where(*narrowing)
    )
    return WorklistPage(items=[_entry(row, moment) for row in rows], total=int(total or 0))


def _load_entry(session: Session, item_id: int, now: datetime) -> tuple[WorklistEntry, Row[Any]]:
    statement = _with_joins(
        select(
            *_ENTRY_COLUMNS,
            Patient.patient_birth_date,
            Patient.patient_sex,
            Patient.issuer_of_patient_id,
        ).where(WorklistItem.id == item_id)
    )
    row = session.execute(statement).first()
    if row is None:
        raise NotFound(f"no worklist item {item_id}")
    return _entry(row, now), row


def get_worklist_entry(session: Session, *, item_id: int) -> WorklistEntry:
    """The item as the list shows it (not audited: no more than the list shows)."""
    entry, _ = _load_entry(session, item_id, utcnow())
    return entry


def worklist_item_detail(
    session: Session, *, item_id: int, principal: Principal, source_address: str | None
) -> WorklistItemDetail:
    """One item with its patient's demographics and report; audited as a patient
    record access (PS3.15 A.5.3, 110110)."""
    entry, row = _load_entry(session, item_id, utcnow())
    birth_date, sex, issuer = row[len(_ENTRY_COLUMNS) :]
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
    _audit(
        session,
        principal,
        source_address,
        action="worklist_item_read",
        code=AuditEventCode.PATIENT_RECORD,
        entry=entry,
        details={"queue_type": entry.queue_type, "status": entry.status},
    )
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
    _audit(
        session,
        principal,
        source_address,
        action="report_reassigned",
        code=AuditEventCode.PATIENT_RECORD,
        entry=entry,
        target=("Report", draft.id),
        details={
            "before": {"radiologist_id": previous},
            "after": {"radiologist_id": to_user_id},
        },
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
        WorklistItem.status == WorklistStatus.PENDING.value,
    ]
    if expected_version is not None:
        conditions.append(WorklistItem.version == expected_version)
    result = session.execute(
        update(WorklistItem)
        .where(*conditions)
        .values(
            status=WorklistStatus.CLAIMED.value,
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
        if item.status == WorklistStatus.PENDING.value:
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
    entry, _ = _load_entry(session, item_id, now)
    _audit(
        session,
        principal,
        source_address,
        action="worklist_item_claimed",
        entry=entry,
        details={
            "before": {"status": WorklistStatus.PENDING.value, "assigned_to_id": None},
            "after": {"status": item.status, "assigned_to_id": principal.user_id},
        },
    )
    if item.queue_type == QueueType.READING.value and item.dicom_study_id is not None:
        move_study_status(
            session,
            study_id=item.dicom_study_id,
            to=StudyStatus.READING,
            allowed_from=(StudyStatus.ACQUIRED,),
            principal=principal,
            source_address=source_address,
            reason="reading item claimed",
        )
        entry, _ = _load_entry(session, item_id, now)
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
    if item.status != WorklistStatus.CLAIMED.value:
        raise Conflict(
            f"worklist item {item_id} is {item.status}, not claimed",
            current=item.status,
            existing=_holder(session, item),
        )
    if item.assigned_to_id != principal.user_id and not may_reassign(principal):
        raise Forbidden("only the radiologist holding the item, an admin or a lead may release it")
    before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
    item.status = WorklistStatus.PENDING.value
    item.assigned_to_id = None
    item.claimed_at = None
    item.version += 1
    session.flush()
    entry = get_worklist_entry(session, item_id=item_id)
    _audit(
        session,
        principal,
        source_address,
        action="worklist_item_released",
        entry=entry,
        details={"before": before, "after": {"status": item.status, "assigned_to_id": None}},
    )
    if item.queue_type == QueueType.READING.value and item.dicom_study_id is not None:
        has_report = session.scalar(
            select(Report.id).where(Report.dicom_study_id == item.dicom_study_id).limit(1)
        )
        if has_report is None:  # nobody is reading it any more
            move_study_status(
                session,
                study_id=item.dicom_study_id,
                to=StudyStatus.ACQUIRED,
                allowed_from=(StudyStatus.READING,),
                principal=principal,
                source_address=source_address,
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
    if item.status not in {status.value for status in OPEN_STATUSES}:
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
    item.status = WorklistStatus.CLAIMED.value
    item.assigned_to_id = target.id
    item.claimed_at = utcnow()
    item.version += 1
    session.flush()
    entry = get_worklist_entry(session, item_id=item_id)
    _audit(
        session,
        principal,
        source_address,
        action="worklist_item_reassigned",
        entry=entry,
        details={"before": before, "after": {"status": item.status, "assigned_to_id": target.id}},
    )
    if item.queue_type == QueueType.READING.value and item.dicom_study_id is not None:
        move_study_status(
            session,
            study_id=item.dicom_study_id,
            to=StudyStatus.READING,
            allowed_from=(StudyStatus.ACQUIRED,),
            principal=principal,
            source_address=source_address,
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


# --------------------------------------------------------------------------- for reports


def move_study_status(
    session: Session,
    *,
    study_id: int,
    to: StudyStatus,
    allowed_from: Iterable[StudyStatus],
    principal: Principal,
    source_address: str | None,
    reason: str,
) -> bool:
    """DicomStudy.status transition (audited); a no-op from any other state."""
    study = session.get(DicomStudy, study_id, with_for_update=True, populate_existing=True)
    if study is None or study.status not in {status.value for status in allowed_from}:
        return False
    before = study.status
    study.status = to.value
    patient_id = session.scalar(select(Patient.patient_id).where(Patient.id == study.patient_pk))
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.PROCEDURE_RECORD,
            action=f"study_{to.value}",
            actor=principal.username,
            actor_user_id=principal.user_id,
            actor_role=principal.role.value,
            source_address=source_address,
            target_class="DicomStudy",
            target_id=str(study.id),
            patient_id=patient_id,
            study_instance_uid=study.study_instance_uid,
            accession_number=study.accession_number,
            reason=reason,
            details={"before": {"status": before}, "after": {"status": study.status}},
        ),
    )
    return True


def open_items(session: Session, *, study_id: int, queue: QueueType) -> list[WorklistItem]:
    return list(
        session.scalars(
            select(WorklistItem)
            .where(
                WorklistItem.dicom_study_id == study_id,
                WorklistItem.queue_type == queue.value,
                WorklistItem.status.in_([status.value for status in OPEN_STATUSES]),
            )
            .order_by(WorklistItem.id)
            .with_for_update()
        )
    )


def close_items(
    session: Session,
    *,
    study_id: int,
    queue: QueueType,
    to: WorklistStatus,
    principal: Principal,
    source_address: str | None,
    reason: str,
) -> int:
    """Complete (or cancel) the study's open items of a queue; audited each."""
    now = utcnow()
    closed = 0
    for item in open_items(session, study_id=study_id, queue=queue):
        before = {"status": item.status, "assigned_to_id": item.assigned_to_id}
        item.status = to.value
        if to is WorklistStatus.COMPLETED:
            item.completed_at = now
            item.assigned_to_id = item.assigned_to_id or principal.user_id
        item.version += 1
        session.flush()
        _audit(
            session,
            principal,
            source_address,
            action=f"worklist_item_{to.value}",
            entry=get_worklist_entry(session, item_id=item.id),
            reason=reason,
            details={
                "before": before,
                "after": {"status": item.status, "assigned_to_id": item.assigned_to_id},
            },
        )
        closed += 1
    return closed


def ensure_review_item(
    session: Session,
    *,
    study_id: int,
    principal: Principal,
    source_address: str | None,
) -> WorklistItem:
    """The study's open review item; made (pending, with the reading item's
    priority and due time) if there is none."""
    existing = open_items(session, study_id=study_id, queue=QueueType.REVIEW)
    if existing:
        return existing[0]
    reading = session.scalar(
        select(WorklistItem)
        .where(
            WorklistItem.dicom_study_id == study_id,
            WorklistItem.queue_type == QueueType.READING.value,
        )
        .order_by(WorklistItem.id.desc())
        .limit(1)
    )
    order_id = session.scalar(
        select(DicomStudy.imaging_request_id).where(DicomStudy.id == study_id)
    )
    item = WorklistItem(
        imaging_request_id=reading.imaging_request_id if reading else order_id,
        dicom_study_id=study_id,
        queue_type=QueueType.REVIEW.value,
        status=WorklistStatus.PENDING.value,
        priority=reading.priority if reading else Priority.ROUTINE.value,
        priority_rank=reading.priority_rank if reading else PRIORITY_RANK[Priority.ROUTINE],
        due_at=reading.due_at if reading else None,
    )
    session.add(item)
    session.flush()
    _audit(
        session,
        principal,
        source_address,
        action="worklist_item_created",
        entry=get_worklist_entry(session, item_id=item.id),
        details={"before": None, "after": {"queue_type": item.queue_type, "status": item.status}},
    )
    return item


# --------------------------------------------------------------------------- audit


def _audit(
    session: Session,
    principal: Principal,
    source_address: str | None,
    *,
    action: str,
    entry: WorklistEntry,
    details: dict[str, Any],
    code: AuditEventCode = AuditEventCode.PROCEDURE_RECORD,
    target: tuple[str, int] | None = None,
    reason: str | None = None,
) -> None:
    target_class, target_id = target or ("WorklistItem", entry.id)
    record_audit_event(
        session,
        AuditRecord(
            event_code=code,
            action=action,
            actor=principal.username,
            actor_user_id=principal.user_id,
            actor_role=principal.role.value,
            source_address=source_address,
            target_class=target_class,
            target_id=str(target_id),
            patient_id=entry.study.patient_id if entry.study else None,
            study_instance_uid=entry.study.study_instance_uid if entry.study else None,
            accession_number=entry.study.accession_number if entry.study else None,
            reason=reason,
            details=details,
        ),
    )
