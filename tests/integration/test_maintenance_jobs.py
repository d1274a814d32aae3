"""The maintenance jobs: stale scheduled orders, re-matching unmatched studies,
image retention and trimming the change feed, on real databases with studies
stored through the real ingest service."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    ChangeLogEntry,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    PerformedProcedureStep,
    Report,
    User,
    WorklistItem,
)
from dicom_node.db.query import ENTITY_KEY, compile_query
from dicom_node.domain.enums import Priority
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.query import Level, parse_match
from dicom_node.jobs.maintenance import (
    ChangeLogTrimResult,
    RematchResult,
    RematchWatermark,
    RetentionResult,
    StaleOrdersResult,
    run_change_log_trim,
    run_rematch,
    run_retention,
    run_stale_orders,
)
from dicom_node.jobs.workflow import run_study_stability
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.operations.retention import purge_next_study, remove_purged_files
from dicom_node.services.query.changes import feed_start, missed_trimmed_changes
from dicom_node.services.query.find import find_entities
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import backdate_study

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SLA = SlaPolicy()
SOURCE = Source(calling_ae_title="CT_MAIN_1", address="127.0.0.1:5000")


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


@pytest.fixture
def mark() -> RematchWatermark:
    """A fresh process's re-matching memory: its first run is a full pass."""
    return RematchWatermark()


def _order(
    session: Session,
    number: int,
    *,
    status: str = "scheduled",
    scheduled_at: datetime | None = None,
    patient_id: str = "PAT1",
    priority: str = "routine",
) -> int:
    order = ImagingRequest(
        patient_id=patient_id,
        patient_name="DOE^JANE",
        patient_name_folded="doe^jane",
        patient_birth_date="19700101",
        patient_sex="F",
        accession_number=f"ACC{number}",
        study_instance_uid=generate_uid(),
        requested_modality="CT",
        priority=priority,
        status=status,
        scheduled_at=scheduled_at,
    )
    session.add(order)
    session.flush()
    return order.id


def _ingest(
    db: Database, store: FileStore, *, accession: str, instances: int = 2, patient_id: str = "PAT1"
) -> str:
    """A study of ``instances`` CT images stored through ingest; its UID."""
    study_uid = generate_uid()
    series_uid = generate_uid()
    for number in range(1, instances + 1):
        data = to_bytes(
            ct_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                accession=accession,
                patient_id=patient_id,
                instance_number=number,
                pixel_seed=number,
            )
        )
        result = store_instance(
            db, store, part10=data, source=SOURCE, policy=IngestPolicy(duplicate_policy="keep")
        )
        assert result.outcome is StoreOutcome.STORED
    return study_uid


def _complete_all(db: Database) -> None:
    """Run the stability job until every study's acquisition is complete."""
    later = datetime.now(UTC) + timedelta(minutes=5)
    for _ in range(2):
        run_study_stability(db, stable_seconds=1, sla=SLA, now=later)


def _study(db: Database, uid: str) -> DicomStudy:
    with db.read() as session:
        study = session.scalar(select(DicomStudy).where(DicomStudy.study_instance_uid == uid))
        assert study is not None
        return study


def _events(db: Database, action: str, target_id: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == action)
    if target_id is not None:
        query = query.where(AuditEvent.target_id == target_id)
    with db.read() as session:
        return list(session.scalars(query.order_by(AuditEvent.id)))


def _items(db: Database, **where: object) -> list[WorklistItem]:
    query = select(WorklistItem)
    for name, value in where.items():
        query = query.where(getattr(WorklistItem, name) == value)
    with db.read() as session:
        return list(session.scalars(query.order_by(WorklistItem.id)))


# --------------------------------------------------------------------------- stale orders


def test_a_scheduled_order_past_its_slot_with_nothing_done_is_flagged_once(db: Database) -> None:
    stale_at = NOW - timedelta(hours=49)
    with db.unit_of_work() as session:
        stale = _order(session, 1, scheduled_at=stale_at, priority="urgent")
        recent = _order(session, 2, scheduled_at=NOW - timedelta(hours=47))
        with_mpps = _order(session, 3, scheduled_at=stale_at)
        session.add(
            PerformedProcedureStep(
                sop_instance_uid=generate_uid(), imaging_request_id=with_mpps, status="IN PROGRESS"
            )
        )
        started = _order(session, 4, status="in_progress", scheduled_at=stale_at)
        unscheduled = _order(session, 5, status="requested")

    result = run_stale_orders(db, stale_hours=48, now=NOW)

    assert result == StaleOrdersResult(orders_flagged=1, follow_ups_closed=0)
    items = _items(db, queue_type="acquisition")
    assert [(i.imaging_request_id, i.status, i.priority, i.priority_rank) for i in items] == [
        (stale, "pending", "urgent", 1)
    ]
    with db.read() as session:
        statuses = dict(session.execute(select(ImagingRequest.id, ImagingRequest.status)).all())
    # flagged, not moved: docs/domain.md#stale-orders has no transition for a missed slot
    assert statuses == {
        stale: "scheduled",
        recent: "scheduled",
        with_mpps: "scheduled",
        started: "in_progress",
        unscheduled: "requested",
    }
    events = _events(db, "order_stale")
    assert [(e.event_code, e.target_class, e.target_id) for e in events] == [
        ("110109", "ImagingRequest", str(stale))
    ]
    assert events[0].details["after"] == {"follow_up_item_id": items[0].id}
    assert events[0].accession_number == "ACC1"
    with db.read() as session:
        feed = session.scalars(
            select(ChangeLogEntry).where(
                ChangeLogEntry.entity == "order", ChangeLogEntry.entity_id == stale
            )
        ).all()
    assert [(c.action, c.payload["stale"]) for c in feed if "stale" in c.payload] == [
        ("updated", True)
    ]

    # a second run, now or later, flags nothing again
    assert run_stale_orders(db, stale_hours=48, now=NOW) == StaleOrdersResult(0, 0)
    assert run_stale_orders(db, stale_hours=48, now=NOW + timedelta(hours=1)) == (
        StaleOrdersResult(0, 0)
    )
    assert len(_events(db, "order_stale")) == 1
    assert len(_items(db, queue_type="acquisition")) == 1


def test_a_rescheduled_stale_order_closes_its_follow_up_and_is_flagged_again_if_missed_again(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        order_id = _order(session, 6, scheduled_at=NOW - timedelta(hours=50))
    assert run_stale_orders(db, stale_hours=48, now=NOW).orders_flagged == 1
    new_slot = NOW + timedelta(hours=2)
    with db.unit_of_work() as session:
        session.execute(
            update(ImagingRequest)
            .where(ImagingRequest.id == order_id)
            .values(scheduled_at=new_slot)
        )

    assert run_stale_orders(db, stale_hours=48, now=NOW + timedelta(hours=1)) == (
        StaleOrdersResult(orders_flagged=0, follow_ups_closed=1)
    )
    assert [i.status for i in _items(db, queue_type="acquisition")] == ["completed"]
    assert len(_events(db, "worklist_item_completed")) == 1

    missed_again = new_slot + timedelta(hours=49)
    assert run_stale_orders(db, stale_hours=48, now=missed_again) == StaleOrdersResult(1, 0)
    assert [i.status for i in _items(db, queue_type="acquisition")] == ["completed", "pending"]


def test_two_nodes_flagging_stale_orders_at_once_flag_each_order_once(db: Database) -> None:
    with db.unit_of_work() as session:
        for number in range(10, 30):
            _order(session, number, scheduled_at=NOW - timedelta(days=3))
    results: list[StaleOrdersResult] = []
    barrier = threading.Barrier(2)

    def node() -> None:
        barrier.wait()
        results.append(run_stale_orders(db, stale_hours=48, now=NOW))

    threads = [threading.Thread(target=node) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r.orders_flagged for r in results) == 20
    with db.read() as session:
        per_order = session.execute(
            select(WorklistItem.imaging_request_id, func.count())
            .where(WorklistItem.queue_type == "acquisition")
            .group_by(WorklistItem.imaging_request_id)
        ).all()
    assert len(per_order) == 20
    assert {count for _, count in per_order} == {1}
    assert len(_events(db, "order_stale")) == 20


# --------------------------------------------------------------------------- re-matching


def test_an_unmatched_study_is_matched_once_its_order_arrives_as_if_it_came_after_it(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    # the usual way round: the order first, then the images
    with db.unit_of_work() as session:
        first = _order(session, 41, priority="urgent")
    on_time_uid = _ingest(db, store, accession="ACC41")
    # the other way round: images nobody ordered yet
    late_uid = _ingest(db, store, accession="ACC42")
    _complete_all(db)
    late = _study(db, late_uid)
    assert late.metadata_status == "unmatched"
    reconciliation = _items(db, dicom_study_id=late.id, queue_type="reconciliation")
    assert [i.status for i in reconciliation] == ["pending"]
    # nothing to match it with yet: checked, nothing recorded
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)

    with db.unit_of_work() as session:
        second = _order(session, 42, priority="urgent")
    result = run_rematch(db, sla=SLA, watermark=mark)

    assert result == RematchResult(studies_checked=1, matched=1, conflicts=0, queued_for_reading=1)
    on_time = _study(db, on_time_uid)
    late = _study(db, late_uid)
    assert (late.metadata_status, late.imaging_request_id) == ("matched", second)
    assert (on_time.metadata_status, on_time.imaging_request_id) == ("matched", first)
    with db.read() as session:
        orders = {o.id: o for o in session.scalars(select(ImagingRequest))}
    for study, order_id in ((on_time, first), (late, second)):
        order = orders[order_id]
        assert order.status == "performed"
        assert order.exam_started_at == study.first_received_at
        assert order.exam_completed_at == study.completed_at
        assert study.completed_at is not None
        due = SLA.due(Priority(order.priority), study.completed_at)
        reading = _items(db, dicom_study_id=study.id, queue_type="reading")
        assert [(i.status, i.priority, i.imaging_request_id, i.due_at) for i in reading] == [
            ("pending", "urgent", order_id, due)
        ]
        matched = _events(db, "study_matched", str(study.id))
        assert [(e.details["order_id"], e.details["matched_by"]) for e in matched] == [
            (order_id, "AccessionNumber")
        ]
        # the late one was unmatched until the job found its order
        assert matched[0].details["before"] == {
            "metadata_status": "pending" if study is on_time else "unmatched",
            "imaging_request_id": None,
        }
        assert matched[0].details["after"] == {
            "metadata_status": "matched",
            "imaging_request_id": order_id,
        }
        transitions = [
            e.details["after"]["status"]
            for e in _events(db, "order_in_progress", str(order_id))
            + _events(db, "order_performed", str(order_id))
        ]
        assert transitions == ["in_progress", "performed"]
    # the late study's reconciliation item is done, audited
    assert [i.status for i in _items(db, id=reconciliation[0].id)] == ["completed"]
    closed = _events(db, "worklist_item_completed", str(reconciliation[0].id))
    assert [(e.actor, e.details["after"]["imaging_request_id"]) for e in closed] == [
        ("scheduler", second)
    ]

    # a second run finds nothing left to match
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)
    assert len(_events(db, "study_matched", str(late.id))) == 1
    assert len(_items(db, dicom_study_id=late.id, queue_type="reading")) == 1


def test_an_unmatched_study_whose_order_is_for_another_patient_becomes_a_conflict(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    uid = _ingest(db, store, accession="ACC43", patient_id="PAT9")
    _complete_all(db)
    with db.unit_of_work() as session:
        order_id = _order(session, 43, patient_id="PAT1")

    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(1, 0, 1, 0)

    study = _study(db, uid)
    assert (study.metadata_status, study.imaging_request_id) == ("conflict", order_id)
    with db.read() as session:
        assert session.get(ImagingRequest, order_id).status == "scheduled"  # type: ignore[union-attr]
    # still for a person to reconcile, and not checked again
    assert [i.status for i in _items(db, dicom_study_id=study.id)] == ["pending"]
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)


def test_an_unmatched_study_is_matched_by_its_request_attributes_sequence(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    study_uid = generate_uid()
    data = to_bytes(ct_dataset(study_uid=study_uid, request_accessions=("ACC44",)))
    store_instance(db, store, part10=data, source=SOURCE, policy=IngestPolicy())
    assert _study(db, study_uid).metadata_status == "unmatched"
    # the process's first run looks at it (full pass): no order yet
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(1, 0, 0, 0)
    with db.unit_of_work() as session:
        _order(session, 46)  # an order its request attributes do not name
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)
    with db.unit_of_work() as session:
        order_id = _order(session, 44)

    # a later run looks at it again because an order its items name changed
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(1, 1, 0, 0)

    study = _study(db, study_uid)
    assert (study.metadata_status, study.imaging_request_id) == ("matched", order_id)
    # still acquiring: the order is in progress; completion will do the rest
    with db.read() as session:
        assert session.get(ImagingRequest, order_id).status == "in_progress"  # type: ignore[union-attr]
    (event,) = _events(db, "study_matched", str(study.id))
    assert event.details["matched_by"] == "RequestAttributesSequence"


def test_studies_no_order_claims_do_not_hold_back_a_later_one_from_re_matching(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    for number in range(3):
        data = to_bytes(ct_dataset(study_uid=generate_uid(), request_accessions=(f"NONE{number}",)))
        store_instance(db, store, part10=data, source=SOURCE, policy=IngestPolicy())
    uid = _ingest(db, store, accession="ACC45")
    with db.unit_of_work() as session:
        order_id = _order(session, 45)

    assert run_rematch(db, sla=SLA, batch_size=2, watermark=mark) == RematchResult(4, 1, 0, 0)
    assert _study(db, uid).imaging_request_id == order_id
    # a fresh process looks at them all again; this one only when orders change
    assert run_rematch(db, sla=SLA, batch_size=2, watermark=RematchWatermark()) == (
        RematchResult(3, 0, 0, 0)
    )
    assert run_rematch(db, sla=SLA, batch_size=2, watermark=mark) == RematchResult(0, 0, 0, 0)


# --------------------------------------------------------------------------- retention


def _reported_study(
    db: Database,
    store: FileStore,
    number: int,
    *,
    report: str | None,
    age_days: int,
    signed_at: Callable[[datetime], datetime] = lambda received: received + timedelta(days=1),
) -> tuple[int, list[str]]:
    """A matched, complete study with its reading done, its images received
    ``age_days`` ago (a final report signed ``signed_at(received)``); (study id,
    file paths)."""
    received = datetime.now(UTC) - timedelta(days=age_days)
    with db.unit_of_work() as session:
        _order(session, number)
    uid = _ingest(db, store, accession=f"ACC{number}")
    _complete_all(db)
    study = _study(db, uid)
    assert study.metadata_status == "matched"
    with db.unit_of_work() as session:
        session.execute(
            update(WorklistItem)
            .where(WorklistItem.dicom_study_id == study.id)
            .values(status="completed")
        )
        if report is not None:
            radiologist = User(
                username=f"rad{number}", password_hash="x", role="radiologist", display_name="R"
            )
            session.add(radiologist)
            session.flush()
            session.add(
                Report(
                    dicom_study_id=study.id,
                    radiologist_id=radiologist.id,
                    status=report,
                    findings="normal",
                    impression="normal",
                    signed_at=signed_at(received) if report == "final" else None,
                )
            )
        backdate_study(session, study.id, received)
        paths = list(
            session.scalars(
                select(DicomInstance.file_path)
                .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
                .where(DicomSeries.study_pk == study.id)
            )
        )
    assert len(paths) == 2 and all(store.exists(p) for p in paths)
    return study.id, paths


def _instance_count(db: Database, study_id: int) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                select(func.count(DicomInstance.id))
                .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
                .where(DicomSeries.study_pk == study_id)
            )
            or 0
        )


def test_retention_removes_only_old_fully_reported_studies_and_audits_each(
    db: Database, store: FileStore
) -> None:
    old_final, old_final_files = _reported_study(db, store, 51, report="final", age_days=400)
    old_draft, old_draft_files = _reported_study(db, store, 52, report="draft", age_days=400)
    old_unreported, old_unreported_files = _reported_study(db, store, 53, report=None, age_days=400)
    young_final, young_final_files = _reported_study(db, store, 54, report="final", age_days=10)
    kept = {
        old_draft: old_draft_files,
        old_unreported: old_unreported_files,
        young_final: young_final_files,
    }

    # off by default: retention_days 0 removes nothing at all
    assert run_retention(db, store, retention_days=0) == RetentionResult(0, 0, 0, 0)
    assert _instance_count(db, old_final) == 2
    assert all(store.exists(p) for p in old_final_files)

    result = run_retention(db, store, retention_days=365)

    assert (result.studies_purged, result.instances_deleted, result.files_removed) == (1, 2, 2)
    assert result.bytes_freed > 0
    assert _instance_count(db, old_final) == 0
    assert not any(store.absolute(p).exists() for p in old_final_files)
    # the emptied study directory goes too
    assert not store.absolute(old_final_files[0]).parent.parent.exists()
    with db.read() as session:
        study = session.get(DicomStudy, old_final)
        assert study is not None
        assert (study.instance_count, study.series_count, study.metadata_status) == (
            0,
            0,
            "matched",
        )
        assert session.scalar(select(func.count()).select_from(Report)) == 3
        assert (
            session.scalar(
                select(func.count(DicomSeries.id)).where(DicomSeries.study_pk == old_final)
            )
            == 0
        )
    (event,) = _events(db, "study_images_purged")
    assert (event.event_code, event.target_class, event.target_id) == (
        "110105",
        "DicomStudy",
        str(old_final),
    )
    assert event.study_instance_uid == study.study_instance_uid
    assert event.details["instances_deleted"] == 2
    assert event.details["before"] == {"instance_count": 2, "series_count": 1}
    assert event.details["retention_days"] == 365
    for study_id, files in kept.items():
        assert _instance_count(db, study_id) == 2
        assert all(store.exists(p) for p in files)

    # a second run has nothing left to do
    assert run_retention(db, store, retention_days=365) == RetentionResult(0, 0, 0, 0)
    assert len(_events(db, "study_images_purged")) == 1


class _SetAfter(threading.Event):
    """An event that turns set once it has been looked at ``checks`` times."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0 or super().is_set()


def test_retention_stops_between_studies_when_the_node_stops(
    db: Database, store: FileStore
) -> None:
    first, _ = _reported_study(db, store, 55, report="final", age_days=400)
    second, _ = _reported_study(db, store, 56, report="final", age_days=400)

    stopped = run_retention(db, store, retention_days=365, cancel=_SetAfter(1))

    assert (stopped.studies_purged, stopped.stopped_early) == (1, True)
    assert "stopped early: the node is stopping" in str(stopped)
    assert sorted(_instance_count(db, study) for study in (first, second)) == [0, 2]
    finished = run_retention(db, store, retention_days=365)  # the next run goes on
    assert (finished.studies_purged, finished.stopped_early) == (1, False)
    assert _instance_count(db, first) == _instance_count(db, second) == 0


def test_a_purged_study_is_no_longer_answered_by_c_find_but_stays_searchable(
    db: Database, store: FileStore
) -> None:
    """Nothing is left to retrieve: C-FIND stops offering it (a PACS would
    otherwise list a study its C-MOVE cannot deliver), its patient with it when
    that was the patient's last study. The HTTP search still finds the record."""
    purged, _ = _reported_study(db, store, 59, report="final", age_days=400)
    with db.read() as session:
        uid = session.scalar(select(DicomStudy.study_instance_uid).where(DicomStudy.id == purged))

    def c_find(level: Level, **keys: str) -> list[dict[str, object]]:
        with db.read() as session:
            return find_entities(session, level=level, keys=keys, limit=10).matches

    assert len(c_find(Level.STUDY, StudyInstanceUID=uid)) == 1
    assert len(c_find(Level.PATIENT, PatientID="PAT1")) == 1
    assert run_retention(db, store, retention_days=365).studies_purged == 1

    assert c_find(Level.STUDY, StudyInstanceUID=uid) == []
    assert c_find(Level.PATIENT, PatientID="PAT1") == []
    # a study of the same patient with images brings the patient back, counted alone
    _ingest(db, store, accession="ACC60")
    (patient,) = c_find(Level.PATIENT, PatientID="PAT1", NumberOfPatientRelatedStudies="")
    assert patient["NumberOfPatientRelatedStudies"] == 1
    # the HTTP study search compiles the same query without only_held
    statement = compile_query(
        Level.STUDY,
        {"StudyInstanceUID": parse_match("UI", uid, keyword="StudyInstanceUID")},
        limit=None,
        with_entity_key=True,
    )
    with db.read() as session:
        assert [row[ENTITY_KEY] for row in session.execute(statement).mappings()] == [purged]


def test_retention_keeps_a_study_in_reconciliation_or_with_open_work(
    db: Database, store: FileStore
) -> None:
    open_work, files = _reported_study(db, store, 61, report="final", age_days=400)
    in_reconciliation, more = _reported_study(db, store, 62, report="final", age_days=400)
    with db.unit_of_work() as session:
        session.add(
            WorklistItem(dicom_study_id=open_work, queue_type="critical_comm", status="pending")
        )
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == in_reconciliation)
            .values(metadata_status="conflict")
        )

    assert run_retention(db, store, retention_days=365).studies_purged == 0
    assert all(store.exists(p) for p in files + more)


def test_an_instance_sent_again_after_its_study_was_purged_is_stored_again(
    db: Database, store: FileStore
) -> None:
    study_id, _ = _reported_study(db, store, 71, report="final", age_days=400)
    with db.read() as session:
        uid = session.get(DicomStudy, study_id).study_instance_uid  # type: ignore[union-attr]
    assert run_retention(db, store, retention_days=365).studies_purged == 1
    data = to_bytes(ct_dataset(study_uid=uid, accession="ACC71", sop_uid=generate_uid()))

    assert store_instance(db, store, part10=data, source=SOURCE, policy=IngestPolicy()).outcome is (
        StoreOutcome.STORED
    )
    study = _study(db, uid)
    assert (study.id, study.instance_count, study.series_count) == (study_id, 1, 1)
    with db.read() as session:
        path = session.scalars(select(DicomInstance.file_path)).one()
    assert store.exists(path)


def test_an_instance_sent_again_between_the_purge_and_its_file_removal_keeps_its_file(
    db: Database, store: FileStore
) -> None:
    study_id, files = _reported_study(db, store, 72, report="final", age_days=400)
    resent = store.absolute(files[0]).read_bytes()
    with db.unit_of_work() as session:
        found = purge_next_study(
            session,
            cutoff=datetime.now(UTC) - timedelta(days=365),
            after_id=0,
            retention_days=365,
            actor="scheduler",
        )
    assert found is not None and found[1] is not None
    # the rows are gone (committed), the files not yet: the modality resends one
    result = store_instance(db, store, part10=resent, source=SOURCE, policy=IngestPolicy())
    assert result.outcome is StoreOutcome.STORED

    assert remove_purged_files(db, store, found[1]) == 1

    assert store.exists(files[0])
    assert not store.absolute(files[1]).exists()
    assert _instance_count(db, study_id) == 1


# --------------------------------------------------------------------------- change feed


def _feed(db: Database, *ages_days: float) -> list[int]:
    with db.unit_of_work() as session:
        entries = [
            ChangeLogEntry(
                at=NOW - timedelta(days=age), entity="order", entity_id=1, action="updated"
            )
            for age in ages_days
        ]
        session.add_all(entries)
        session.flush()
        return [entry.seq for entry in entries]


def _seqs(db: Database) -> list[int]:
    with db.read() as session:
        return list(session.scalars(select(ChangeLogEntry.seq).order_by(ChangeLogEntry.seq)))


def test_change_log_trim_deletes_entries_past_the_window_but_never_the_newest(
    db: Database,
) -> None:
    seqs = _feed(db, 30, 10, 8, 2, 0.5)

    assert run_change_log_trim(db, keep_days=7, now=NOW) == ChangeLogTrimResult(3)
    assert _seqs(db) == seqs[3:]
    assert run_change_log_trim(db, keep_days=7, now=NOW) == ChangeLogTrimResult(0)

    # everything old: the newest entry stays, so numbering carries on after it
    assert run_change_log_trim(db, keep_days=7, now=NOW + timedelta(days=30)) == (
        ChangeLogTrimResult(1)
    )
    assert _seqs(db) == [seqs[-1]]
    (next_seq,) = _feed(db, 0)
    assert next_seq > seqs[-1]

    # a client that last saw a trimmed entry must reload; one that is current need not
    with db.read() as session:
        assert missed_trimmed_changes(session, since=seqs[0]) is True
        assert missed_trimmed_changes(session, since=seqs[-1]) is False
        assert missed_trimmed_changes(session, since=next_seq) is False
        assert missed_trimmed_changes(session, since=0) is False


# --------------------------------------------------------------------------- review fixes


def _count_commits(db: Database) -> tuple[list[int], Callable[[], None]]:
    """Commits on the engine from now on (every unit of work ends in one)."""
    commits: list[int] = []

    def on_commit(_connection: object) -> None:
        commits.append(1)

    event.listen(db.engine, "commit", on_commit)
    return commits, lambda: event.remove(db.engine, "commit", on_commit)


def test_stale_orders_are_handled_in_bounded_units_of_work_and_counted_in_total(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        ids = [_order(session, n, scheduled_at=NOW - timedelta(days=3)) for n in range(100, 107)]
    commits, stop = _count_commits(db)
    try:
        result = run_stale_orders(db, stale_hours=48, now=NOW, batch_size=3)
    finally:
        stop()

    assert result == StaleOrdersResult(orders_flagged=7, follow_ups_closed=0)
    # one unit of work finding no follow-up to close, then 3 + 3 + 1 orders
    assert len(commits) == 4
    items = _items(db, queue_type="acquisition")
    assert sorted(i.imaging_request_id or 0 for i in items) == ids
    assert len(_events(db, "order_stale")) == 7

    with db.unit_of_work() as session:
        session.execute(update(ImagingRequest).values(status="in_progress"))
    commits, stop = _count_commits(db)
    try:
        result = run_stale_orders(db, stale_hours=48, now=NOW, batch_size=3)
    finally:
        stop()
    assert result == StaleOrdersResult(orders_flagged=0, follow_ups_closed=7)
    # 3 + 3 + 1 follow-ups closed, then one unit of work finding no order to flag
    assert len(commits) == 4
    assert {i.status for i in _items(db, queue_type="acquisition")} == {"completed"}


def test_a_cancelled_order_carrying_a_studys_uid_does_not_make_it_a_re_matching_candidate(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    uid = _ingest(db, store, accession="")
    with db.unit_of_work() as session:
        order_id = _order(session, 47, status="cancelled")
        session.execute(
            update(ImagingRequest)
            .where(ImagingRequest.id == order_id)
            .values(study_instance_uid=uid)
        )

    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)
    assert _study(db, uid).metadata_status == "unmatched"


def test_re_matching_looks_again_only_when_orders_change_and_in_full_after_a_restart(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    data = to_bytes(ct_dataset(study_uid=generate_uid(), request_accessions=("NOBODY",)))
    store_instance(db, store, part10=data, source=SOURCE, policy=IngestPolicy())
    # the first run of the process looks at every candidate
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(1, 0, 0, 0)
    # no order changed since: nothing is looked at
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)

    # an order this process never saw change (written before a restart, say)
    uid = _ingest(db, store, accession="ACC48")
    with db.unit_of_work() as session:
        order_id = _order(session, 48)
        session.execute(
            update(ImagingRequest)
            .where(ImagingRequest.id == order_id)
            .values(updated_at=datetime.now(UTC) - timedelta(days=30))
        )
    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(0, 0, 0, 0)
    assert _study(db, uid).metadata_status == "unmatched"

    # a new process starts with a full pass, and finds it
    restarted = RematchWatermark()
    assert run_rematch(db, sla=SLA, watermark=restarted) == RematchResult(2, 1, 0, 0)
    assert _study(db, uid).imaging_request_id == order_id
    assert run_rematch(db, sla=SLA, watermark=restarted) == RematchResult(0, 0, 0, 0)
    # and a full pass a day, whatever changed
    assert restarted.last_full_pass is not None
    restarted.last_full_pass -= timedelta(hours=25)
    assert run_rematch(db, sla=SLA, watermark=restarted) == RematchResult(1, 0, 0, 0)


def test_a_study_released_to_reading_that_re_matching_finds_in_conflict_leaves_reading(
    db: Database, store: FileStore, mark: RematchWatermark
) -> None:
    uid = _ingest(db, store, accession="ACC49", patient_id="PAT9")
    study = _study(db, uid)
    with db.unit_of_work() as session:
        session.execute(
            update(DicomStudy).where(DicomStudy.id == study.id).values(released_to_reading=True)
        )
    _complete_all(db)
    (reading,) = _items(db, dicom_study_id=study.id, queue_type="reading")
    assert reading.status == "pending"
    with db.unit_of_work() as session:
        order_id = _order(session, 49, patient_id="PAT1")

    assert run_rematch(db, sla=SLA, watermark=mark) == RematchResult(1, 0, 1, 0)

    study = _study(db, uid)
    assert (study.metadata_status, study.imaging_request_id) == ("conflict", order_id)
    assert [i.status for i in _items(db, dicom_study_id=study.id, queue_type="reading")] == [
        "cancelled"
    ]
    reconciliation = _items(db, dicom_study_id=study.id, queue_type="reconciliation")
    assert [i.status for i in reconciliation] == ["pending"]
    (cancelled,) = _events(db, "worklist_item_cancelled", str(reading.id))
    assert cancelled.actor == "scheduler"
    assert cancelled.details["after"]["status"] == "cancelled"


def _study_uid(db: Database, study_id: int) -> str:
    with db.read() as session:
        study = session.get(DicomStudy, study_id)
        assert study is not None
        return study.study_instance_uid


def _study_instance_ids(db: Database, study_id: int) -> list[int]:
    with db.read() as session:
        return list(
            session.scalars(
                select(DicomInstance.id)
                .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
                .where(DicomSeries.study_pk == study_id)
                .order_by(DicomInstance.id)
            )
        )


def test_retention_keeps_a_study_holding_another_patients_quarantined_instance(
    db: Database, store: FileStore
) -> None:
    study_id, files = _reported_study(db, store, 81, report="final", age_days=400)
    uid = _study_uid(db, study_id)
    # another patient's image under the same StudyInstanceUID: quarantined
    data = to_bytes(ct_dataset(study_uid=uid, accession="ACC81", patient_id="PAT2"))
    store_instance(db, store, part10=data, source=SOURCE, policy=IngestPolicy())
    with db.read() as session:
        held = session.scalars(
            select(DicomInstance).where(DicomInstance.quarantined.is_(True))
        ).all()
    assert [i.received_patient_id for i in held] == ["PAT2"]
    # a person settles the study itself but not the held image, and every
    # time involved is long past: only the quarantine can keep it now
    old = datetime.now(UTC) - timedelta(days=400)
    with db.unit_of_work() as session:
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == study_id)
            .values(metadata_status="matched", last_received_at=old)
        )
        session.execute(
            update(WorklistItem)
            .where(WorklistItem.dicom_study_id == study_id)
            .values(status="completed")
        )
        session.execute(
            update(DicomInstance).where(DicomInstance.id == held[0].id).values(received_at=old)
        )

    assert run_retention(db, store, retention_days=365).studies_purged == 0

    assert _instance_count(db, study_id) == 3
    assert all(store.exists(p) for p in files)


def test_retention_judges_a_studys_age_by_its_newest_instance(
    db: Database, store: FileStore
) -> None:
    study_id, files = _reported_study(
        db, store, 82, report="final", age_days=400, signed_at=lambda _: datetime.now(UTC)
    )
    # one image arrived ten days ago; the study's last_received_at does not say so
    newest = _study_instance_ids(db, study_id)[-1]
    with db.unit_of_work() as session:
        session.execute(
            update(DicomInstance)
            .where(DicomInstance.id == newest)
            .values(received_at=datetime.now(UTC) - timedelta(days=10))
        )

    assert run_retention(db, store, retention_days=365).studies_purged == 0
    assert _instance_count(db, study_id) == 2
    assert all(store.exists(p) for p in files)


def test_retention_keeps_images_that_arrived_after_the_final_report_and_counts_them(
    db: Database, store: FileStore
) -> None:
    late, late_files = _reported_study(db, store, 83, report="final", age_days=400)
    read, _ = _reported_study(db, store, 84, report="final", age_days=400)
    # signed a day after the images; then one more image, never read
    last = _study_instance_ids(db, late)[-1]
    with db.unit_of_work() as session:
        session.execute(
            update(DicomInstance)
            .where(DicomInstance.id == last)
            .values(received_at=datetime.now(UTC) - timedelta(days=398))
        )

    result = run_retention(db, store, retention_days=365)

    assert (result.studies_purged, result.studies_kept_late_images) == (1, 1)
    assert _instance_count(db, read) == 0
    assert _instance_count(db, late) == 2
    assert all(store.exists(p) for p in late_files)
    assert "1 kept for images after the final report" in str(result)


def test_retention_keeps_a_study_whose_order_is_not_done_or_whose_mpps_is_in_progress(
    db: Database, store: FileStore
) -> None:
    order_open, open_files = _reported_study(db, store, 85, report="final", age_days=400)
    mpps_open, mpps_files = _reported_study(db, store, 86, report="final", age_days=400)
    done, _ = _reported_study(db, store, 87, report="final", age_days=400)
    with db.unit_of_work() as session:
        order_id = session.scalar(
            select(DicomStudy.imaging_request_id).where(DicomStudy.id == order_open)
        )
        session.execute(
            update(ImagingRequest).where(ImagingRequest.id == order_id).values(status="in_progress")
        )
        session.add(
            PerformedProcedureStep(
                sop_instance_uid=generate_uid(),
                study_instance_uid=_study_uid(db, mpps_open),
                status="IN PROGRESS",
            )
        )

    assert run_retention(db, store, retention_days=365).studies_purged == 1

    assert _instance_count(db, done) == 0
    for study_id, files in ((order_open, open_files), (mpps_open, mpps_files)):
        assert _instance_count(db, study_id) == 2
        assert all(store.exists(p) for p in files)


def test_change_log_trim_deletes_a_prefix_of_the_feed_even_when_clocks_disagree(
    db: Database,
) -> None:
    # the second entry's node clock ran ahead of the third's: times out of order
    seqs = _feed(db, 30, 0.5, 10, 2, 0.5)

    assert run_change_log_trim(db, keep_days=7, now=NOW) == ChangeLogTrimResult(3)

    assert _seqs(db) == seqs[3:]
    with db.read() as session:
        assert feed_start(session) == seqs[3]
        # saw the first or second entry only: the ones after it are gone
        assert missed_trimmed_changes(session, since=seqs[0]) is True
        assert missed_trimmed_changes(session, since=seqs[1]) is True
        # saw the last trimmed entry: everything after it is still there
        assert missed_trimmed_changes(session, since=seqs[2]) is False
