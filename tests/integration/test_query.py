"""The query compiler against real databases: PS3.4 C.2.2.2 matching, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import update

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy
from dicom_node.domain.query import InvalidQuery, Level, UnsupportedQuery
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.query.find import find_entities
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes

# deterministic: the UIDs appear in the test ids, which must be the same in every
# process (pytest-xdist workers compare their collections)
UID = {
    name: generate_uid(entropy_srcs=["test_query", name])
    for name in ("A", "B", "C", "D", "A1", "A2", "B1", "C1", "D1")
}

# study label -> patient, study attributes; series label -> study, modality, instances
PATIENTS = {
    "A": ("PAT1", "DOE^JANE"),
    "B": ("PAT2", "doe^john"),
    "C": ("PAT3", "Διονυσιος=ΔΙΟΝ^ΤΕΣΤ"),
    "D": ("PAT4", "O'NEIL^ANN"),
}
STUDIES = {
    "A": {
        "StudyDate": "20260105",
        "StudyTime": "101500",
        "AccessionNumber": "ACC100",
        "StudyDescription": "CT CHEST",
    },
    "B": {
        "StudyDate": "20251231",
        "StudyTime": "0930",
        "AccessionNumber": "ACC_200",
        "StudyDescription": "50% DOSE",
    },
    "C": {
        "StudyDate": "20260110",
        "StudyTime": "141530.25",
        "AccessionNumber": "ACC300",
        "StudyDescription": "ct chest",
    },
    "D": {
        "StudyDate": "20250101",
        "StudyTime": "23",
        "AccessionNumber": "X%Y",
        "StudyDescription": "HEAD",
    },
}
SERIES = {"A1": ("A", "CT", 2), "A2": ("A", "MR", 1), "B1": ("B", "CT", 1)}
SERIES |= {"C1": ("C", "MR", 1), "D1": ("D", "CR", 1)}
# series label -> RequestAttributesSequence items (AccessionNumber, RequestedProcedureID,
# ScheduledProcedureStepID, StudyInstanceUID); study C has none
REQUESTS = {
    "A1": [("ACC100", "RP1", "SPS1", None), ("ACC101", "RP2", "SPS2", None)],
    "A2": [("ACC102", "RP3", "SPS3", None)],
    "B1": [("ACC_200", "RP1", "SPS9", "B")],
    "D1": [("X%Y", "RP%", None, None)],
}
_REQUEST_KEYS = ("AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID")


@pytest.fixture(name="indexed")
def indexed_fixture(db: Database, tmp_path: Path) -> Database:
    return indexed(db, tmp_path)


def indexed(db: Database, tmp_path: Path) -> Database:
    """Store the table's studies into ``db`` (also used by the findscu test)."""
    store = FileStore(tmp_path / "store", fsync=False)
    for series_label, (study, modality, count) in SERIES.items():
        patient_id, name = PATIENTS[study]
        for number in range(1, count + 1):
            ds = ct_dataset(
                study_uid=UID[study],
                series_uid=UID[series_label],
                patient_id=patient_id,
                patient_name=name,
                modality=modality,
                instance_number=number,
            )
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SeriesDescription = series_label
            ds.ReferringPhysicianName = "WHO^DR" if study == "A" else "OTHER^DR"
            for keyword, value in STUDIES[study].items():
                setattr(ds, keyword, value)
            if series_label in REQUESTS:
                ds.RequestAttributesSequence = [
                    _request_item(*values) for values in REQUESTS[series_label]
                ]
            result = store_instance(
                db,
                store,
                part10=to_bytes(ds),
                source=Source(calling_ae_title="TEST"),
                policy=IngestPolicy(),
            )
            assert result.outcome is StoreOutcome.STORED
    return db


def _request_item(*values: str | None) -> Dataset:
    item = Dataset()
    for keyword, value in zip(_REQUEST_KEYS, values, strict=False):
        if value is not None:
            setattr(item, keyword, value)
    if values[3] is not None:
        item.StudyInstanceUID = UID[values[3]]
    return item


def studies(db: Database, **keys: str) -> set[str]:
    """Labels of the studies matching ``keys`` (asking for StudyInstanceUID)."""
    by_uid = {uid: label for label, uid in UID.items()}
    with db.read() as session:
        result = find_entities(
            session, level=Level.STUDY, keys={"StudyInstanceUID": "", **keys}, limit=100
        )
    return {by_uid[row["StudyInstanceUID"]] for row in result.matches}


STUDY_CASES = [
    # PN: case-insensitive, wildcards, non-ASCII (C.2.2.2.1, C.2.2.2.4)
    ({"PatientName": "DOE^JANE"}, {"A"}),
    ({"PatientName": "doe^jane"}, {"A"}),
    ({"PatientName": "doe*"}, {"A", "B"}),
    ({"PatientName": "D?E^J*"}, {"A", "B"}),
    ({"PatientName": "*JOHN"}, {"B"}),
    ({"PatientName": "διονυσιος"}, {"C"}),
    ({"PatientName": "ΔΙΟΝΥΣΙΟΣ"}, {"C"}),
    ({"PatientName": "Διον*"}, {"C"}),
    ({"PatientName": "O'NEIL^ANN"}, {"D"}),
    ({"PatientName": "DOE"}, set()),  # single value: the whole name, not a prefix
    # a value with no "=" matches any one component group (alphabetic, ideographic...)
    ({"PatientName": "διον^τεστ"}, {"C"}),
    ({"PatientName": "ΔΙΟΝ*"}, {"C"}),
    ({"PatientName": "Διονυσιος=ΔΙΟΝ^ΤΕΣΤ"}, {"C"}),
    ({"PatientName": "Διονυσιος=ΨΩ"}, set()),
    # several values: any of them (backslash-separated)
    ({"PatientID": "PAT1\\PAT4"}, {"A", "D"}),
    ({"PatientName": "doe^jane\\O'N*"}, {"A", "D"}),
    # other strings: case-sensitive single value
    ({"StudyDescription": "CT CHEST"}, {"A"}),
    ({"StudyDescription": "ct chest"}, {"C"}),
    ({"StudyDescription": "ct*"}, {"C"}),
    ({"StudyDescription": "*CHEST"}, {"A"}),
    ({"PatientID": "PAT1"}, {"A"}),
    ({"PatientID": "pat1"}, set()),
    ({"ReferringPhysicianName": "WHO^DR"}, {"A"}),
    # SQL LIKE's own characters are literal (never wildcards)
    ({"StudyDescription": "50%*"}, {"B"}),
    ({"StudyDescription": "5_*"}, set()),
    ({"AccessionNumber": "ACC_200"}, {"B"}),
    ({"AccessionNumber": "ACC_*"}, {"B"}),
    ({"AccessionNumber": "ACC?00"}, {"A", "C"}),
    ({"AccessionNumber": "X%Y"}, {"D"}),
    ({"AccessionNumber": "X?Y"}, {"D"}),
    ({"AccessionNumber": "X_Y"}, set()),
    # universal (C.2.2.2.3)
    ({"StudyDescription": ""}, {"A", "B", "C", "D"}),
    ({"StudyDescription": "*"}, {"A", "B", "C", "D"}),
    # DA single and ranges, open ends inclusive (C.2.2.2.5)
    ({"StudyDate": "20260105"}, {"A"}),
    ({"StudyDate": "2026.01.05"}, {"A"}),
    ({"StudyDate": "20260101-20260131"}, {"A", "C"}),
    ({"StudyDate": "20260105-20260110"}, {"A", "C"}),
    ({"StudyDate": "-20251231"}, {"B", "D"}),
    ({"StudyDate": "20260106-"}, {"C"}),
    ({"StudyDate": "20240101"}, set()),
    # TM at the precision the query gives, single value and ranges (C.2.2.2.5)
    ({"StudyTime": "1015"}, {"A"}),
    ({"StudyTime": "10"}, {"A"}),
    ({"StudyTime": "101501"}, set()),
    ({"StudyTime": "0900-1100"}, {"A", "B"}),
    ({"StudyTime": "-0930"}, {"B"}),
    ({"StudyTime": "1415-"}, {"C", "D"}),
    ({"StudyTime": "141530.25"}, {"C"}),
    ({"StudyTime": "14:15:30"}, {"C"}),
    # UID list (C.2.2.2.2)
    ({"StudyInstanceUID": f"{UID['A']}\\{UID['C']}"}, {"A", "C"}),
    ({"StudyInstanceUID": UID["B"]}, {"B"}),
    # ModalitiesInStudy: one of its values
    ({"ModalitiesInStudy": "MR"}, {"A", "C"}),
    ({"ModalitiesInStudy": "CT"}, {"A", "B"}),
    ({"ModalitiesInStudy": "CR"}, {"D"}),
    ({"ModalitiesInStudy": "C"}, set()),
    ({"ModalitiesInStudy": "CR\\US"}, {"D"}),
    ({"ModalitiesInStudy": "CT\\CR"}, {"A", "B", "D"}),
    # StudyDate + StudyTime together: one combined date-time range (C.2.2.2.5.1);
    # the time bounds hold on the first and last day, any time of day in between
    ({"StudyDate": "20251231-20260110", "StudyTime": "1200-1500"}, {"A", "C"}),
    ({"StudyDate": "-20260105", "StudyTime": "-1000"}, {"B", "D"}),
    ({"StudyDate": "20260105-", "StudyTime": "1100-"}, {"C"}),
    ({"StudyDate": "20260105-", "StudyTime": "1015"}, {"A", "C"}),
    ({"StudyDate": "20251231-20260105", "StudyTime": "0930-1015"}, {"A", "B"}),
    ({"StudyDate": "20251231-20260105", "StudyTime": "0931-1014"}, set()),
    ({"StudyDate": "20260105", "StudyTime": "1015"}, {"A"}),
    ({"StudyDate": "20260105", "StudyTime": "1100-"}, set()),
    ({"StudyDate": "20240101-20260131", "StudyTime": "2300-"}, {"A", "B", "C", "D"}),
    # keys combine with AND
    ({"PatientName": "doe*", "StudyDate": "20260101-"}, {"A"}),
    ({"PatientName": "doe*", "ModalitiesInStudy": "CT", "StudyDate": "-20251231"}, {"B"}),
]


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


# PS3.4 C.2.2.2.6: the query item's keys must all match ONE stored item
SEQUENCE_CASES: list[tuple[dict[str, str] | None, set[str]]] = [
    ({"AccessionNumber": "ACC100"}, {"A"}),
    ({"AccessionNumber": "ACC100", "RequestedProcedureID": "RP1"}, {"A"}),
    ({"AccessionNumber": "ACC100", "RequestedProcedureID": "RP2"}, set()),  # two items
    ({"AccessionNumber": "ACC102", "ScheduledProcedureStepID": "SPS3"}, {"A"}),  # 2nd series
    ({"RequestedProcedureID": "RP1"}, {"A", "B"}),
    ({"AccessionNumber": "acc100"}, set()),  # case-sensitive
    ({"AccessionNumber": "ACC10?"}, {"A"}),
    ({"AccessionNumber": "ACC*"}, {"A", "B"}),
    ({"AccessionNumber": "ACC_*"}, {"B"}),  # LIKE's _ is literal
    ({"RequestedProcedureID": "RP_"}, set()),
    ({"RequestedProcedureID": "RP%"}, {"D"}),
    ({"RequestedProcedureID": "RP?"}, {"A", "B", "D"}),
    ({"AccessionNumber": "ACC100\\X%Y"}, {"A", "D"}),
    ({"StudyInstanceUID": UID["B"]}, {"B"}),
    ({"StudyInstanceUID": f"{UID['A']}\\{UID['B']}"}, {"B"}),
    ({"ScheduledProcedureStepID": "SPS9", "StudyInstanceUID": UID["A"]}, set()),
    # universal: zero-length sequence, empty item, empty or * values
    (None, {"A", "B", "C", "D"}),
    ({}, {"A", "B", "C", "D"}),
    ({"AccessionNumber": ""}, {"A", "B", "C", "D"}),
    ({"AccessionNumber": "*"}, {"A", "B", "C", "D"}),
]


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
