"""The query compiler against real databases: PS3.4 C.2.2.2 matching, table-driven
(the table, also sent over the wire by tests/e2e/test_find.py: tests/builders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy
from dicom_node.domain.query import InvalidQuery, Level, UnsupportedQuery
from dicom_node.services.query.find import find_entities
from tests.builders import QUERY_SEQUENCE_CASES as SEQUENCE_CASES
from tests.builders import QUERY_STUDY_CASES as STUDY_CASES
from tests.builders import QUERY_UID as UID
from tests.builders import indexed


@pytest.fixture(name="indexed")
def indexed_fixture(db: Database, tmp_path: Path) -> Database:
    return indexed(db, tmp_path)


def studies(db: Database, **keys: str) -> set[str]:
    """Labels of the studies matching ``keys`` (asking for StudyInstanceUID)."""
    by_uid = {uid: label for label, uid in UID.items()}
    with db.read() as session:
        result = find_entities(
            session, level=Level.STUDY, keys={"StudyInstanceUID": "", **keys}, limit=100
        )
    return {by_uid[row["StudyInstanceUID"]] for row in result.matches}


@pytest.mark.parametrize(("keys", "expected"), STUDY_CASES, ids=[str(c[0]) for c in STUDY_CASES])
def test_study_level_matching(indexed: Database, keys: dict[str, str], expected: set[str]) -> None:
    assert studies(indexed, **keys) == expected


def studies_by_request(
    db: Database, item: dict[str, str] | None, level: Level = Level.STUDY, **keys: str
) -> set[str]:
    """Labels of the studies matching a RequestAttributesSequence with ``item``
    (None: a zero-length sequence), at ``level``."""
    by_uid = {uid: label for label, uid in UID.items()}
    with db.read() as session:
        result = find_entities(
            session,
            level=level,
            keys={"StudyInstanceUID": "", "RequestAttributesSequence": None, **keys},
            limit=100,
            sequences={"RequestAttributesSequence": item},
        )
    return {by_uid[row["StudyInstanceUID"]] for row in result.matches}


@pytest.mark.parametrize(
    ("item", "expected"), SEQUENCE_CASES, ids=[str(c[0]) for c in SEQUENCE_CASES]
)
def test_request_attributes_sequence_matching(
    indexed: Database, item: dict[str, str] | None, expected: set[str]
) -> None:
    assert studies_by_request(indexed, item) == expected


def test_sequence_matching_combines_with_the_other_keys_and_levels(indexed: Database) -> None:
    item = {"RequestedProcedureID": "RP1"}
    assert studies_by_request(indexed, item, PatientID="PAT2") == {"B"}
    assert studies_by_request(indexed, item, PatientID="PAT3") == set()
    with indexed.read() as session:
        series = find_entities(
            session,
            level=Level.SERIES,
            keys={"SeriesDescription": "", "RequestAttributesSequence": None},
            limit=100,
            sequences={"RequestAttributesSequence": {"AccessionNumber": "ACC10*"}},
        )
        images = find_entities(
            session,
            level=Level.IMAGE,
            keys={"SeriesInstanceUID": UID["A1"], "RequestAttributesSequence": None},
            limit=100,
            sequences={"RequestAttributesSequence": {"ScheduledProcedureStepID": "SPS2"}},
        )
    assert sorted(r["SeriesDescription"] for r in series.matches) == ["A1", "A2"]
    assert len(images.matches) == 2


def test_a_sequence_key_answers_the_matching_stored_items_with_the_requested_keys(
    indexed: Database,
) -> None:
    with indexed.read() as session:
        study = find_entities(
            session,
            level=Level.STUDY,
            keys={"StudyInstanceUID": UID["A"], "RequestAttributesSequence": None},
            limit=10,
            sequences={
                "RequestAttributesSequence": {
                    "AccessionNumber": "ACC10?",
                    "RequestedProcedureID": "",
                }
            },
        )
        narrowed = find_entities(
            session,
            level=Level.SERIES,
            keys={"SeriesInstanceUID": UID["A1"], "RequestAttributesSequence": None},
            limit=10,
            sequences={"RequestAttributesSequence": {"RequestedProcedureID": "RP2"}},
        )
        everything = find_entities(
            session,
            level=Level.STUDY,
            keys={"StudyInstanceUID": UID["B"], "RequestAttributesSequence": None},
            limit=10,
            sequences={"RequestAttributesSequence": None},
        )
        none_stored = find_entities(
            session,
            level=Level.STUDY,
            keys={"StudyInstanceUID": UID["C"], "RequestAttributesSequence": None},
            limit=10,
        )
    (row,) = study.matches
    assert row["RequestAttributesSequence"] == [  # each item once, not once per instance
        {"AccessionNumber": "ACC100", "RequestedProcedureID": "RP1"},
        {"AccessionNumber": "ACC101", "RequestedProcedureID": "RP2"},
        {"AccessionNumber": "ACC102", "RequestedProcedureID": "RP3"},
    ]
    assert [r["RequestAttributesSequence"] for r in narrowed.matches] == [
        [{"RequestedProcedureID": "RP2"}]
    ]
    assert everything.matches[0]["RequestAttributesSequence"] == [
        {
            "AccessionNumber": "ACC_200",
            "RequestedProcedureID": "RP1",
            "ScheduledProcedureStepID": "SPS9",
            "StudyInstanceUID": UID["B"],
        }
    ]
    assert none_stored.matches[0]["RequestAttributesSequence"] == []


def test_item_keys_the_node_does_not_index_are_reported_not_matched(indexed: Database) -> None:
    with indexed.read() as session:
        result = find_entities(
            session,
            level=Level.STUDY,
            keys={"StudyInstanceUID": "", "RequestAttributesSequence": None},
            limit=10,
            sequences={
                "RequestAttributesSequence": {
                    "AccessionNumber": "ACC100",
                    "RequestedProcedureDescription": "NOT STORED",
                }
            },
        )
    assert [row["StudyInstanceUID"] for row in result.matches] == [UID["A"]]
    assert result.unsupported == ["RequestAttributesSequence>RequestedProcedureDescription"]
    (item,) = result.matches[0]["RequestAttributesSequence"]
    assert item == {"AccessionNumber": "ACC100", "RequestedProcedureDescription": None}


def test_series_and_image_levels_return_one_row_per_entity(indexed: Database) -> None:
    with indexed.read() as session:
        series = find_entities(
            session,
            level=Level.SERIES,
            keys={
                "StudyInstanceUID": UID["A"],
                "SeriesDescription": "",
                "NumberOfSeriesRelatedInstances": "",
            },
            limit=100,
        )
        mr = find_entities(
            session, level=Level.SERIES, keys={"Modality": "MR", "SeriesDescription": ""}, limit=9
        )
        images = find_entities(
            session,
            level=Level.IMAGE,
            keys={"SeriesInstanceUID": UID["A1"], "InstanceNumber": "", "SOPInstanceUID": ""},
            limit=100,
        )
        second = find_entities(
            session,
            level=Level.IMAGE,
            keys={"SeriesInstanceUID": UID["A1"], "InstanceNumber": "2"},
            limit=100,
        )
    assert {
        (r["SeriesDescription"], r["NumberOfSeriesRelatedInstances"]) for r in series.matches
    } == {
        ("A1", 2),
        ("A2", 1),
    }
    assert {r["SeriesDescription"] for r in mr.matches} == {"A2", "C1"}
    assert sorted(r["InstanceNumber"] for r in images.matches) == [1, 2]
    assert len(second.matches) == 1


def test_patient_level_answers_the_computed_counts(indexed: Database) -> None:
    with indexed.read() as session:
        result = find_entities(
            session,
            level=Level.PATIENT,
            keys={
                "PatientName": "doe*",
                "PatientID": "",
                "NumberOfPatientRelatedStudies": "",
                "NumberOfPatientRelatedSeries": "",
                "NumberOfPatientRelatedInstances": "",
            },
            limit=100,
        )
    counts = {
        r["PatientID"]: (
            r["NumberOfPatientRelatedStudies"],
            r["NumberOfPatientRelatedSeries"],
            r["NumberOfPatientRelatedInstances"],
        )
        for r in result.matches
    }
    assert counts == {"PAT1": (1, 2, 3), "PAT2": (1, 1, 1)}


def test_study_level_answers_counts_and_modalities(indexed: Database) -> None:
    with indexed.read() as session:
        result = find_entities(
            session,
            level=Level.STUDY,
            keys={
                "StudyInstanceUID": UID["A"],
                "ModalitiesInStudy": "",
                "NumberOfStudyRelatedSeries": "",
                "NumberOfStudyRelatedInstances": "",
            },
            limit=100,
        )
    (row,) = result.matches
    assert (row["ModalitiesInStudy"], row["NumberOfStudyRelatedSeries"]) == ("CT\\MR", 2)
    assert row["NumberOfStudyRelatedInstances"] == 3


def test_the_cap_truncates_and_says_so(indexed: Database) -> None:
    with indexed.read() as session:
        capped = find_entities(session, level=Level.STUDY, keys={"StudyDate": ""}, limit=3)
        whole = find_entities(session, level=Level.STUDY, keys={"StudyDate": ""}, limit=4)
    assert (len(capped.matches), capped.truncated) == (3, True)
    assert (len(whole.matches), whole.truncated) == (4, False)


def test_keys_the_node_does_not_index_are_reported_not_matched(indexed: Database) -> None:
    with indexed.read() as session:
        result = find_entities(
            session,
            level=Level.STUDY,
            keys={"AccessionNumber": "ACC100", "OperatorsName": "SMITH"},
            limit=10,
        )
    assert len(result.matches) == 1
    assert result.unsupported == ["OperatorsName"]


BAD_KEYS = [
    (Level.STUDY, {"StudyDate": "2026-01-05"}, InvalidQuery),  # two dashes
    (Level.STUDY, {"StudyDate": "20261301"}, InvalidQuery),  # no 13th month
    (Level.STUDY, {"StudyDate": "20260231"}, InvalidQuery),  # no 31 February
    (Level.STUDY, {"StudyDate": "20260131-20260101"}, InvalidQuery),  # ends before start
    (Level.STUDY, {"StudyDate": "-"}, InvalidQuery),
    (Level.STUDY, {"StudyInstanceUID": "1.2.abc"}, InvalidQuery),
    (Level.STUDY, {"StudyInstanceUID": "1.2.3\\../../etc"}, InvalidQuery),
    (Level.STUDY, {"SOPInstanceUID": "1.2.3"}, InvalidQuery),  # a key below the level
    (Level.PATIENT, {"StudyDate": ""}, InvalidQuery),
    (Level.IMAGE, {"InstanceNumber": "two"}, InvalidQuery),
    (Level.STUDY, {"StudyTime": "2500"}, InvalidQuery),
    (Level.STUDY, {"StudyTime": "1100-0900"}, InvalidQuery),
    (Level.STUDY, {"ModalitiesInStudy": "C*"}, UnsupportedQuery),
    (Level.STUDY, {"NumberOfStudyRelatedInstances": "3"}, UnsupportedQuery),
    (Level.PATIENT, {"RequestAttributesSequence": None}, InvalidQuery),  # below PATIENT
]


@pytest.mark.parametrize(("level", "keys", "error"), BAD_KEYS, ids=[str(c[1]) for c in BAD_KEYS])
def test_malformed_or_unsupported_keys_are_refused_not_guessed(
    indexed: Database, level: Level, keys: dict[str, str], error: type[Exception]
) -> None:
    with indexed.read() as session, pytest.raises(error):
        find_entities(session, level=level, keys=keys, limit=10)


def test_a_rejected_study_is_hidden_at_every_level_counts_included(indexed: Database) -> None:
    with indexed.unit_of_work() as session:
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.study_instance_uid == UID["A"])
            .values(metadata_status="rejected")
        )
    assert "A" not in studies(indexed, PatientID="PAT1")
    with indexed.read() as session:
        result = find_entities(
            session,
            level=Level.PATIENT,
            keys={"PatientID": "PAT1", "NumberOfPatientRelatedStudies": ""},
            limit=10,
        )
    # its only study withdrawn, the patient has nothing left to offer
    assert result.matches == []
