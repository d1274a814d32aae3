"""Re-matching unmatched studies (docs/domain.md#study-metadata-states).

A study is ``unmatched`` when no order claimed it on arrival; an order created
or given its accession number later can. Studies whose StudyInstanceUID or
AccessionNumber an order now carries, or whose instances carry
RequestAttributesSequence items, are run through the ingest matching again
(``matching.py``). Conflicts are not re-matched: a new order does not settle
demographics that disagree; a person does. A study the rules now match ends
where a study arriving after its order would: linked and audited
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
in the database: a restart costs one full pass. Run by the ``rematch`` job
(``jobs/maintenance.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, String, and_, cast, exists, or_, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, ImagingRequest, Patient
from dicom_node.domain.audit import Actor
from dicom_node.domain.dataset_header import InstanceHeader, RequestAttributes
from dicom_node.domain.enums import Completeness, MetadataStatus, Priority, QueueType, RequestStatus
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.transitions import STUDY_METADATA

# the steps a study matched on arrival and completed goes through: reused, so a
# re-matched study ends exactly where that one would (as reconciliation does)
from dicom_node.services.workflow.completeness import (
    blocking_report,
    perform_order,
    withdraw_from_reading,
)
from dicom_node.services.workflow.matching import find_order, match_new_study
from dicom_node.services.workflow.work_items import (
    close_reconciliation_items,
    ensure_worklist_item,
    open_item_id,
)

# studies per unit of work
BATCH_SIZE = 200


@dataclass(frozen=True)
class RematchResult:
    studies_checked: int
    matched: int
    conflicts: int
    queued_for_reading: int
    # every unmatched study looked at, not only those of changed orders
    # (not compared: two runs with the same counts are the same result)
    full_pass: bool = field(default=False, compare=False)

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


def rematch_unmatched(
    db: Database,
    *,
    sla: SlaPolicy,
    actor: Actor,
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
    at = now or datetime.now(UTC)
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
            return RematchResult(0, 0, 0, 0, full_pass=False)
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
                    outcome = _rematch(session, study, sla=sla, now=at, actor=actor)
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
    return RematchResult(checked, matched, conflicts, queued, full_pass=full)


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
    session: Session, study: DicomStudy, *, sla: SlaPolicy, now: datetime, actor: Actor
) -> MetadataStatus | None:
    if not STUDY_METADATA.allows("rematch_matched", study.metadata_status):
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
        actor=actor,
    )
    if status is MetadataStatus.CONFLICT:
        # as ingest does for a conflict: a study released to reading while
        # unmatched leaves the reading worklist until a person links it
        session.flush()
        withdraw_from_reading(
            session,
            study.id,
            actor=actor,
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
            session, order, now=completed, actor=actor, reason=f"study {study.id} complete"
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
                actor=actor,
            )
    close_reconciliation_items(session, study, order, reason=reason, now=now, actor=actor)
    session.flush()
    return status


def _queued(session: Session, study: DicomStudy) -> int:
    return int(open_item_id(session, study_id=study.id, queue=QueueType.READING) is not None)
