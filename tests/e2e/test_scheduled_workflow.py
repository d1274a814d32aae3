"""IHE Scheduled Workflow end to end: order -> worklist -> MPPS -> images -> reading."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)
from sqlalchemy import select

from dicom_node.db.models import (
    AuditEvent,
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Modality,
    WorklistItem,
)
from dicom_node.jobs.workflow import run_study_stability
from dicom_node.node import Node, sla_policy
from dicom_node.services.workflow.orders import schedule_order
from tests.dicomfiles import ct_dataset, write
from tests.support import dcmtk_env, dcmtk_tool

# The node's own study-stability job would complete the study on the MPPS
# evidence as soon as it ticks (every 10 s, on the wall clock): a tick between
# the N-SET COMPLETED and the test's own run left that run nothing to do. Its
# ticks are aligned on the epoch: with this interval the first is in 2286.
NO_STABILITY_TICK = {"stability_check_interval_seconds": 1e10}


def _scheduled_order(node: Node) -> int:
    """An urgent CT order for WF1, scheduled on CT_ONE now."""
    assert node.db is not None
    with node.db.unit_of_work() as session:
        center = ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        ct = Modality(imaging_center_id=center.id, name="CT", type="CT", dicom_ae_title="CT_ONE")
        order = ImagingRequest(
            patient_id="WF1",
            patient_name="FLOW^WORK",
            patient_name_folded="flow^work",
            patient_sex="M",
            priority="urgent",
            study_description="CT CHEST",
        )
        session.add_all([ct, order])
        session.flush()
        schedule_order(
            session, order, modality=ct, scheduled_at=datetime.now(UTC), actor="scheduler"
        )
        return order.id


def _storescu(node: Node, files: list[Path]) -> None:
    sent = subprocess.run(
        [dcmtk_tool("storescu"), "-aet", "CT_ONE", "-aec", "DICOM_NODE", "127.0.0.1",
         str(node.dicom_port), *map(str, files)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def _order_events(node: Node, order_id: int, action: str) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == action, AuditEvent.target_id == str(order_id)
                )
            )
        )


def _from_ct_one(event: AuditEvent) -> bool:
    """The event names the modality that acted: its AE title and its address."""
    host, _, port = (event.source_address or "").rpartition(":")
    return event.actor == "CT_ONE" and host == "127.0.0.1" and port.isdigit()


def test_scheduled_order_to_reading_worklist(make_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(**NO_STABILITY_TICK)
    assert node.db is not None

    # 1. the order is created and scheduled on CT_ONE
    order_id = _scheduled_order(node)

    ae = AE(ae_title="CT_ONE")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)

    # 2. the modality asks its worklist and takes the identifiers from it
    query = Dataset()
    query.PatientName = ""
    query.AccessionNumber = ""
    query.StudyInstanceUID = ""
    step = Dataset()
    step.ScheduledStationAETitle = "CT_ONE"
    query.ScheduledProcedureStepSequence = [step]
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    answers = [
        answer
        for status, answer in assoc.send_c_find(query, ModalityWorklistInformationFind)
        if status and status.Status == 0xFF00
    ]
    assoc.release()
    (worklist,) = answers
    study_uid, accession = str(worklist.StudyInstanceUID), str(worklist.AccessionNumber)

    # 3. MPPS IN PROGRESS
    mpps_uid = generate_uid()
    started = Dataset()
    started.PerformedProcedureStepStatus = "IN PROGRESS"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = accession
    started.ScheduledStepAttributesSequence = [item]
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    status, _ = assoc.send_n_create(started, ModalityPerformedProcedureStep, mpps_uid)
    assoc.release()
    assert status.Status == 0x0000

    # 4. the images, carrying the worklist's UID and accession, sent by DCMTK
    series_uid = generate_uid()
    images = [
        ct_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="WF1",
                   patient_name="FLOW^WORK", sex="M", birth_date="", accession=accession,
                   instance_number=n)
        for n in range(3)
    ]  # fmt: skip
    _storescu(node, [write(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate(images)])
    # the exam was started by the MPPS: the event names the modality and its address
    (started_event,) = _order_events(node, order_id, "order_in_progress")
    assert _from_ct_one(started_event)

    # 5. MPPS COMPLETED, listing what was sent
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = datetime.now().strftime("%Y%m%d")
    done.PerformedProcedureStepEndTime = datetime.now().strftime("%H%M%S")
    performed = Dataset()
    performed.SeriesInstanceUID = series_uid
    refs = []
    for ds in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        refs.append(ref)
    performed.ReferencedImageSequence = refs
    done.PerformedSeriesSequence = [performed]
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
    assoc.release()
    assert status.Status == 0x0000

    # 6. the next stability run completes the study on the MPPS evidence, at once
    summary = run_study_stability(
        node.db,
        stable_seconds=3600,
        sla=sla_policy(node.settings),
        now=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert summary.completed_by_mpps == 1
    with node.db.read() as session:
        study = session.scalars(select(DicomStudy)).one()
        order_row = session.get(ImagingRequest, order_id)
        item_row = session.scalars(select(WorklistItem)).one()
    assert (study.metadata_status, study.imaging_request_id) == ("matched", order_id)
    assert (study.completeness, study.completeness_evidence) == ("complete", "mpps")
    assert order_row is not None and order_row.status == "performed"
    assert (item_row.queue_type, item_row.priority, item_row.dicom_study_id) == (
        "reading",
        "urgent",
        study.id,
    )


def test_images_without_mpps_start_the_order_in_the_name_of_the_modality_that_sent_them(
    make_node,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    node: Node = make_node()
    order_id = _scheduled_order(node)
    assert node.db is not None
    with node.db.read() as session:
        order = session.get(ImagingRequest, order_id)
        assert order is not None
        study_uid, accession = order.study_instance_uid, order.accession_number
    assert study_uid is not None and accession is not None
    image = ct_dataset(study_uid=study_uid, patient_id="WF1", patient_name="FLOW^WORK", sex="M",
                       birth_date="", accession=accession)  # fmt: skip
    _storescu(node, [write(image, tmp_path / "0.dcm")])

    (started,) = _order_events(node, order_id, "order_in_progress")
    assert started.details == {
        "before": {"status": "scheduled"},
        "after": {"status": "in_progress"},
    }
    assert _from_ct_one(started)
    with node.db.read() as session:
        (matched,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "study_matched"))
    assert _from_ct_one(matched)
