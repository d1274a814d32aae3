"""Maintenance jobs: stale scheduled orders, re-matching unmatched studies,
image retention and trimming the change feed.

Each job is one function, callable from a test, that opens its own units of
work and returns a frozen result whose ``str`` is counts only (it goes to the
log: no identifiers, no PHI). Work is done in batches (``BATCH_SIZE`` rows
per unit of work, one study per unit of work for retention), so no run holds
SQLite's one write lock for long. Rows are taken FOR UPDATE SKIP LOCKED on
PostgreSQL (SQLite serialises writers), and each job's selection excludes what
it already handled, so two nodes running the same job never handle a row twice
and a second run does nothing new.

Stale orders. docs/domain.md#stale-orders: the order state machine has no "no-show" transition, and
cancelling automatically would lose the order for images that come late (a
cancelled order matches no images). So a scheduled order whose slot is more
than ``stale_hours`` past, with no study and no MPPS, stays scheduled and gets
an open item in the ``acquisition`` queue for a scheduler to reschedule or
cancel it, an Order Record audit event (``order_stale``) and an order entry in
the change feed (payload ``stale: true``). Once per slot: an order already
flagged after its current slot is not flagged again; rescheduled and missed
again, it is. The job also completes follow-up items whose order moved on
(started, performed, cancelled, rescheduled after the flag, or images or an
MPPS arrived), audited.

Re-matching. A study is ``unmatched`` when no order claimed it on arrival; an
order created or given its accession number later can. Studies whose
StudyInstanceUID or AccessionNumber an order now carries, or whose instances
carry RequestAttributesSequence items, are run through the ingest matching
again (``services.matching``). Conflicts are not re-matched: a new order does
not settle demographics that disagree; a person does. A study the rules now
match ends where a study arriving after its order would: linked and audited
(``study_matched``), the order in progress from the first image; and, when the
acquisition is already complete, the order performed, a reading item due by
the SLA from when the study completed, and its reconciliation items (and those
an MPPS of the same study opened) completed. An order found but for another
patient's demographics makes the study a ``conflict`` linked to it, as ingest
would: it stays in reconciliation, and a study that had been released to
reading while unmatched is withdrawn from reading (its open reading and review
items cancelled), as ingest does. Cancelled orders claim nothing.

Which studies a run looks at: the first run of a process (and one run a day)
looks at every candidate; the others only at the candidates of orders created
or changed since the previous run (``updated_at``, looking back
``ORDER_CHANGE_LOOKBACK`` for transactions that committed late), and at none
when no order changed. That memory is per process (``RematchWatermark``), not
in the database: a restart costs one full pass.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, exists, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.changes import record_change
from dicom_node.db.engine import Database
from dicom_node.db.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
    PerformedProcedureStep,
    WorklistItem,
)
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.dataset_header import InstanceHeader, RequestAttributes
from dicom_node.domain.enums import (
    OPEN_WORKLIST_STATUSES,
    AuditOutcome,
    Completeness,
    MetadataStatus,
    Priority,
    QueueType,
    RequestStatus,
    Role,
    WorklistStatus,
)
from dicom_node.domain.matching import PRIORITY_RANK, SlaPolicy
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.operations.retention import (
    PurgedStudy,
    count_kept_for_late_images,
    purge_next_study,
    remove_purged_files,
    trim_change_log,
)

# the steps a study matched on arrival and completed goes through: reused, so a
# re-matched study ends exactly where that one would (as reconciliation does)
from dicom_node.services.workflow.completeness import (
    blocking_report,
    ensure_worklist_item,
    perform_order,
    withdraw_from_reading,
)
from dicom_node.services.workflow.matching import find_order, match_new_study
from dicom_node.services.workflow.reconciliation import close_reconciliation_items
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.jobs.maintenance")

ACTOR = "scheduler"
# rows per unit of work of the stale-orders and re-matching jobs
BATCH_SIZE = 200
_WHO: dict[str, Any] = {
    "actor": ACTOR,
    "actor_user_id": None,
    "actor_role": None,
    "source_address": None,
}
# reconciliation.close_reconciliation_items takes a principal it does not use
# (its audit events name the actor given in ``who``). No user has id 0: should
# it ever be stored, the foreign key refuses it instead of blaming someone.
_NO_PRINCIPAL = Principal(user_id=0, username=ACTOR, role=Role.SCHEDULER)


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# --------------------------------------------------------------------------- stale orders


@dataclass(frozen=True)
class StaleOrdersResult:
    orders_flagged: int
    follow_ups_closed: int

    def __str__(self) -> str:
        return (
            f"{self.orders_flagged} stale scheduled orders flagged, "
            f"{self.follow_ups_closed} follow-up items closed"
        )


def _flagged(order_id: Any, scheduled_at: Any) -> ColumnElement[bool]:
    """An acquisition follow-up item made for this order after its current slot."""
    return exists().where(
        WorklistItem.imaging_request_id == order_id,
        WorklistItem.queue_type == QueueType.ACQUISITION.value,
        WorklistItem.created_at > scheduled_at,
    )


def _performed_somehow(order_id: Any, study_uid: Any) -> ColumnElement[bool]:
    """Images or an MPPS for the order, linked or carrying its StudyInstanceUID."""
    return or_(
        exists().where(DicomStudy.imaging_request_id == order_id),
        exists().where(DicomStudy.study_instance_uid == study_uid),
        exists().where(PerformedProcedureStep.imaging_request_id == order_id),
        exists().where(PerformedProcedureStep.study_instance_uid == study_uid),
    )


def run_stale_orders(
    db: Database,
    *,
    stale_hours: float,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> StaleOrdersResult:
    """Close the follow-ups of orders that moved on, then flag the newly stale
    orders: ``batch_size`` rows per unit of work (in id order), so a backlog of
    thousands never holds the SQLite write lock (or PostgreSQL row locks) for
    long. The counts are the run's totals."""
    at = _now(now)
    cutoff = at - timedelta(hours=stale_hours)
    closed = flagged = 0
    after_id = 0
    while True:
        with db.unit_of_work() as session:
            seen, after_id, done = _close_follow_ups(
                session, now=at, after_id=after_id, limit=batch_size
            )
        closed += done
        if seen < batch_size:
            break
    after_id = 0
    while True:
        with db.unit_of_work() as session:
            seen, after_id, done = _flag_stale_orders(
                session, cutoff=cutoff, now=at, after_id=after_id, limit=batch_size
            )
        flagged += done
        if seen < batch_size:
            break
    result = StaleOrdersResult(flagged, closed)
    log.info("stale orders: %s", result)
    return result


def _flag_stale_orders(
    session: Session, *, cutoff: datetime, now: datetime, after_id: int, limit: int
) -> tuple[int, int, int]:
    """Flag one batch of stale orders with ids above ``after_id``; (orders
    looked at, the last one's id, orders flagged)."""
    orders = session.scalars(
        select(ImagingRequest)
        .where(
            ImagingRequest.id > after_id,
            ImagingRequest.status == RequestStatus.SCHEDULED.value,
            ImagingRequest.scheduled_at.is_not(None),
            ImagingRequest.scheduled_at < cutoff,
            ~_performed_somehow(ImagingRequest.id, ImagingRequest.study_instance_uid),
            ~_flagged(ImagingRequest.id, ImagingRequest.scheduled_at),
        )
        .order_by(ImagingRequest.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not orders:
        return 0, after_id, 0
    # Looked at again now that the rows are ours, in a fresh statement: the
    # flag is an insert, not a change to the order row, so a node that flagged
    # one and committed just before our lock is only seen this way.
    already = set(
        session.scalars(
            select(ImagingRequest.id).where(
                ImagingRequest.id.in_([order.id for order in orders]),
                _flagged(ImagingRequest.id, ImagingRequest.scheduled_at),
            )
        )
    )
    todo = [order for order in orders if order.id not in already]
    items: list[WorklistItem] = []
    for order in todo:
        priority = Priority(order.priority)
        items.append(
            WorklistItem(
                imaging_request_id=order.id,
                queue_type=QueueType.ACQUISITION.value,
                status=WorklistStatus.PENDING.value,
                priority=priority.value,
                priority_rank=PRIORITY_RANK[priority],
                due_at=None,
                notes="scheduled slot passed with no images and no MPPS: reschedule or cancel",
                created_at=now,
                updated_at=now,
            )
        )
    session.add_all(items)
    session.flush()  # one flush for the batch: the audit events name the item ids
    for order, item in zip(todo, items, strict=True):
        scheduled = order.scheduled_at.isoformat() if order.scheduled_at else None
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.ORDER_RECORD,
                action="order_stale",
                outcome=AuditOutcome.MINOR_FAILURE,
                actor=ACTOR,
                target_class="ImagingRequest",
                target_id=str(order.id),
                patient_id=order.patient_id,
                study_instance_uid=order.study_instance_uid,
                accession_number=order.accession_number,
                reason="scheduled slot passed with no images and no MPPS",
                details={
                    "before": {"follow_up_item_id": None},
                    "after": {"follow_up_item_id": item.id},
                    "status": order.status,
                    "scheduled_at": scheduled,
                },
            ),
        )
        record_change(
            session,
            entity="order",
            entity_id=order.id,
            action="updated",
            payload={
                "status": order.status,
                "priority": order.priority,
                "scheduled_at": scheduled,
                "stale": True,
            },
            order_id=order.id,
        )
    return len(orders), orders[-1].id, len(todo)


def _close_follow_ups(
    session: Session, *, now: datetime, after_id: int, limit: int
) -> tuple[int, int, int]:
    """Complete one batch of follow-up items (ids above ``after_id``) whose
    order moved on; (items looked at, the last one's id, items completed)."""
    moved_on = or_(
        ImagingRequest.status != RequestStatus.SCHEDULED.value,
        ImagingRequest.scheduled_at > WorklistItem.created_at,
        _performed_somehow(ImagingRequest.id, ImagingRequest.study_instance_uid),
    )
    rows = session.execute(
        select(WorklistItem, ImagingRequest)
        .join(ImagingRequest, ImagingRequest.id == WorklistItem.imaging_request_id)
        .where(
            WorklistItem.id > after_id,
            WorklistItem.queue_type == QueueType.ACQUISITION.value,
            WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
            moved_on,
        )
        .order_by(WorklistItem.id)
        .limit(limit)
        .with_for_update(of=WorklistItem, skip_locked=True)
    ).all()
    for item, order in rows:
        before = {"status": item.status}
        item.status = WorklistStatus.COMPLETED.value
        item.completed_at = now
        item.version += 1
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.PROCEDURE_RECORD,
                action="worklist_item_completed",
                actor=ACTOR,
                target_class="WorklistItem",
                target_id=str(item.id),
                patient_id=order.patient_id,
                study_instance_uid=order.study_instance_uid,
                accession_number=order.accession_number,
                reason=f"order {order.id} is no longer a missed slot ({order.status})",
                details={
                    "before": before,
                    "after": {"status": item.status},
                    "queue_type": item.queue_type,
                    "order_id": order.id,
                },
            ),
        )
    return len(rows), (rows[-1][0].id if rows else after_id), len(rows)


# --------------------------------------------------------------------------- re-matching


@dataclass(frozen=True)
class RematchResult:
    studies_checked: int
    matched: int
    conflicts: int
    queued_for_reading: int

    def __str__(self) -> str:
        return (
            f"{self.studies_checked} unmatched studies checked, {self.matched} matched "
            f"({self.queued_for_reading} queued for reading), {self.conflicts} conflicts"
        )


@dataclass
class RematchWatermark:
    """What one process's re-matching runs remember between runs (in memory:
    no schema change). ``orders_since`` None means the next run is a full
    pass: the first run after start, and then once every ``FULL_PASS_EVERY``."""

    orders_since: datetime | None = None
    last_full_pass: datetime | None = None


# The scheduler's runs share this one (per process); tests pass their own.
PROCESS_WATERMARK = RematchWatermark()
# An order is looked at by the runs of this long after its last change: its
# transaction may commit a little after ``updated_at`` (set at flush, by the
# writing node's clock), and an unmatched study may commit a little after it.
ORDER_CHANGE_LOOKBACK = timedelta(minutes=5)
# a full pass now and then, whatever the order changes say (a safety net)
FULL_PASS_EVERY = timedelta(hours=24)
# more changed orders than this in one run: a full pass instead of a long OR
_MAX_CHANGED_ORDERS = 200


def run_rematch(
    db: Database,
    *,
    sla: SlaPolicy,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    watermark: RematchWatermark | None = None,
) -> RematchResult:
    """Match again the unmatched studies an order created or changed since the
    previous run could claim; all candidates on the first run of the process
    (``watermark``, the process's own by default) and once a day.

    Candidates are read ``batch_size`` at a time (in id order) in read-only
    transactions, where the matching rules look for an order; only a study
    they find one for is locked and matched, in a short unit of work. A study
    no order claims costs reads, never the write lock, and never holds back
    the others.
    """
    at = _now(now)
    mark = watermark if watermark is not None else PROCESS_WATERMARK
    started = datetime.now(UTC)  # wall clock: order updated_at is wall clock too
    keys: _OrderKeys | None = None
    full = (
        mark.orders_since is None
        or mark.last_full_pass is None
        or started - mark.last_full_pass >= FULL_PASS_EVERY
    )
    if not full:
        assert mark.orders_since is not None
        with db.read() as session:
            keys = _changed_order_keys(session, since=mark.orders_since)
        if keys is None:
            full = True
        elif keys.empty:
            mark.orders_since = started - ORDER_CHANGE_LOOKBACK
            result = RematchResult(0, 0, 0, 0)
            log.debug("re-matching: no order changed, %s", result)
            return result
    checked = matched = conflicts = queued = 0
    after_id = 0
    while True:
        with db.read() as session:
            ids = _rematch_candidates(session, after_id=after_id, limit=batch_size, keys=keys)
            found = [study_id for study_id in ids if _order_for(session, study_id)]
        checked += len(ids)
        if found:
            with db.unit_of_work() as session:
                for study in _lock_unmatched(session, found):
                    outcome = _rematch(session, study, sla=sla, now=at)
                    if outcome is MetadataStatus.MATCHED:
                        matched += 1
                        queued += _queued(session, study)
                    elif outcome is MetadataStatus.CONFLICT:
                        conflicts += 1
        if len(ids) < batch_size:
            break
        after_id = ids[-1]
    # only once the run went through: after a failed run the next one covers
    # the same order changes again (and a full pass stays due)
    mark.orders_since = started - ORDER_CHANGE_LOOKBACK
    if full:
        mark.last_full_pass = started
    result = RematchResult(checked, matched, conflicts, queued)
    log.info("re-matching (%s): %s", "full pass" if full else "changed orders", result)
    return result


@dataclass(frozen=True)
class _OrderKeys:
    """The StudyInstanceUIDs and AccessionNumbers of recently changed orders."""

    study_uids: frozenset[str]
    accessions: frozenset[str]

    @property
    def empty(self) -> bool:
        return not self.study_uids and not self.accessions


def _changed_order_keys(session: Session, *, since: datetime) -> _OrderKeys | None:
    """The keys of the orders created or changed since ``since``; None when
    there are too many for one query (a full pass then). Cancelled ones too:
    cancelling one of two orders sharing an accession number (under different
    issuers) lets the other claim the study; the candidate query itself never
    counts a cancelled order."""
    rows = session.execute(
        select(ImagingRequest.study_instance_uid, ImagingRequest.accession_number)
        .where(ImagingRequest.updated_at >= since)
        .limit(_MAX_CHANGED_ORDERS + 1)
    ).all()
    if len(rows) > _MAX_CHANGED_ORDERS:
        return None
    return _OrderKeys(
        study_uids=frozenset(uid for uid, _ in rows if uid),
        accessions=frozenset(accession for _, accession in rows if accession),
    )


def _json_string_like(value: str) -> ColumnElement[bool]:
    """The stored request attributes (JSON text) contain ``value`` as a JSON
    string. A prefilter only, so a superset is fine: the matching rules decide."""
    pattern = json.dumps(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return cast(DicomInstance.request_attributes, String).like(f"%{pattern}%", escape="\\")


def _rematch_candidates(
    session: Session, *, after_id: int, limit: int, keys: _OrderKeys | None
) -> list[int]:
    """Ids of unmatched studies an order could claim now: one (not cancelled)
    carries their StudyInstanceUID or AccessionNumber, or their instances carry
    request attributes (whose keys the matching itself checks). With ``keys``,
    only those one of the changed orders could claim."""
    uid_orders = ImagingRequest.study_instance_uid == DicomStudy.study_instance_uid
    accession_orders = ImagingRequest.accession_number == DicomStudy.accession_number
    if keys is not None:
        uid_orders = and_(uid_orders, ImagingRequest.study_instance_uid.in_(keys.study_uids))
        accession_orders = and_(
            accession_orders, ImagingRequest.accession_number.in_(keys.accessions)
        )
    by_uid = exists().where(uid_orders, ImagingRequest.status != RequestStatus.CANCELLED.value)
    by_accession = exists().where(
        DicomStudy.accession_number.is_not(None),
        DicomStudy.accession_number != "",
        accession_orders,
        ImagingRequest.status != RequestStatus.CANCELLED.value,
    )
    request_conditions: list[ColumnElement[bool]] = [
        DicomInstance.request_attributes.is_not(None),
        # ingest stores "none" as JSON null, which SQL sees as a value
        cast(DicomInstance.request_attributes, String) != "null",
    ]
    if keys is not None:
        values = sorted(keys.study_uids | keys.accessions)
        request_conditions.append(or_(*(_json_string_like(value) for value in values)))
    with_requests = exists().where(
        DicomSeries.study_pk == DicomStudy.id,
        DicomInstance.series_pk == DicomSeries.id,
        *request_conditions,
    )
    return list(
        session.scalars(
            select(DicomStudy.id)
            .where(
                DicomStudy.id > after_id,
                DicomStudy.metadata_status == MetadataStatus.UNMATCHED.value,
                or_(by_uid, by_accession, with_requests),
            )
            .order_by(DicomStudy.id)
            .limit(limit)
        )
    )


def _order_for(session: Session, study_id: int) -> bool:
    """Whether the matching rules find an order for the study (read only)."""
    study = session.get(DicomStudy, study_id)
    if study is None or study.metadata_status != MetadataStatus.UNMATCHED.value:
        return False
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    order, _ = find_order(session, _header(session, study, patient))
    return order is not None


def _lock_unmatched(session: Session, study_ids: list[int]) -> list[DicomStudy]:
    """The studies, locked, that are still unmatched (another node or a person
    may have settled one since they were read)."""
    return list(
        session.scalars(
            select(DicomStudy)
            .where(
                DicomStudy.id.in_(study_ids),
                DicomStudy.metadata_status == MetadataStatus.UNMATCHED.value,
            )
            .order_by(DicomStudy.id)
            .with_for_update(skip_locked=True)
        )
    )


def _header(session: Session, study: DicomStudy, patient: Patient) -> InstanceHeader:
    """The study as its images told it, for the matching rules: study-level keys
    and every distinct RequestAttributesSequence item of its instances."""
    items: list[RequestAttributes] = []
    for stored in session.scalars(
        select(DicomInstance.request_attributes)
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .where(DicomSeries.study_pk == study.id, DicomInstance.quarantined.is_(False))
        .order_by(DicomInstance.id)
    ):
        for raw in stored or []:
            item = RequestAttributes(
                accession_number=raw.get("accession_number") or None,
                accession_issuer=raw.get("accession_issuer") or "",
                requested_procedure_id=raw.get("requested_procedure_id") or None,
                scheduled_procedure_step_id=raw.get("scheduled_procedure_step_id") or None,
                study_instance_uid=raw.get("study_instance_uid") or None,
            )
            if item not in items:
                items.append(item)
    return InstanceHeader(
        # instance-level keys play no part in matching a study to an order
        sop_class_uid="",
        sop_instance_uid="",
        study_instance_uid=study.study_instance_uid,
        series_instance_uid="",
        transfer_syntax_uid="",
        patient_id=patient.patient_id,
        issuer_of_patient_id=patient.issuer_of_patient_id or "",
        patient_name=patient.patient_name,
        patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex,
        accession_number=study.accession_number,
        accession_issuer=study.accession_issuer or "",
        modality=study.modality_type,
        body_part_examined=study.body_part_examined,
        study_date=study.study_date,
        study_time=study.study_time,
        study_description=study.study_description,
        study_id=study.study_id,
        referring_physician_name=study.referring_physician_name,
        series_number=None,
        series_description=None,
        series_date=None,
        series_time=None,
        station_name=None,
        instance_number=None,
        request_attributes=tuple(items),
    )


def _rematch(
    session: Session, study: DicomStudy, *, sla: SlaPolicy, now: datetime
) -> MetadataStatus | None:
    if study.metadata_status != MetadataStatus.UNMATCHED.value:
        return None
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    header = _header(session, study, patient)
    order, _ = find_order(session, header)
    if order is None:
        return None  # still no order (or an ambiguous accession): nothing to record
    # the exam started with the first image, as ingest would have recorded it
    status = match_new_study(
        session,
        study_id=study.id,
        header=header,
        now=study.first_received_at or now,
        actor=ACTOR,
    )
    if status is MetadataStatus.CONFLICT:
        # as ingest does for a conflict: a study released to reading while
        # unmatched leaves the reading worklist until a person links it
        session.flush()
        withdraw_from_reading(
            session,
            study.id,
            actor=ACTOR,
            source_address=None,
            reason=f"order {order.id} found by the re-matching job is for another patient",
        )
        return status
    if status is not MetadataStatus.MATCHED:
        return status
    reason = f"order {order.id} arrived after the images; matched by the re-matching job"
    if study.completeness == Completeness.COMPLETE.value:
        # what complete_study does for a matched study, at the time it completed
        completed = study.completed_at or now
        perform_order(
            session, order, now=completed, actor=ACTOR, reason=f"study {study.id} complete"
        )
        if blocking_report(session, study.id) is None:
            priority = Priority(order.priority)
            ensure_worklist_item(
                session,
                study,
                order,
                queue=QueueType.READING,
                priority=priority,
                due_at=sla.due(priority, completed),
                actor=ACTOR,
            )
    close_reconciliation_items(
        session,
        study,
        patient,
        order,
        reason=reason,
        now=now,
        principal=_NO_PRINCIPAL,
        who=_WHO,
    )
    session.flush()
    return status


def _queued(session: Session, study: DicomStudy) -> int:
    return int(
        session.scalar(
            select(
                exists().where(
                    WorklistItem.dicom_study_id == study.id,
                    WorklistItem.queue_type == QueueType.READING.value,
                    WorklistItem.status.in_(OPEN_WORKLIST_STATUSES),
                )
            )
        )
        or False
    )


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionResult:
    studies_purged: int
    instances_deleted: int
    files_removed: int
    bytes_freed: int
    # past retention and otherwise settled, kept for images that arrived
    # after the final report (never read: waiting for an addendum)
    studies_kept_late_images: int = 0
    stopped_early: bool = False  # the node is stopping; the next run goes on

    def __str__(self) -> str:
        return (
            f"{self.studies_purged} studies purged, {self.instances_deleted} instances "
            f"deleted, {self.files_removed} files removed ({self.bytes_freed} bytes), "
            f"{self.studies_kept_late_images} kept for images after the final report"
            + ("; stopped early: the node is stopping" if self.stopped_early else "")
        )


def run_retention(
    db: Database,
    store: FileStore,
    *,
    retention_days: int,
    now: datetime | None = None,
    max_studies: int = 100,
    cancel: threading.Event | None = None,
) -> RetentionResult:
    """Purge the images of up to ``max_studies`` studies past retention; off
    (nothing at all) when ``retention_days`` is 0. One unit of work per study,
    then its files (services.retention); ``cancel`` (the node stopping) is
    looked at between studies, never inside one."""
    if retention_days <= 0:
        return RetentionResult(0, 0, 0, 0)
    cutoff = _now(now) - timedelta(days=retention_days)
    purged: list[PurgedStudy] = []
    files = 0
    after_id = 0
    stopped_early = False
    while len(purged) < max_studies:
        if cancel is not None and cancel.is_set():
            stopped_early = True
            break
        with db.unit_of_work() as session:
            found = purge_next_study(
                session,
                cutoff=cutoff,
                after_id=after_id,
                retention_days=retention_days,
                actor=ACTOR,
            )
        if found is None:
            break
        after_id, study = found
        if study is not None:
            purged.append(study)
            files += remove_purged_files(db, store, study)
    with db.read() as session:
        kept_late = count_kept_for_late_images(session, cutoff=cutoff)
    result = RetentionResult(
        len(purged),
        sum(study.instances for study in purged),
        files,
        sum(study.bytes for study in purged),
        kept_late,
        stopped_early,
    )
    log.info("retention: %s", result)
    return result


# --------------------------------------------------------------------------- change feed


@dataclass(frozen=True)
class ChangeLogTrimResult:
    entries_deleted: int

    def __str__(self) -> str:
        return f"{self.entries_deleted} change-feed entries trimmed"


def run_change_log_trim(
    db: Database, *, keep_days: float, now: datetime | None = None
) -> ChangeLogTrimResult:
    with db.unit_of_work() as session:
        deleted = trim_change_log(session, before=_now(now) - timedelta(days=keep_days))
    result = ChangeLogTrimResult(deleted)
    log.info("change feed: %s", result)
    return result
