"""MPPS N-CREATE / N-SET (RAD-6/7) with a pynetdicom SCU, each on its own association."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, ImagingRequest, PerformedProcedureStep, WorklistItem
from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.operations.demo import load_demo


def _demo(node: Node) -> dict[str, ImagingRequest]:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor=SystemActor.CLI)
    return _orders(node)


def _orders(node: Node) -> dict[str, ImagingRequest]:
    assert node.db is not None
    with node.db.read() as session:
        return {o.accession_number or "": o for o in session.scalars(select(ImagingRequest))}


def _send(node: Node, method: str, dataset: Dataset, uid: str) -> int:
    """One N-CREATE or N-SET on a fresh association (as modalities often do)."""
    ae = AE(ae_title="CT_MAIN_1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        if method == "create":
            status, _ = assoc.send_n_create(dataset, ModalityPerformedProcedureStep, uid)
        else:
            status, _ = assoc.send_n_set(dataset, ModalityPerformedProcedureStep, uid)
        return int(status.Status)
    finally:
        assoc.release()


def _in_progress(order: ImagingRequest | None, status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedStationAETitle = "CT_MAIN_1"
    ds.PerformedProcedureStepStartDate = "20261124"
    ds.PerformedProcedureStepStartTime = "101500"
    item = Dataset()
    item.StudyInstanceUID = order.study_instance_uid if order else generate_uid()
    item.AccessionNumber = order.accession_number if order else ""
    ds.ScheduledStepAttributesSequence = [item]
    return ds


def _completed(series: dict[str, list[str]] | None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261124"
    ds.PerformedProcedureStepEndTime = "103000"
    if series is not None:
        items = []
        for series_uid, sops in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            refs = []
            for sop in sops:
                ref = Dataset()
                ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
                ref.ReferencedSOPInstanceUID = sop
                refs.append(ref)
            item.ReferencedImageSequence = refs
            items.append(item)
        ds.PerformedSeriesSequence = items
    return ds


def test_in_progress_then_completed_moves_the_order_and_records_the_series(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0001"]
    uid = generate_uid()
    assert _send(node, "create", _in_progress(order), uid) == 0x0000
    assert _orders(node)["DEMOACC0001"].status == "in_progress"

    # COMPLETED without PerformedSeriesSequence: refused, nothing changes
    assert _send(node, "set", _completed(None), uid) == 0x0120
    assert _orders(node)["DEMOACC0001"].status == "in_progress"

    series = {generate_uid(): [generate_uid(), generate_uid()]}
    assert _send(node, "set", _completed(series), uid) == 0x0000
    performed = _orders(node)["DEMOACC0001"]
    assert performed.status == "performed"
    assert performed.exam_completed_at is not None
    assert node.db is not None
    with node.db.read() as session:
        step = session.scalars(select(PerformedProcedureStep)).one()
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "mpps_completed")
        ).one()
    assert (step.status, step.performed_series) == ("COMPLETED", series)
    # the images have not arrived: flagged, not refused
    assert audit.details["series_not_received"] == list(series)
    # after completion nothing more may change it
    assert _send(node, "set", _completed(series), uid) == 0x0110


def test_discontinued_discontinues_the_order_with_its_reason(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0002"]
    uid = generate_uid()
    assert _send(node, "create", _in_progress(order), uid) == 0x0000
    change = Dataset()
    change.PerformedProcedureStepStatus = "DISCONTINUED"
    reason = Dataset()
    reason.CodeValue = "110514"
    reason.CodingSchemeDesignator = "DCM"
    reason.CodeMeaning = "Incorrect worklist entry selected"
    change.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
    assert _send(node, "set", change, uid) == 0x0000
    assert _orders(node)["DEMOACC0002"].status == "discontinued"
    assert node.db is not None
    with node.db.read() as session:
        step = session.scalars(select(PerformedProcedureStep)).one()
    assert step.discontinuation_reason == "Incorrect worklist entry selected"


def test_error_statuses_and_no_state_change(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0003"]
    uid = generate_uid()
    assert _send(node, "create", _in_progress(order, status="COMPLETED"), uid) == 0x0106
    assert _orders(node)["DEMOACC0003"].status == "scheduled"
    assert _send(node, "create", _in_progress(order), uid) == 0x0000
    assert _send(node, "create", _in_progress(order), uid) == 0x0111  # duplicate
    assert _send(node, "set", _completed({generate_uid(): []}), generate_uid()) == 0x0112
    bad_time = _completed({generate_uid(): []})
    bad_time.PerformedProcedureStepEndDate = "2026-11-24"
    assert _send(node, "set", bad_time, uid) == 0x0106
    assert _orders(node)["DEMOACC0003"].status == "in_progress"


def test_an_unscheduled_exam_is_recorded_for_reconciliation(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    _demo(node)
    assert _send(node, "create", _in_progress(None), generate_uid()) == 0x0000
    assert node.db is not None
    with node.db.read() as session:
        step = session.scalars(select(PerformedProcedureStep)).one()
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "mpps_in_progress")
        ).one()
        item = session.scalars(select(WorklistItem)).one()
    assert step.imaging_request_id is None
    assert (audit.outcome, audit.details["unscheduled"]) == ("minor_failure", True)
    assert (item.queue_type, item.performed_procedure_step_id) == ("reconciliation", step.id)
    assert all(o.status == "scheduled" for o in _orders(node).values())


def test_series_sent_in_an_earlier_n_set_satisfy_completion(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0001"]
    uid = generate_uid()
    assert _send(node, "create", _in_progress(order), uid) == 0x0000
    series_only = _completed({generate_uid(): [generate_uid()]})
    series_only.PerformedProcedureStepStatus = "IN PROGRESS"
    assert _send(node, "set", series_only, uid) == 0x0000
    finish = Dataset()
    finish.PerformedProcedureStepStatus = "COMPLETED"
    finish.PerformedProcedureStepEndDate = "20261124"
    finish.PerformedProcedureStepEndTime = "110000"
    assert _send(node, "set", finish, uid) == 0x0000
    assert _orders(node)["DEMOACC0001"].status == "performed"


def test_an_mpps_for_a_cancelled_order_goes_to_reconciliation(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0002"]
    assert node.db is not None
    with node.db.unit_of_work() as session:
        row = session.get(ImagingRequest, order.id)
        assert row is not None
        row.status = "cancelled"
    assert _send(node, "create", _in_progress(order), generate_uid()) == 0x0000
    assert _orders(node)["DEMOACC0002"].status == "cancelled"  # not restarted
    with node.db.read() as session:
        item = session.scalars(select(WorklistItem)).one()
    assert (item.queue_type, item.imaging_request_id) == ("reconciliation", order.id)


def test_missing_type_1_attributes_are_0120(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    order = _demo(node)["DEMOACC0003"]
    no_status = _in_progress(order)
    del no_status.PerformedProcedureStepStatus
    assert _send(node, "create", no_status, generate_uid()) == 0x0120
    no_steps = _in_progress(order)
    del no_steps.ScheduledStepAttributesSequence
    assert _send(node, "create", no_steps, generate_uid()) == 0x0120
    assert _orders(node)["DEMOACC0003"].status == "scheduled"
