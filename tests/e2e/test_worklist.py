"""Modality Worklist C-FIND (RAD-5): DCMTK findscu -W and a pynetdicom SCU."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy import select, update

from dicom_node.db.models import AuditEvent, ImagingRequest
from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.operations.demo import load_demo
from tests.support import findscu_w


def _with_demo(node: Node) -> dict[str, ImagingRequest]:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor=SystemActor.CLI)
    with node.db.read() as session:
        orders = session.scalars(select(ImagingRequest)).all()
        return {order.accession_number or "": order for order in orders}


@pytest.fixture
def scheduled(make_node) -> tuple[Node, dict[str, ImagingRequest]]:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    return node, _with_demo(node)


def _local_date(order: ImagingRequest) -> str:
    assert order.scheduled_at is not None
    return order.scheduled_at.astimezone().strftime("%Y%m%d")


SPS = "ScheduledProcedureStepSequence[0]"


def test_a_ct_asks_for_todays_ct_steps_and_gets_the_scheduled_identifiers(
    scheduled: tuple[Node, dict[str, ImagingRequest]], tmp_path: Path
) -> None:
    node, orders = scheduled
    today = _local_date(orders["DEMOACC0001"])
    responses = findscu_w(
        node,
        tmp_path,
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedurePriority",
        f"{SPS}.ScheduledStationAETitle=CT_MAIN_1",
        f"{SPS}.Modality=CT",
        f"{SPS}.ScheduledProcedureStepStartDate={today}",
        f"{SPS}.ScheduledProcedureStepStartTime",
        f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.ScheduledProcedureStepStatus",
    )
    assert {r.AccessionNumber for r in responses} == {"DEMOACC0001", "DEMOACC0003"}
    for response in responses:
        order = orders[response.AccessionNumber]
        # assigned once when scheduled, returned unchanged
        assert response.StudyInstanceUID == order.study_instance_uid
        step = response.ScheduledProcedureStepSequence[0]
        assert step.ScheduledStationAETitle == "CT_MAIN_1"
        assert step.ScheduledProcedureStepStartDate == today
        assert step.ScheduledProcedureStepID == order.scheduled_procedure_step_id
        assert step.ScheduledProcedureStepStatus == "SCHEDULED"
        keywords = {element.keyword for element in step}
        assert keywords == {
            "ScheduledStationAETitle",
            "Modality",
            "ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepStartTime",
            "ScheduledProcedureStepID",
            "ScheduledProcedureStepStatus",
        }


def test_patient_name_wildcards_match_case_insensitively_and_japanese_comes_back_in_utf8(
    scheduled: tuple[Node, dict[str, ImagingRequest]], tmp_path: Path
) -> None:
    node, _ = scheduled
    smith = findscu_w(node, tmp_path / "smith", "PatientName=smith*", "AccessionNumber")
    assert [r.AccessionNumber for r in smith] == ["DEMOACC0002"]
    yamada = findscu_w(
        node,
        tmp_path / "yamada",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientName=山田^太郎",
        "PatientID",
    )
    (response,) = yamada
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert str(response.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def _find(
    node: Node, identifier: Dataset, calling: str = "PYMWL"
) -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        return [
            (int(s.Status), i)
            for s, i in assoc.send_c_find(identifier, ModalityWorklistInformationFind)
            if s
        ]
    finally:
        assoc.release()


def _query(**step: str) -> Dataset:
    identifier = Dataset()
    identifier.AccessionNumber = ""
    item = Dataset()
    for keyword, value in step.items():
        setattr(item, keyword, value)
    identifier.ScheduledProcedureStepSequence = [item]
    return identifier


def _accessions(responses: list[tuple[int, Dataset | None]]) -> set[str]:
    return {str(ds.AccessionNumber) for code, ds in responses if code in (0xFF00, 0xFF01) and ds}


def test_date_ranges_station_and_modality_filter_inside_the_sequence(
    scheduled: tuple[Node, dict[str, ImagingRequest]],
) -> None:
    node, orders = scheduled
    today = _local_date(orders["DEMOACC0001"])
    yesterday = (datetime.strptime(today, "%Y%m%d") - timedelta(days=1)).strftime("%Y%m%d")
    everything = {"DEMOACC0001", "DEMOACC0002", "DEMOACC0003"}
    assert (
        _accessions(_find(node, _query(ScheduledProcedureStepStartDate=f"{today}-"))) == everything
    )
    assert (
        _accessions(_find(node, _query(ScheduledProcedureStepStartDate=f"-{yesterday}"))) == set()
    )
    assert _accessions(_find(node, _query(Modality="MR"))) == {"DEMOACC0002"}
    assert _accessions(_find(node, _query(ScheduledStationAETitle="MR_*"))) == {"DEMOACC0002"}
    assert _accessions(_find(node, _query(ScheduledProcedureStepStatus="STARTED"))) == set()


def test_only_steps_still_scheduled_are_listed(
    scheduled: tuple[Node, dict[str, ImagingRequest]],
) -> None:
    node, _ = scheduled
    assert node.db is not None
    with node.db.unit_of_work() as session:
        session.execute(
            update(ImagingRequest)
            .where(ImagingRequest.accession_number == "DEMOACC0001")
            .values(status="in_progress")
        )
    assert _accessions(_find(node, _query())) == {"DEMOACC0002", "DEMOACC0003"}


def test_a_stray_query_retrieve_level_is_tolerated_and_bad_ranges_refused(
    scheduled: tuple[Node, dict[str, ImagingRequest]],
) -> None:
    node, _ = scheduled
    stray = _query(Modality="MR")
    stray.QueryRetrieveLevel = "STUDY"
    assert _accessions(_find(node, stray)) == {"DEMOACC0002"}
    bad = _find(node, _query(ScheduledProcedureStepStartDate="20261231-20260101"))
    assert [code for code, _ in bad] == [0xA900]
    assert node.db is not None
    with node.db.read() as session:
        audits = session.scalars(
            select(AuditEvent).where(AuditEvent.target_class == "WORKLIST")
        ).all()
    assert [a.outcome for a in audits] == ["success", "minor_failure"]


def test_the_calling_ae_filter_serves_modalities_that_leave_the_station_empty(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(worklist_by_calling_ae=True)
    _with_demo(node)
    assert _accessions(_find(node, _query(), calling="MR_NORTH_1")) == {"DEMOACC0002"}
    explicit = _query(ScheduledStationAETitle="CT_MAIN_1")
    assert _accessions(_find(node, explicit, calling="MR_NORTH_1")) == {
        "DEMOACC0001",
        "DEMOACC0003",
    }


def test_start_time_performing_physician_and_priority_keys(
    scheduled: tuple[Node, dict[str, ImagingRequest]],
) -> None:
    node, orders = scheduled
    first = orders["DEMOACC0001"]
    assert first.scheduled_at is not None
    local = first.scheduled_at.astimezone()
    day, clock = local.strftime("%Y%m%d"), local.strftime("%H%M")
    # with the date: a combined date-time range; without: the time of day
    around = f"{clock}-{clock}"
    assert _accessions(
        _find(
            node,
            _query(ScheduledProcedureStepStartDate=day, ScheduledProcedureStepStartTime=around),
        )
    ) == {"DEMOACC0001"}
    assert _accessions(_find(node, _query(ScheduledProcedureStepStartTime=around))) == {
        "DEMOACC0001"
    }
    assert _accessions(_find(node, _query(ScheduledPerformingPhysicianName="SMITH*"))) == set()
    routine = _query()
    routine.RequestedProcedurePriority = "ROUTINE"
    assert _accessions(_find(node, routine)) == {
        o for o in orders if orders[o].priority == "routine"
    }


def test_nested_empty_sequences_are_return_keys_and_two_step_items_are_refused(
    scheduled: tuple[Node, dict[str, ImagingRequest]],
) -> None:
    node, _ = scheduled
    nested = _query(Modality="MR")
    protocol = Dataset()
    protocol.CodeValue = ""
    protocol.ProtocolContextSequence = [Dataset()]
    nested.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [protocol]
    answers = _find(node, nested)
    assert _accessions(answers) == {"DEMOACC0002"}
    assert answers[0][0] == 0xFF01  # the protocol code is not recorded: warned
    two = _query()
    two.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    assert [code for code, _ in _find(node, two)] == [0xA900]
    assert node.db is not None
    with node.db.read() as session:
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert last is not None and (last.action, last.outcome) == ("query", "minor_failure")
