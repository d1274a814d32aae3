"""The lean C-FIND answer encoder writes exactly the bytes pydicom writes."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from dicom_node.domain.query import Level
from dicom_node.scp.find import _response
from dicom_node.scp.find_answers import AnswerEncoder

KEYS: dict[str, str | None] = {
    "StudyInstanceUID": "",
    "PatientName": "",
    "PatientID": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "ModalitiesInStudy": "",
    "StudyDescription": "",
    "NumberOfStudyRelatedInstances": "",
    "SeriesNumber": "",
    "PatientWeight": "",  # DS
    "ReferringPhysicianName": "",
}
ROWS: list[dict[str, Any]] = [
    {},  # nothing known: every key empty
    {
        "StudyInstanceUID": "1.2.826.0.1.3680043.10.543.1.17",  # odd length: NUL pad
        "PatientName": "DOE^JOHN^^^",
        "PatientID": "PID1",
        "StudyDate": "20200101",
        "StudyTime": "101010.123",
        "AccessionNumber": "A",
        "ModalitiesInStudy": "CT\\MR\\US",
        "StudyDescription": "odd length",
        "NumberOfStudyRelatedInstances": 20,
        "SeriesNumber": "-3",
        "PatientWeight": "72.5",
        "ReferringPhysicianName": "A^B=C^D",
    },
    {"StudyInstanceUID": "1.2", "NumberOfStudyRelatedInstances": 0, "PatientWeight": "1e3"},
    {"SeriesNumber": 12345678, "PatientWeight": "-0.5\\2", "StudyDescription": "x" * 63},
]


def _pydicom(
    level: Level, keys: dict[str, str | None], row: dict[str, Any], implicit: bool
) -> bytes:
    encoded = encode(_response(level, keys, row), implicit, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("row", ROWS)
def test_lean_answers_are_pydicoms_bytes(row: dict[str, Any], implicit: bool) -> None:
    encoder = AnswerEncoder.for_query(Level.STUDY, KEYS, implicit_vr=implicit)
    assert encoder is not None
    assert encoder.encode(row) == _pydicom(Level.STUDY, KEYS, row, implicit)


@pytest.mark.parametrize(
    "value",
    ["DOÉ^JANE", 1.5, b"bytes", True, ["list"]],
    ids=["non-ascii", "float", "bytes", "bool", "list"],
)
def test_values_the_lean_path_cannot_encode_go_to_pydicom(value: object) -> None:
    encoder = AnswerEncoder.for_query(Level.STUDY, {"PatientName": ""}, implicit_vr=True)
    assert encoder is not None
    assert encoder.encode({"PatientName": value}) is None


@pytest.mark.parametrize("number", ["1 ", " 1", "1.", "abc", "1\\"])
def test_number_strings_pydicom_would_reformat_go_to_pydicom(number: str) -> None:
    encoder = AnswerEncoder.for_query(Level.SERIES, {"SeriesNumber": ""}, implicit_vr=False)
    assert encoder is not None
    assert encoder.encode({"SeriesNumber": number}) is None


@pytest.mark.parametrize(
    "keyword", ["RequestAttributesSequence", "PixelData", "NotAKeyword", "QueryRetrieveLevel"]
)
def test_queries_with_keys_it_cannot_lay_out_have_no_lean_encoder(keyword: str) -> None:
    assert AnswerEncoder.for_query(Level.STUDY, {keyword: None}, implicit_vr=True) is None


def test_an_answer_decodes_to_the_requested_keys() -> None:
    encoder = AnswerEncoder.for_query(Level.IMAGE, {"SOPInstanceUID": ""}, implicit_vr=False)
    assert encoder is not None
    encoded = encoder.encode({"SOPInstanceUID": "1.2.3"})
    assert encoded is not None
    ds: Dataset = decode(BytesIO(encoded), False, True)
    assert ds.QueryRetrieveLevel == "IMAGE" and ds.SOPInstanceUID == "1.2.3"
