"""store_instance against real databases and a real file store."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
    PerformedProcedureStep,
    WorklistItem,
)
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.demo import DEMO_STUDIES
from dicom_node.domain.enums import Priority
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.domain.query import Level
from dicom_node.jobs.workflow import run_study_stability
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.operations.demo import load_demo
from dicom_node.services.operations.restore import recount
from dicom_node.services.query.find import find_entities
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import SAMPLE_DIR

KEEP = IngestPolicy(duplicate_policy="keep")
SOURCE = Source(calling_ae_title="CT_MAIN_1", address="127.0.0.1:5000")
SLA = SlaPolicy()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=True)


def put(db: Database, store: FileStore, data: bytes, policy: IngestPolicy = KEEP):  # type: ignore[no-untyped-def]
    return store_instance(db, store, part10=data, source=SOURCE, policy=policy)


def _study_uid(data: bytes) -> str:
    from dicom_node.domain.dataset_header import read_header

    return read_header(data).study_instance_uid


def count(db: Database, model: type) -> int:  # type: ignore[type-arg]
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def study_row(db: Database, uid: str) -> DicomStudy:
    with db.read() as session:
        study = session.scalar(select(DicomStudy).where(DicomStudy.study_instance_uid == uid))
        assert study is not None
        return study


def test_sample_studies_are_indexed_with_exact_counts(db: Database, store: FileStore) -> None:
    for path in sorted(SAMPLE_DIR.rglob("*.dcm")):
        assert put(db, store, path.read_bytes()).outcome is StoreOutcome.STORED
    for demo in DEMO_STUDIES:
        study = study_row(db, demo.study_instance_uid)
        assert study.series_count == len(demo.series)
        assert study.instance_count == sum(s.instances for s in demo.series)
        assert study.modalities_in_study == demo.modality
        assert study.accession_number == demo.accession_number
    assert count(db, Patient) == len(DEMO_STUDIES)
    with db.read() as session:
        names = set(session.scalars(select(Patient.patient_name)))
    assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in names
    assert "MÜLLER^HANS" in names


def test_stored_file_is_the_received_bytes_at_a_uid_path(db: Database, store: FileStore) -> None:
    sample = next(iter(sorted(SAMPLE_DIR.rglob("*.dcm"))))
    data = sample.read_bytes()
    put(db, store, data)
    with db.read() as session:
        instance = session.scalars(select(DicomInstance)).one()
        series = session.get(DicomSeries, instance.series_pk)
        study = session.get(DicomStudy, series.study_pk)  # type: ignore[union-attr]
    expected = (
        f"{study.study_instance_uid}/{series.series_instance_uid}/{instance.sop_instance_uid}.dcm"  # type: ignore[union-attr]
    )
    assert instance.file_path == expected
    assert store.absolute(instance.file_path).read_bytes() == data
    assert instance.sha256 == hashlib.sha256(data[dataset_offset(data) :]).hexdigest()
    assert instance.calling_ae_title == "CT_MAIN_1"
    assert instance.file_size == len(data)
    assert list(store.tmp.iterdir()) == []


def test_resending_identical_content_changes_nothing(db: Database, store: FileStore) -> None:
    data = to_bytes(ct_dataset(study_uid=generate_uid()))
    assert put(db, store, data).outcome is StoreOutcome.STORED
    assert put(db, store, data).outcome is StoreOutcome.DUPLICATE
    assert (count(db, DicomInstance), count(db, DicomSeries), count(db, DicomStudy)) == (1, 1, 1)
    with db.read() as session:
        assert session.scalars(select(DicomStudy.instance_count)).one() == 1
    assert list(store.tmp.iterdir()) == []


def test_resend_restores_an_indexed_file_that_went_missing(db: Database, store: FileStore) -> None:
    data = to_bytes(ct_dataset(study_uid=generate_uid()))
    assert put(db, store, data).outcome is StoreOutcome.STORED
    with db.read() as session:
        relative = session.scalars(select(DicomInstance.file_path)).one()
    store.absolute(relative).unlink()  # as after a crash between commit and directory sync
    assert put(db, store, data).outcome is StoreOutcome.DUPLICATE
    assert store.absolute(relative).read_bytes() == data
    assert study_row(db, _study_uid(data)).instance_count == 1
    assert list(store.tmp.iterdir()) == []


def test_different_content_under_a_known_uid_is_kept_out_and_audited(
    db: Database, store: FileStore
) -> None:
    first = ct_dataset(study_uid=generate_uid(), pixel_seed=1)
    second = ct_dataset(
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
        sop_uid=first.SOPInstanceUID,
        pixel_seed=2,
    )
    put(db, store, to_bytes(first))
    result = put(db, store, to_bytes(second))
    assert result.outcome is StoreOutcome.KEPT_EXISTING
    with db.read() as session:
        instance = session.scalars(select(DicomInstance)).one()
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "instance_content_conflict")
        ).one()
    assert store.absolute(instance.file_path).read_bytes() == to_bytes(first)
    assert event.details["policy"] == "keep"
    assert event.target_id == first.SOPInstanceUID


def test_replace_policy_never_moves_an_instance_to_another_series(
    db: Database, store: FileStore
) -> None:
    first = ct_dataset(study_uid=generate_uid(), pixel_seed=1)
    moved = ct_dataset(study_uid=generate_uid(), sop_uid=first.SOPInstanceUID, pixel_seed=2)
    put(db, store, to_bytes(first))
    result = put(db, store, to_bytes(moved), IngestPolicy(duplicate_policy="replace"))
    assert result.outcome is StoreOutcome.KEPT_EXISTING
    with db.read() as session:
        instance = session.scalars(select(DicomInstance)).one()
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "instance_content_conflict")
        ).one()
    assert store.absolute(instance.file_path).read_bytes() == to_bytes(first)
    assert audit.details["after"]["study_instance_uid"] == moved.StudyInstanceUID
    assert count(db, DicomStudy) == 1  # the other study never appeared
    assert store.iter_files() == [store.absolute(instance.file_path)]


def test_replace_policy_swaps_the_file_only_after_the_new_copy_is_in_place(
    db: Database, store: FileStore
) -> None:
    first = ct_dataset(study_uid=generate_uid(), pixel_seed=1)
    second = ct_dataset(
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
        sop_uid=first.SOPInstanceUID,
        pixel_seed=2,
    )
    put(db, store, to_bytes(first))
    with db.read() as session:
        old_path = session.scalars(select(DicomInstance.file_path)).one()
    result = put(db, store, to_bytes(second), IngestPolicy(duplicate_policy="replace"))
    assert result.outcome is StoreOutcome.REPLACED
    with db.read() as session:
        instance = session.scalars(select(DicomInstance)).one()
        study = session.scalars(select(DicomStudy)).one()
    assert instance.file_path != old_path
    assert store.absolute(instance.file_path).read_bytes() == to_bytes(second)
    assert not store.absolute(old_path).exists()
    assert study.instance_count == 1


def test_replace_policy_keeps_the_indexed_file_when_other_content_is_indexed_in_place(
    db: Database, store: FileStore
) -> None:
    replace = IngestPolicy(duplicate_policy="replace")
    first = ct_dataset(study_uid=generate_uid(), pixel_seed=1)
    second = ct_dataset(
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
        sop_uid=first.SOPInstanceUID,
        pixel_seed=2,
    )
    put(db, store, to_bytes(first), replace)
    assert put(db, store, to_bytes(second), replace).outcome is StoreOutcome.REPLACED
    plain = store.absolute(
        FileStore.relative_path(
            first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
        )
    )
    # the replaced copy back at the plain path, as after a crash between the
    # replace's commit and the old file's removal
    assert not plain.exists()
    plain.write_bytes(to_bytes(first))
    files = store.iter_files()
    assert len(files) == 2

    # reindex (or repair) indexes the store's own files where they lie: no copy
    summary = import_files(db, store, [plain], policy=replace, actor="reindex", in_store=True)

    assert dict(summary.outcomes) == {StoreOutcome.KEPT_EXISTING.value: 1}
    with db.read() as session:
        instance = session.scalars(select(DicomInstance)).one()
    data = store.absolute(instance.file_path).read_bytes()
    assert data == to_bytes(second)
    assert instance.sha256 == hashlib.sha256(data[dataset_offset(data) :]).hexdigest()
    assert store.iter_files() == files  # nothing removed, nothing written


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage" * 100, b"\x00" * 128 + b"DICM" + b"\x02\x00"],
    ids=["empty", "garbage", "truncated-meta"],
)
def test_unreadable_data_is_rejected_and_leaves_nothing(
    db: Database, store: FileStore, data: bytes
) -> None:
    result = put(db, store, data)
    assert result.outcome is StoreOutcome.REJECTED
    assert result.reason
    assert count(db, DicomInstance) == 0
    assert count(db, DicomStudy) == 0
    assert list(store.tmp.iterdir()) == []
    assert store.iter_files() == []


def test_truncated_real_file_is_rejected(db: Database, store: FileStore) -> None:
    data = to_bytes(ct_dataset(study_uid=generate_uid()))
    result = put(db, store, data[: len(data) // 2])
    assert result.outcome in (StoreOutcome.REJECTED, StoreOutcome.MISMATCH)
    assert count(db, DicomInstance) == 0


def test_hostile_uid_never_becomes_a_path(db: Database, store: FileStore) -> None:
    ds = ct_dataset(study_uid="../../../../etc")
    result = put(db, store, to_bytes(ds))
    assert result.outcome is StoreOutcome.MISMATCH
    assert result.reason == "StudyInstanceUID is not a valid UID"
    assert store.iter_files() == []


# --------------------------------------------------------------------------- matching


def _load_demo(db: Database) -> None:
    with db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor=SystemActor.CLI)


def test_samples_match_their_demo_orders_by_study_uid(db: Database, store: FileStore) -> None:
    _load_demo(db)
    for path in sorted(SAMPLE_DIR.rglob("*.dcm")):
        put(db, store, path.read_bytes())
    with db.read() as session:
        for demo in DEMO_STUDIES:
            study = session.scalar(
                select(DicomStudy).where(DicomStudy.study_instance_uid == demo.study_instance_uid)
            )
            assert study is not None
            if demo.ordered:
                order = session.get(ImagingRequest, study.imaging_request_id)
                assert study.metadata_status == "matched"
                assert order is not None and order.accession_number == demo.accession_number
                assert order.status == "in_progress"
                assert order.exam_started_at is not None
            else:
                assert study.metadata_status == "unmatched"
                assert study.imaging_request_id is None


def _order(db: Database, **values: object) -> int:
    defaults: dict[str, object] = {
        "patient_id": "PAT1",
        "patient_name": "DOE^JANE",
        "patient_name_folded": "doe^jane",
        "patient_birth_date": "19700101",
        "patient_sex": "F",
        "status": "scheduled",
        "priority": "routine",
    }
    with db.unit_of_work() as session:
        order = ImagingRequest(**{**defaults, **values})
        session.add(order)
        session.flush()
        return order.id


@pytest.mark.parametrize("how", ["accession", "request_attributes"])
def test_study_matches_by_accession_or_request_attributes(
    db: Database, store: FileStore, how: str
) -> None:
    order_id = _order(db, accession_number="ACC77")
    study_uid = generate_uid()
    ds = (
        ct_dataset(study_uid=study_uid, accession="ACC77")
        if how == "accession"
        else ct_dataset(study_uid=study_uid, request_accessions=("OTHER", "ACC77"))
    )
    put(db, store, to_bytes(ds))
    study = study_row(db, study_uid)
    assert (study.metadata_status, study.imaging_request_id) == ("matched", order_id)
    with db.read() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_matched")
        ).one()
    assert event.details["matched_by"] == (
        "AccessionNumber" if how == "accession" else "RequestAttributesSequence"
    )


def test_study_matches_by_the_study_uid_in_a_request_attributes_item(
    db: Database, store: FileStore
) -> None:
    # a modality that made its own StudyInstanceUID but kept the order's in the item
    order_uid = generate_uid()
    order_id = _order(db, accession_number="ACC78", study_instance_uid=order_uid)
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, request_study_uids=(order_uid,))))
    study = study_row(db, study_uid)
    assert (study.metadata_status, study.imaging_request_id) == ("matched", order_id)


def test_demographic_disagreement_with_the_order_is_a_conflict(
    db: Database, store: FileStore
) -> None:
    _order(db, accession_number="ACC88", patient_birth_date="19800101")
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC88")))
    assert study_row(db, study_uid).metadata_status == "conflict"
    with db.read() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_conflict")
        ).one()
        order = session.scalars(select(ImagingRequest)).one()
    assert event.details["mismatched_attributes"] == ["PatientBirthDate"]
    assert order.status == "scheduled"  # a conflict does not start the exam


def test_known_study_uid_for_another_patient_is_quarantined_not_merged(
    db: Database, store: FileStore
) -> None:
    study_uid = generate_uid()
    first = ct_dataset(study_uid=study_uid, patient_id="PAT1")
    put(db, store, to_bytes(first))
    intruder = ct_dataset(study_uid=study_uid, patient_id="PAT2", patient_name="ROE^RICHARD")
    assert put(db, store, to_bytes(intruder)).outcome is StoreOutcome.STORED
    study = study_row(db, study_uid)
    assert study.metadata_status == "conflict"
    with db.read() as session:
        flagged = session.scalars(
            select(DicomInstance).where(DicomInstance.quarantined.is_(True))
        ).one()
        patient = session.get(Patient, study.patient_pk)
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_patient_conflict")
        ).one()
    assert flagged.sop_instance_uid == intruder.SOPInstanceUID
    assert flagged.received_patient_id == "PAT2"
    assert patient is not None and patient.patient_id == "PAT1"  # the study keeps its patient
    assert audit.patient_id == "PAT2"
    # held, not merged: the study's counts and modalities are still PAT1's alone
    assert (study.instance_count, study.series_count, study.modalities_in_study) == (1, 1, "CT")
    # and C-FIND offers no series of PAT2's under PAT1's study (nothing to retrieve)
    with db.read() as session:
        series = find_entities(
            session,
            level=Level.SERIES,
            keys={"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""},
            limit=10,
        ).matches
    assert [row["SeriesInstanceUID"] for row in series] == [first.SeriesInstanceUID]
    # a restore that recounts the study (rows removed after the backup's
    # snapshot) counts as ingest does
    with db.unit_of_work() as session:
        recount(session, set(session.scalars(select(DicomSeries.id))))
    recounted = study_row(db, study_uid)
    assert (recounted.instance_count, flagged_series_count(db, flagged.series_pk)) == (1, 0)


def flagged_series_count(db: Database, series_pk: int) -> int:
    with db.read() as session:
        series = session.get(DicomSeries, series_pk)
        assert series is not None
        return series.instance_count


def test_accession_without_issuer_matching_orders_of_two_issuers_is_left_unmatched(
    db: Database, store: FileStore
) -> None:
    _order(db, accession_number="ACC55", accession_issuer="HOSP_A")
    _order(db, accession_number="ACC55", accession_issuer="HOSP_B")
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC55")))
    study = study_row(db, study_uid)
    assert (study.metadata_status, study.imaging_request_id) == ("unmatched", None)
    with db.read() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_unmatched")
        ).one()
    assert event.details["matched_by"] == "ambiguous"


def test_values_longer_than_their_vr_allows_are_indexed_cut_and_kept_whole_in_the_file(
    db: Database, store: FileStore
) -> None:
    ds = ct_dataset(study_uid=generate_uid(), accession="A" * 30)
    ds.StationName = "STATION-NAME-FAR-TOO-LONG"
    ds.StudyDescription = "D" * 100
    ds.PatientBirthDate = "1970-01-01"  # not DA at all: not indexed
    data = to_bytes(ds)
    assert put(db, store, data).outcome is StoreOutcome.STORED
    study = study_row(db, ds.StudyInstanceUID)
    assert study.accession_number == "A" * 16
    assert study.study_description == "D" * 64
    with db.read() as session:
        series = session.scalars(select(DicomSeries)).one()
        patient = session.scalars(select(Patient)).one()
        path = session.scalars(select(DicomInstance.file_path)).one()
    assert series.station_name == "STATION-NAME-FAR"
    assert patient.patient_birth_date is None
    assert store.absolute(path).read_bytes() == data


def test_a_name_that_grows_when_casefolded_is_stored_and_matches(
    db: Database, store: FileStore
) -> None:
    """'ß' folds to 'ss': a full-length name's folded copy outgrows its column."""
    name = "=".join(["ß" * 64] * 3)
    ds = ct_dataset(study_uid=generate_uid(), patient_name=name)
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert put(db, store, to_bytes(ds)).outcome is StoreOutcome.STORED
    with db.read() as session:
        patient = session.scalars(select(Patient)).one()
    assert patient.patient_name == name
    assert patient.patient_name_folded is not None
    assert patient.patient_name_folded.startswith("ss" * 64)


def test_acr_nema_dates_are_indexed_as_da(db: Database, store: FileStore) -> None:
    ds = ct_dataset(study_uid=generate_uid())
    ds.StudyDate = "2026.01.05"
    put(db, store, to_bytes(ds))
    assert study_row(db, ds.StudyInstanceUID).study_date == "20260105"


# --------------------------------------------------------------------------- completeness


def _settle(db: Database, after_seconds: float, stable: int = 60):  # type: ignore[no-untyped-def]
    with db.read() as session:
        last = session.scalar(select(func.max(DicomStudy.last_received_at)))
    assert last is not None
    return run_study_stability(
        db, stable_seconds=stable, sla=SLA, now=last + timedelta(seconds=after_seconds)
    )


def test_matched_study_completes_after_the_quiet_period_and_is_queued_for_reading(
    db: Database, store: FileStore
) -> None:
    order_id = _order(db, accession_number="ACC1", priority="stat")
    study_uid = generate_uid()
    series_uid = generate_uid()
    for n in range(3):
        put(
            db,
            store,
            to_bytes(
                ct_dataset(
                    study_uid=study_uid, series_uid=series_uid, accession="ACC1", instance_number=n
                )
            ),
        )
    summary = _settle(db, after_seconds=30)
    assert (summary.became_quiet, summary.completed) == (0, 0)
    assert study_row(db, study_uid).completeness == "receiving"
    summary = _settle(db, after_seconds=61)
    assert (summary.became_quiet, summary.completed) == (1, 1)
    study = study_row(db, study_uid)
    assert (study.completeness, study.completeness_evidence) == ("complete", "stability_timer")
    with db.read() as session:
        order = session.get(ImagingRequest, order_id)
        item = session.scalars(select(WorklistItem)).one()
    assert order is not None and order.status == "performed"
    assert (item.queue_type, item.priority, item.dicom_study_id) == ("reading", "stat", study.id)
    assert study.completed_at is not None
    assert item.due_at == SLA.due(Priority.STAT, study.completed_at)


def test_unmatched_study_goes_to_reconciliation_not_reading(db: Database, store: FileStore) -> None:
    put(db, store, to_bytes(ct_dataset(study_uid=generate_uid(), accession="NOORDER")))
    _settle(db, after_seconds=61)
    with db.read() as session:
        item = session.scalars(select(WorklistItem)).one()
    assert item.queue_type == "reconciliation"


def test_late_image_reopens_a_complete_study_without_a_second_work_item(
    db: Database, store: FileStore
) -> None:
    _order(db, accession_number="ACC2")
    study_uid, series_uid = generate_uid(), generate_uid()
    put(
        db,
        store,
        to_bytes(ct_dataset(study_uid=study_uid, series_uid=series_uid, accession="ACC2")),
    )
    _settle(db, after_seconds=61)
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC2", instance_number=9)))
    study = study_row(db, study_uid)
    assert (study.completeness, study.instance_count, study.series_count) == ("receiving", 2, 2)
    _settle(db, after_seconds=61)
    assert study_row(db, study_uid).completeness == "complete"
    assert count(db, WorklistItem) == 1
    with db.read() as session:
        assert session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_reopened")
        ).one()


def test_study_with_mpps_in_progress_waits_quiet_instead_of_completing(
    db: Database, store: FileStore
) -> None:
    order_id = _order(db, accession_number="ACC3")
    with db.unit_of_work() as session:
        session.add(
            PerformedProcedureStep(
                sop_instance_uid=generate_uid(), status="IN PROGRESS", imaging_request_id=order_id
            )
        )
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC3")))
    summary = _settle(db, after_seconds=600)
    assert (summary.became_quiet, summary.completed, summary.waiting_for_mpps) == (1, 0, 1)
    assert study_row(db, study_uid).completeness == "quiet"
    assert count(db, WorklistItem) == 0


def _mpps(db: Database, order_id: int, status: str, series: dict[str, list[str]] | None) -> None:
    with db.unit_of_work() as session:
        session.add(
            PerformedProcedureStep(
                sop_instance_uid=generate_uid(),
                status=status,
                imaging_request_id=order_id,
                performed_series=series,
            )
        )


def test_completed_mpps_completes_the_study_once_every_listed_instance_arrived(
    db: Database, store: FileStore
) -> None:
    order_id = _order(db, accession_number="ACC4")
    study_uid, series_uid = generate_uid(), generate_uid()
    sent = [
        ct_dataset(study_uid=study_uid, series_uid=series_uid, accession="ACC4", instance_number=n)
        for n in range(3)
    ]
    _mpps(db, order_id, "COMPLETED", {series_uid: [ds.SOPInstanceUID for ds in sent]})
    for ds in sent[:2]:
        put(db, store, to_bytes(ds))
    summary = _settle(db, after_seconds=1)
    assert summary.completed_by_mpps == 0  # one listed instance is still missing
    assert study_row(db, study_uid).completeness == "receiving"
    put(db, store, to_bytes(sent[2]))
    summary = _settle(db, after_seconds=1)  # well within the quiet period
    assert summary.completed_by_mpps == 1
    study = study_row(db, study_uid)
    assert (study.completeness, study.completeness_evidence) == ("complete", "mpps")
    with db.read() as session:
        order = session.get(ImagingRequest, order_id)
    assert order is not None and order.status == "performed"
    assert count(db, WorklistItem) == 1


def test_mpps_left_in_progress_holds_a_study_at_most_the_configured_wait(
    db: Database, store: FileStore
) -> None:
    order_id = _order(db, accession_number="ACC5")
    _mpps(db, order_id, "IN PROGRESS", None)
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC5")))
    with db.read() as session:
        last = session.scalar(select(DicomStudy.last_received_at))
    assert last is not None
    held = run_study_stability(
        db, stable_seconds=60, sla=SLA, now=last + timedelta(seconds=3000), mpps_wait_seconds=3600
    )
    assert held.waiting_for_mpps == 1
    released = run_study_stability(
        db, stable_seconds=60, sla=SLA, now=last + timedelta(seconds=3601), mpps_wait_seconds=3600
    )
    assert released.completed == 1
    assert study_row(db, study_uid).completeness_evidence == "stability_timer"


# --------------------------------------------------------------------------- outages


@pytest.mark.parametrize("backend", ["postgresql"])
def test_database_outage_fails_the_store_and_leaves_no_file(
    db: Database,
    store: FileStore,
    db_url: str,
    postgres,  # type: ignore[no-untyped-def]
) -> None:
    name = make_url(db_url).database
    db.dispose()
    with psycopg.connect(postgres.psycopg_dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    result = put(db, store, to_bytes(ct_dataset(study_uid=generate_uid())))
    assert result.outcome is StoreOutcome.FAILED
    assert result.reason == "database unavailable"
    assert store.iter_files() == []
    assert list(store.tmp.iterdir()) == []
    with psycopg.connect(postgres.psycopg_dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    retry = put(db, store, to_bytes(ct_dataset(study_uid=generate_uid())))
    assert retry.outcome is StoreOutcome.STORED  # recovers without a restart


def _items(db: Database, study_uid: str) -> list[tuple[str, str, str]]:
    with db.read() as session:
        rows = session.execute(
            select(WorklistItem.queue_type, WorklistItem.status, WorklistItem.priority)
            .join(DicomStudy, WorklistItem.dicom_study_id == DicomStudy.id)
            .where(DicomStudy.study_instance_uid == study_uid)
            .order_by(WorklistItem.id)
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def test_patient_conflict_after_queueing_takes_the_study_off_the_reading_worklist(
    db: Database, store: FileStore
) -> None:
    _order(db, accession_number="ACC3", priority="urgent")
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="ACC3")))
    _settle(db, after_seconds=61)
    with db.unit_of_work() as session:  # a radiologist is reading it
        reading = session.scalars(select(WorklistItem)).one()
        reading.status = "claimed"
        due_at = reading.due_at
    assert due_at is not None

    intruder = ct_dataset(study_uid=study_uid, patient_id="PAT2", patient_name="ROE^RICHARD")
    put(db, store, to_bytes(intruder))
    assert study_row(db, study_uid).metadata_status == "conflict"
    # off the reading worklist, onto reconciliation at the same priority and due time
    assert _items(db, study_uid) == [
        ("reading", "cancelled", "urgent"),
        ("reconciliation", "pending", "urgent"),
    ]
    with db.read() as session:
        reconcile = session.scalars(
            select(WorklistItem).where(WorklistItem.queue_type == "reconciliation")
        ).one()
        (cancelled,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "worklist_item_cancelled")
        ).all()
    assert reconcile.due_at == due_at
    assert (cancelled.actor, cancelled.source_address) == ("CT_MAIN_1", "127.0.0.1:5000")
    assert cancelled.details["before"]["status"] == "claimed"
    assert cancelled.details["after"]["status"] == "cancelled"
    assert cancelled.patient_id == "PAT1" and "different PatientID" in (cancelled.reason or "")

    # a second stray instance changes nothing more
    again = ct_dataset(study_uid=study_uid, patient_id="PAT2", patient_name="ROE^RICHARD")
    put(db, store, to_bytes(again))
    assert len(_items(db, study_uid)) == 2


def test_a_rejected_study_gets_no_work_item_and_stays_rejected(
    db: Database, store: FileStore
) -> None:
    study_uid = generate_uid()
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="NOORDER")))
    with db.unit_of_work() as session:
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.study_instance_uid == study_uid)
            .values(metadata_status="rejected")
        )
    _settle(db, after_seconds=61)
    put(db, store, to_bytes(ct_dataset(study_uid=study_uid, accession="NOORDER")))
    _settle(db, after_seconds=61)
    intruder = ct_dataset(study_uid=study_uid, patient_id="PAT2", patient_name="ROE^RICHARD")
    put(db, store, to_bytes(intruder))
    _settle(db, after_seconds=61)
    study = study_row(db, study_uid)
    assert (study.metadata_status, study.completeness) == ("rejected", "complete")
    assert _items(db, study_uid) == []
    with db.read() as session:
        flagged = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study_patient_conflict")
        ).one()
    assert flagged.details["after"] == {"metadata_status": "rejected"}
