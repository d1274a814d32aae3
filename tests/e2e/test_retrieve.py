"""C-MOVE and C-GET over real associations: DCMTK movescu and getscu."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from tests.support import SAMPLE_DIR, dcmtk_env, dcmtk_tool, free_port


def _loaded(make_node, **settings: object) -> Node:  # type: ignore[no-untyped-def]
    node: Node = make_node(**settings)
    assert node.db is not None and node.store is not None
    files = list(iter_files([SAMPLE_DIR]))
    import_files(node.db, node.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT)
    return node


def _biggest_study(node: Node) -> tuple[str, int]:
    assert node.db is not None
    with node.db.read() as session:
        study = session.scalars(
            select(DicomStudy).order_by(DicomStudy.instance_count.desc())
        ).first()
        assert study is not None
        return study.study_instance_uid, study.instance_count


def _stored_datasets(node: Node, study_uid: str) -> dict[str, bytes]:
    assert node.db is not None and node.store is not None
    with node.db.read() as session:
        rows = session.execute(
            select(DicomInstance.sop_instance_uid, DicomInstance.file_path)
            .join(DicomSeries)
            .join(DicomStudy)
            .where(DicomStudy.study_instance_uid == study_uid)
        ).all()
    result = {}
    for uid, path in rows:
        data = node.store.absolute(path).read_bytes()
        result[uid] = data[dataset_offset(data) :]
    return result


def _received_datasets(directory: Path) -> dict[str, bytes]:
    result = {}
    for path in directory.iterdir():
        data = path.read_bytes()
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        result[str(uid)] = data[dataset_offset(data) :]
    return result


def _exports(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "instances_exported"))
        )


def _counts(**counts: int) -> dict[str, int]:
    """The Export event's counts: every key, zero unless given."""
    keys = ("offered", "completed", "warning", "failed", "sent_as_stored", "converted")
    return {**dict.fromkeys((*keys, "transcoded"), 0), **counts}


def test_movescu_retrieves_a_study_byte_identical(make_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    node = _loaded(make_node, peers=f"MOVESCU@127.0.0.1:{port}")
    study_uid, count = _biggest_study(node)
    out = tmp_path / "moved"
    out.mkdir()
    result = subprocess.run(
        [dcmtk_tool("movescu"), "-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec",
         "DICOM_NODE", "--port", str(port), "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    received = _received_datasets(out)
    assert len(received) == count
    assert received == _stored_datasets(node, study_uid)  # the dataset bytes, unchanged
    (export,) = _exports(node)
    assert export.event_code == "110106"
    assert export.details["destination"] == "MOVESCU"
    assert export.outcome == "success"
    assert export.details["counts"] == _counts(offered=count, completed=count, sent_as_stored=count)
    assert export.details["failed_instances"] == []


def test_getscu_retrieves_one_series_on_its_own_association(make_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = _loaded(make_node)
    study_uid, _ = _biggest_study(node)
    assert node.db is not None
    with node.db.read() as session:
        series = session.scalars(
            select(DicomSeries).join(DicomStudy).where(DicomStudy.study_instance_uid == study_uid)
        ).first()
        assert series is not None
        series_uid, count = series.series_instance_uid, series.instance_count
    out = tmp_path / "got"
    out.mkdir()
    result = subprocess.run(
        # +B: write what arrived, bit for bit (getscu re-encodes sequences otherwise)
        [dcmtk_tool("getscu"), "-S", "+B", "-aec", "DICOM_NODE", "-od", str(out),
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
         "-k", f"SeriesInstanceUID={series_uid}", "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    received = _received_datasets(out)
    assert len(received) == count > 0
    stored = _stored_datasets(node, study_uid)
    assert all(received[uid] == stored[uid] for uid in received)


def _move(node: Node, identifier: Dataset, destination: str) -> list[int]:
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        return [
            int(status.Status)
            for status, _ in assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
            if status
        ]
    finally:
        assoc.release()


def _study_identifier(uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    return identifier


def test_unknown_move_destination_is_a801(make_node) -> None:  # type: ignore[no-untyped-def]
    node = _loaded(make_node)
    study_uid, _ = _biggest_study(node)
    assert _move(node, _study_identifier(study_uid), "NOBODY") == [0xA801]
    (refused,) = _exports(node)
    assert (refused.outcome, refused.reason) == ("minor_failure", "unknown destination")


def test_move_to_an_unreachable_peer_reports_every_sub_operation_failed(make_node) -> None:  # type: ignore[no-untyped-def]
    node = _loaded(make_node, peers=f"GONE@127.0.0.1:{free_port()}")  # nothing listens
    study_uid, count = _biggest_study(node)
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_move(
                _study_identifier(study_uid), "GONE", StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()
    ((final, report),) = responses
    assert final.Status == 0xA702  # unable to perform sub-operations, not A801
    assert final.NumberOfFailedSuboperations == count
    assert (final.NumberOfCompletedSuboperations, final.NumberOfWarningSuboperations) == (0, 0)
    assert report is not None
    assert sorted(report.FailedSOPInstanceUIDList) == sorted(_stored_datasets(node, study_uid))
    # the node goes on; an unknown AE title is still A801
    assert _move(node, _study_identifier(study_uid), "NOBODY") == [0xA801]
    unreachable, unknown = _exports(node)
    assert (unreachable.reason, unknown.reason) == (
        "destination unreachable",
        "unknown destination",
    )
    assert unreachable.outcome == "serious_failure"  # nothing reached it
    assert unreachable.details["counts"] == _counts(failed=count)
    failed = unreachable.details["failed_instances"]
    assert len(failed) == min(count, 100)
    assert {entry["reason"] for entry in failed} == {"destination unreachable"}


def test_movescu_to_an_unreachable_peer_is_told_the_failed_count(make_node) -> None:  # type: ignore[no-untyped-def]
    node = _loaded(make_node, peers=f"GONE@127.0.0.1:{free_port()}")
    study_uid, count = _biggest_study(node)
    result = subprocess.run(
        [dcmtk_tool("movescu"), "-d", "-S", "-aet", "MOVESCU", "-aem", "GONE", "-aec",
         "DICOM_NODE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    # DCMTK's name for 0xA702 (PS3.4: Refused: Out of Resources - Unable to
    # perform sub-operations)
    assert "DIMSE Status                  : 0xa702" in output, output
    assert re.search(rf"Failed Suboperations\s+: {count}\b", output), output
    assert "Completed Suboperations       : 0" in output
    assert re.search(rf"# +\d+,{count} FailedSOPInstanceUIDList", output), output


def test_a_get_without_its_unique_key_is_refused_with_a900(make_node) -> None:  # type: ignore[no-untyped-def]
    node = _loaded(make_node)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = _biggest_study(node)[0]  # SeriesInstanceUID missing
    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
            if status
        ]
    finally:
        assoc.release()
    assert statuses == [0xA900]


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_missing_or_unreadable_file_is_a_failed_sub_operation_the_rest_is_sent(
    make_node,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    damage: str,
) -> None:
    port = free_port()
    node = _loaded(make_node, peers=f"MOVESCU@127.0.0.1:{port}", dicom_workers=2)
    study_uid, count = _biggest_study(node)
    assert node.db is not None and node.store is not None
    with node.db.read() as session:
        lost_uid, lost_path = session.execute(
            select(DicomInstance.sop_instance_uid, DicomInstance.file_path)
            .join(DicomSeries)
            .join(DicomStudy)
            .where(DicomStudy.study_instance_uid == study_uid)
        ).first()  # type: ignore[misc]
    if damage == "missing":
        node.store.absolute(lost_path).unlink()
    else:
        node.store.absolute(lost_path).write_bytes(b"garbage" * 10)
    out = tmp_path / "moved"
    out.mkdir()
    result = subprocess.run(
        [dcmtk_tool("movescu"), "-v", "-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec",
         "DICOM_NODE", "--port", str(port), "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    received = _received_datasets(out)
    assert len(received) == count - 1 and lost_uid not in received
    # the SCU is told: a warning with one failed sub-operation
    assert "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in output
    (export,) = _exports(node)
    assert export.outcome == "minor_failure"
    assert export.details["counts"] == _counts(
        offered=count - 1, completed=count - 1, sent_as_stored=count - 1, failed=1
    )
    assert export.details["failed_instances"] == [
        {"sop_instance_uid": lost_uid, "reason": "stored file missing or unreadable"}
    ]


def test_a_bad_move_identifier_is_a900_even_with_a_live_destination(make_node) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    destination = AE(ae_title="DEST")
    destination.add_supported_context(Verification)
    server = destination.start_server(("127.0.0.1", port), block=False)
    try:
        node = _loaded(make_node, peers=f"DEST@127.0.0.1:{port}")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = "1.2.x"
        assert _move(node, identifier, "DEST") == [0xA900]
        (refused,) = _exports(node)
        assert refused.outcome == "minor_failure"
    finally:
        server.shutdown()
