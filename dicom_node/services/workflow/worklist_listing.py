"""Listing the work queues (docs/domain.md#worklist-item-states): one page of
a queue, STAT -> urgent -> routine, then earliest due first, and one item as
the list shows it.

Listing a queue is one SELECT (items ordered through ``ix_worklist_items_queue``,
then joined to study, patient, order and user for the page only) and is not
audited per call: it is the screen radiologists poll, and an audit row per
refresh would make the audit log useless and the queue slow. Opening one item
with its patient's details (``reading_worklist.worklist_item_detail``) is
audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dicom_node.db.models import DicomStudy, Patient, User, WorklistItem
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import NO_SUBJECT, Subject
from dicom_node.domain.enums import Priority, QueueType, WorklistStatus
from dicom_node.domain.errors import NotFound
from dicom_node.domain.matching import PRIORITY_RANK
from dicom_node.domain.permissions import Principal
from dicom_node.services.access.visibility import sees_every_order, visible_order_ids

OPEN_STATUSES = (WorklistStatus.PENDING, WorklistStatus.CLAIMED)


@dataclass(frozen=True, slots=True)
class WorklistStudy:
    """The study of a reading-worklist entry, as the worklist shows it (a study
    found by search: query/studies.py StudySummary)."""

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
    # StudyDate as sent (DA, YYYYMMDD) and the study's BodyPartExamined
    study_date: str | None = None
    body_part: str | None = None


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
    study: WorklistStudy | None

    @property
    def subject(self) -> Subject:
        """Whose record the entry is, for the audit trail."""
        if self.study is None:
            return NO_SUBJECT
        return Subject(
            patient_id=self.study.patient_id,
            study_instance_uid=self.study.study_instance_uid,
            accession_number=self.study.accession_number,
        )


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


class WorklistSort(StrEnum):
    """The orders a queue can be listed in (``sort`` of ``GET /api/worklist``);
    each ends with the item id, so pages never overlap."""

    # STAT -> urgent -> routine, then earliest due: the reading order
    PRIORITY = "priority"
    # earliest due first, whatever the priority
    DUE_AT = "due_at"
    # oldest first (the longest waiting), or newest first
    CREATED_AT = "created_at"
    NEWEST = "-created_at"


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
    sort: WorklistSort = WorklistSort.PRIORITY


UNASSIGNED = -1


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


# the columns each order sorts by, most significant first (True: descending);
# ix_worklist_items_queue is (queue_type, status, priority_rank, due_at), so the
# reading order is read off the index; the others sort one status's matches
_SORT_COLUMNS: dict[WorklistSort, tuple[tuple[str, bool], ...]] = {
    WorklistSort.PRIORITY: (("priority_rank", False), ("due_at", False), ("id", False)),
    WorklistSort.DUE_AT: (("due_at", False), ("priority_rank", False), ("id", False)),
    WorklistSort.CREATED_AT: (("created_at", False), ("id", False)),
    WorklistSort.NEWEST: (("created_at", True), ("id", True)),
}


def _sort_columns(sort: WorklistSort) -> tuple[str, ...]:
    return tuple(name for name, _ in _SORT_COLUMNS[sort])


def _order_by(sort: WorklistSort, columns: Any) -> tuple[Any, ...]:
    """``sort`` over ``columns`` (the table's or a subquery's); a missing due
    time sorts last either way."""
    clauses = []
    for name, descending in _SORT_COLUMNS[sort]:
        column = getattr(columns, name)
        clause = column.desc() if descending else column.asc()
        clauses.append(clause.nulls_last() if name == "due_at" else clause)
    return tuple(clauses)


ENTRY_COLUMNS = (
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
    DicomStudy.study_date,
    DicomStudy.body_part_examined,
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
        study_date,
        body_part,
    ) = row[: len(ENTRY_COLUMNS)]
    study = (
        WorklistStudy(
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
            study_date=study_date,
            body_part=body_part,
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
    """One page of a queue in ``query.sort`` order (by default STAT -> urgent
    -> routine, then earliest due first).

    The page is one statement: for each wanted status, the first
    ``offset + limit`` item ids in that order (in the default order read
    straight off ``ix_worklist_items_queue`` (queue_type, status,
    priority_rank, due_at), so no sort of the whole queue is needed: a plain
    ``status IN (...)`` would sort every open item on every call); the
    candidates are merged, the page cut, and only its rows joined to study,
    patient and assignee. ``total`` is a second, index-only count.
    """
    moment = now or utcnow()
    narrowing = _narrowing(query, moment)
    statuses = [status.value for status in dict.fromkeys(query.statuses)]
    # every order ends with the id: the candidates carry it
    sort_columns = [getattr(WorklistItem, name) for name in _sort_columns(query.sort)]
    per_status = [
        _matching(sort_columns, query)
        .where(WorklistItem.queue_type == query.queue.value, WorklistItem.status == status)
        .where(*narrowing)
        .order_by(*_order_by(query.sort, WorklistItem))
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
        .order_by(*_order_by(query.sort, candidates.c))
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    statement = _with_joins(
        select(*ENTRY_COLUMNS).join(page, page.c.id == WorklistItem.id)
    ).order_by(*_order_by(query.sort, WorklistItem))
    rows = session.execute(statement).all()
    total = session.scalar(
        _matching((func.count(),), query)
        .select_from(WorklistItem)
        .where(WorklistItem.queue_type == query.queue.value, WorklistItem.status.in_(statuses))
        .where(*narrowing)
    )
    return WorklistPage(items=[_entry(row, moment) for row in rows], total=int(total or 0))


def load_entry(session: Session, item_id: int, now: datetime) -> tuple[WorklistEntry, Row[Any]]:
    statement = _with_joins(
        select(
            *ENTRY_COLUMNS,
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
    entry, _ = load_entry(session, item_id, utcnow())
    return entry


def worklist_entries(
    session: Session,
    *,
    principal: Principal,
    item_ids: Sequence[int],
    now: datetime | None = None,
) -> list[WorklistEntry | None]:
    """The items ``item_ids`` as the list shows them, in one statement (not
    audited: no more than the list shows); None for an id that names no item
    the principal may see (a referring physician: an item of one of their
    orders, the visibility rule)."""
    moment = now or utcnow()
    statement = _with_joins(select(*ENTRY_COLUMNS).where(WorklistItem.id.in_(set(item_ids))))
    if not sees_every_order(principal):
        statement = statement.where(
            WorklistItem.imaging_request_id.in_(visible_order_ids(principal))
        )
    found = {row[0]: _entry(row, moment) for row in session.execute(statement)}
    return [found.get(item_id) for item_id in item_ids]
