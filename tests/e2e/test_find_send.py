"""C-FIND answers on the lean send path (scp/find_send.py, scp/find_answers.py)
over real associations: the same answers in every transfer syntax and PDU size,
pydicom's path for what the lean one does not take."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_node.node import Node

MODEL = StudyRootQueryRetrieveInformationModelFind


def _answers(node: Node, identifier: Dataset, syntax: str, max_pdu: int) -> list[tuple[int, str]]:
    ae = AE(ae_title="LEANSCU")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(MODEL, [syntax])
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        answers = []
        for status, found in assoc.send_c_find(identifier, MODEL):
            assert status
            answers.append((int(status.Status), "" if found is None else _text(found)))
        return answers
    finally:
        assoc.release()


def _text(ds: Dataset) -> str:
    return "|".join(f"{e.tag}={e.value}" for e in ds)


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_every_syntax_and_pdu_size_gets_the_same_answers(sample_node: Node, level: str) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.StudyInstanceUID = ""
    identifier.PatientName = ""  # a Japanese name among them: pydicom's path, in UTF-8
    identifier.StudyDate = ""
    identifier.ModalitiesInStudy = "" if level == "STUDY" else None
    identifier.NumberOfStudyRelatedInstances = "" if level == "STUDY" else None
    if level != "STUDY":
        identifier.SeriesInstanceUID = ""
        identifier.SeriesNumber = ""
    if level == "IMAGE":
        identifier.SOPInstanceUID = ""
        identifier.InstanceNumber = ""
    runs = [
        _answers(sample_node, identifier, ImplicitVRLittleEndian, 16_382),
        _answers(sample_node, identifier, ExplicitVRLittleEndian, 16_382),
        _answers(sample_node, identifier, ExplicitVRLittleEndian, 0),  # no limit
        # smaller than one answer: pynetdicom's own path, fragmented
        _answers(sample_node, identifier, ImplicitVRLittleEndian, 64),
    ]
    first = runs[0]
    assert first[-1] == (0x0000, "")
    assert len(first) > 3 and {code for code, _ in first[:-1]} == {0xFF00}
    assert any("ISO_IR 192" in text for _, text in first)  # the non-ASCII answer
    for run in runs[1:]:
        assert sorted(run) == sorted(first)
