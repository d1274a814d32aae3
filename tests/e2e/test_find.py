"""C-FIND over real associations: DCMTK findscu and a pynetdicom SCU."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy, Source, store_instance
from tests.builders import QUERY_SEQUENCE_CASES as SEQUENCE_CASES
from tests.builders import QUERY_STUDY_CASES as STUDY_CASES
from tests.builders import QUERY_UID as UID
from tests.builders import indexed
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import SAMPLE_DIR, findscu

SAMPLES = list(iter_files([SAMPLE_DIR]))


def _load_samples(node: Node) -> None:
    assert node.db is not None and node.store is not None
    summary = import_files(
        node.db, node.store, SAMPLES, policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.outcomes["stored"] == 31


@pytest.fixture
def loaded(make_node) -> Node:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    _load_samples(node)
    return node


def pynetdicom_find(
    node: Node, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        return [(int(s.Status), i) for s, i in assoc.send_c_find(identifier, model) if s]
    finally:
        assoc.release()


def test_findscu_study_query_returns_exactly_the_requested_keys_and_counts(
    loaded: Node, tmp_path: Path
) -> None:
    result, responses = findscu(
        loaded,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientName=smith*",  # PN: case-insensitive here
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
    assert result.returncode == 0, result.stderr
    (response,) = responses
    assert response.PatientName == "SMITH^JOHN^A"
    assert response.AccessionNumber == "DEMOACC0002"
    assert response.ModalitiesInStudy == "MR"
    assert int(response.NumberOfStudyRelatedSeries) == 3
    keywords = {element.keyword for element in response}
    assert keywords == {
        "QueryRetrieveLevel",
        "PatientName",
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }


def test_japanese_name_matches_and_comes_back_in_utf8(loaded: Node, tmp_path: Path) -> None:
    result, responses = findscu(
        loaded,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientName=Yamada^Tarou=山田^太郎=やまだ^たろう",
        "PatientID",
    )
    assert result.returncode == 0, result.stderr
    (response,) = responses
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert str(response.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert response.PatientID == "DEMO0003"


def test_patient_root_series_and_image_levels(loaded: Node, tmp_path: Path) -> None:
    _, series = findscu(
        loaded,
        tmp_path / "series",
        "QueryRetrieveLevel=SERIES",
        "PatientID=DEMO0002",
        "Modality=MR",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
        model="-P",
    )
    assert len(series) == 3
    first = series[0].SeriesInstanceUID
    _, images = findscu(
        loaded,
        tmp_path / "images",
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={first}",
        "SOPInstanceUID",
        "InstanceNumber",
        model="-P",
    )
    assert len(images) == int(series[0].NumberOfSeriesRelatedInstances) > 0


def test_a_broad_query_stops_at_the_cap_with_a700(make_node) -> None:  # type: ignore[no-untyped-def]
    capped: Node = make_node(max_find_matches=3)
    _load_samples(capped)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    statuses = [code for code, _ in pynetdicom_find(capped, identifier)]
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0xA700]  # 4 studies, cap of 3


def test_findscu_cancel_is_honoured_and_the_node_goes_on(loaded: Node, tmp_path: Path) -> None:
    # long enough an answer (300 matches) for the cancel to arrive mid-stream
    assert loaded.db is not None and loaded.store is not None
    study, series = generate_uid(), generate_uid()
    for n in range(300):
        data = to_bytes(ct_dataset(study_uid=study, series_uid=series, instance_number=n))
        store_instance(loaded.db, loaded.store, part10=data, source=Source(), policy=IngestPolicy())
    result, responses = findscu(
        loaded,
        tmp_path / "cancelled",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series}",
        "SOPInstanceUID",
        model="-S",
        extra=("--cancel", "1", "-v"),
    )
    assert "Cancel" in result.stdout + result.stderr
    assert 1 <= len(responses) < 300
    again, answers = findscu(
        loaded, tmp_path / "after", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"
    )
    assert again.returncode == 0, again.stderr
    assert len(answers) == 1


BAD_IDENTIFIERS = [
    ({"PatientID": "X"}, 0xA900),  # no QueryRetrieveLevel
    ({"QueryRetrieveLevel": "STUDIES", "PatientID": "X"}, 0xA900),
    ({"QueryRetrieveLevel": "PATIENT", "PatientID": "X"}, 0xA900),  # not in Study Root
    ({"QueryRetrieveLevel": "STUDY", "SOPInstanceUID": "1.2.3"}, 0xA900),  # key below level
    ({"QueryRetrieveLevel": "STUDY", "StudyDate": "20261301"}, 0xA900),
    ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"}, 0xA900),
    ({"QueryRetrieveLevel": "STUDY", "StudyTime": "2500"}, 0xA900),
    ({"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "C*"}, 0xC000),  # not supported
    ({"QueryRetrieveLevel": "STUDY", "StudyDate": "20260231"}, 0xA900),
]


@pytest.mark.parametrize(
    ("keys", "code"), BAD_IDENTIFIERS, ids=[str(k) for k, _ in BAD_IDENTIFIERS]
)
def test_bad_identifiers_get_a_failure_status_and_are_audited(
    loaded: Node, keys: dict[str, str], code: int
) -> None:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    responses = pynetdicom_find(loaded, identifier)
    assert [status for status, _ in responses] == [code]
    assert loaded.db is not None
    with loaded.db.read() as session:
        audits = session.scalars(select(AuditEvent).where(AuditEvent.action == "query")).all()
    (audit,) = audits  # refused queries are audited too, however early refused
    assert audit.outcome == "minor_failure" and audit.reason


def test_a_sequence_the_index_does_not_hold_is_ignored_with_ff01(loaded: Node) -> None:
    # PS3.4 C.4.1.1.4: FF01 is the status for an optional key not supported for
    # matching; the entity is answered with the sequence empty (zero items)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.AccessionNumber = "DEMOACC0001"
    item = Dataset()
    item.CodeValue = "NOPE"
    identifier.ProcedureCodeSequence = [item]
    responses = pynetdicom_find(loaded, identifier)
    assert [code for code, _ in responses] == [0xFF01, 0x0000]
    (_, match), _ = responses
    assert match is not None and list(match.ProcedureCodeSequence) == []


def test_request_attributes_sequence_is_matched_and_answered_with_its_items(
    make_node,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    node: Node = make_node()
    assert node.db is not None
    indexed(node.db, tmp_path / "table")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    item = Dataset()
    item.AccessionNumber = "ACC_*"
    item.RequestedProcedureID = ""
    identifier.RequestAttributesSequence = [item]
    responses = pynetdicom_find(node, identifier)
    assert [code for code, _ in responses] == [0xFF00, 0x0000]
    (_, match), _ = responses
    assert match is not None and match.StudyInstanceUID == UID["B"]
    (answered,) = match.RequestAttributesSequence
    assert (answered.AccessionNumber, answered.RequestedProcedureID) == ("ACC_200", "RP1")
    assert {element.keyword for element in answered} == {"AccessionNumber", "RequestedProcedureID"}
    two = Dataset()
    two.QueryRetrieveLevel = "STUDY"
    two.RequestAttributesSequence = [Dataset(), Dataset()]
    assert [code for code, _ in pynetdicom_find(node, two)] == [0xA900]  # one item at most


def test_keys_not_answered_get_the_ff01_warning(loaded: Node) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.AccessionNumber = "DEMOACC0001"
    identifier.OperatorsName = ""  # not indexed
    identifier.add_new(0x00091010, "LO", "")  # private
    responses = pynetdicom_find(loaded, identifier)
    assert [code for code, _ in responses] == [0xFF01, 0x0000]
    (_, match), _ = responses
    assert match is not None and match.OperatorsName == ""


def test_every_query_is_audited_with_its_keys_not_its_results(loaded: Node) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientName = "DOE*"
    identifier.NumberOfPatientRelatedStudies = ""
    responses = pynetdicom_find(loaded, identifier, PatientRootQueryRetrieveInformationModelFind)
    assert [status for status, _ in responses] == [0xFF00, 0x0000]
    (_, match), _ = responses
    assert match is not None and int(match.NumberOfPatientRelatedStudies) == 1
    assert loaded.db is not None
    with loaded.db.read() as session:
        (audit,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "query")).all()
    assert audit.event_code == "110112"
    assert audit.actor == "PYFIND"
    assert audit.details["keys"] == {"PatientName": "DOE*"}
    assert "DOE^JANE" not in str(audit.details)


def test_the_matching_table_gives_the_same_answers_through_findscu(
    make_node,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Every service-level case of tests/integration/test_query.py, sent by DCMTK."""
    node: Node = make_node()
    assert node.db is not None and node.store is not None
    indexed(node.db, tmp_path / "table")  # the same studies, into this node
    by_uid = {uid: label for label, uid in UID.items()}
    answers: dict[str, set[str]] = {}
    expected: dict[str, set[str]] = {}
    for n, (keys, labels) in enumerate(STUDY_CASES):
        args = [f"{k}={v}" for k, v in keys.items()]
        result, responses = findscu(
            node,
            tmp_path / f"case{n}",
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "StudyInstanceUID",
            *args,
        )
        assert result.returncode == 0, result.stderr
        answers[str(keys)] = {by_uid[str(r.StudyInstanceUID)] for r in responses}
        expected[str(keys)] = labels
    assert answers == expected


def _sequence_args(item: dict[str, str] | None) -> list[str]:
    if item is None:
        return ["RequestAttributesSequence"]  # zero-length: universal
    if not item:
        return ["RequestAttributesSequence[0]"]  # one empty item: universal
    return [f"RequestAttributesSequence[0].{k}={v}" for k, v in item.items()]


def test_the_sequence_matching_table_gives_the_same_answers_through_findscu(
    make_node,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Every RequestAttributesSequence case of tests/integration/test_query.py, by DCMTK."""
    node: Node = make_node()
    assert node.db is not None
    indexed(node.db, tmp_path / "table")
    by_uid = {uid: label for label, uid in UID.items()}
    answers: dict[str, set[str]] = {}
    expected: dict[str, set[str]] = {}
    for n, (item, labels) in enumerate(SEQUENCE_CASES):
        result, responses = findscu(
            node,
            tmp_path / f"seq{n}",
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            *_sequence_args(item),
        )
        assert result.returncode == 0, result.stderr
        answers[str(item)] = {by_uid[str(r.StudyInstanceUID)] for r in responses}
        expected[str(item)] = labels
    assert answers == expected
