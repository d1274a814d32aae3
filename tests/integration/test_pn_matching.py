"""Every PN key matched by the one PN rule (domain/names.py), on real databases.

PatientName, ReferringPhysicianName, NameOfPhysiciansReadingStudy (multi-valued,
with component groups) and PerformingPhysicianName (series level) of images
stored through ingest: case-insensitively (Unicode case folding), by component
group, with wildcards, lists and universal matching, the same for each key.
The C-FIND, worklist and HTTP tests (tests/e2e/test_pn_find.py) send these
cases over the wire; the table is in tests/builders.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomSeries, DicomStudy, Patient
from dicom_node.domain.names import person_name_matches
from dicom_node.domain.query import Level, parse_match
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.query.find import find_entities
from dicom_node.storage import FileStore
from tests.builders import PN_SERIES_CASES as SERIES_CASES
from tests.builders import PN_SERIES_UID as SERIES_UID
from tests.builders import PN_STUDY_CASES as STUDY_CASES
from tests.builders import PN_UID as UID
from tests.builders import YAMADA, store_named
from tests.dicomfiles import ct_dataset, to_bytes


@pytest.fixture(name="named")
def named_fixture(db: Database, tmp_path: Path) -> Database:
    store_named(db, FileStore(tmp_path / "store", fsync=False))
    return db


def _found(db: Database, level: Level, keys: dict[str, str]) -> set[str]:
    unique = "StudyInstanceUID" if level is Level.STUDY else "SeriesDescription"
    with db.read() as session:
        result = find_entities(session, level=level, keys={unique: "", **keys}, limit=100)
    assert not result.unsupported
    if level is Level.STUDY:
        by_uid = {uid: label for label, uid in UID.items()}
        return {by_uid[row["StudyInstanceUID"]] for row in result.matches}
    return {row["SeriesDescription"] for row in result.matches}


def _case_id(value: object) -> str:
    """The same id in every pytest-xdist process: a set's order follows string
    hashing, which differs per process (collection then fails)."""
    return str(sorted(value)) if isinstance(value, set) else str(value)


@pytest.mark.parametrize(("keys", "expected"), STUDY_CASES, ids=_case_id)
def test_study_level_pn_keys(named: Database, keys: dict[str, str], expected: set[str]) -> None:
    assert _found(named, Level.STUDY, keys) == expected


@pytest.mark.parametrize(("keys", "expected"), SERIES_CASES, ids=_case_id)
def test_series_level_pn_keys(named: Database, keys: dict[str, str], expected: set[str]) -> None:
    assert _found(named, Level.SERIES, keys) == expected


def test_the_values_are_answered_as_sent(named: Database) -> None:
    with named.read() as session:
        result = find_entities(
            session,
            level=Level.SERIES,
            keys={
                "SeriesDescription": "",
                "ReferringPhysicianName": "",
                "NameOfPhysiciansReadingStudy": "",
                "PerformingPhysicianName": "",
            },
            limit=10,
        )
    rows = {row["SeriesDescription"]: row for row in result.matches}
    assert rows["A2"]["ReferringPhysicianName"] == "García^José"
    assert rows["A2"]["NameOfPhysiciansReadingStudy"] == f"Wong^Anna\\{YAMADA}"
    assert rows["A2"]["PerformingPhysicianName"] == "Koch^Eva\\ΣΩΚΡΆΤΗΣ^ΠΑΠΑΔΌΠΟΥΛΟΣ"
    assert rows["C1"]["PerformingPhysicianName"] is None


def test_every_pn_column_has_its_folded_copy_filled_at_ingest(named: Database) -> None:
    with named.read() as session:
        study = session.scalars(
            select(DicomStudy).where(DicomStudy.study_instance_uid == UID["A"])
        ).one()
        series = session.scalars(
            select(DicomSeries).where(DicomSeries.series_instance_uid == SERIES_UID["A2"])
        ).one()
        patient = session.get(Patient, study.patient_pk)
    assert patient is not None and patient.patient_name_folded == "müller^hans"
    assert study.referring_physician_name_folded == "garcía^josé"
    assert study.name_of_physicians_reading_study_folded == (
        "wong^anna\\yamada^tarou=山田^太郎=やまだ^たろう"
    )
    assert series.performing_physician_name_folded == "koch^eva\\σωκράτησ^παπαδόπουλοσ"


# The SQL and the Python twin (sequence items) read the same rule: every key
# against every stored name gives the same answer, tricky wildcards included.
AGREEMENT_NAMES = [
    "Smith^John",
    "SMITH^JOHN^^=スミス^ジョン",
    "Koch^Eva\\Smith^J",
    "=山田^太郎",
    "O'Neil^Ann",
    "50%^X_Y",
    "Σωκράτης",
]
AGREEMENT_KEYS = [
    "smith^john",
    "SMITH*",
    "*JOHN",
    "s*h^j*",
    "s*k*",  # a * may reach over the \ between values (documented)
    "smith^john=*",
    "*=スミス^ジョン",
    "山田^太郎",
    "=山田^太郎",
    "o'neil^ann",
    "50%^x_y",
    "5_%*",  # LIKE's own characters are literal
    "?????",
    "σωκρατησ",  # accents matter
    "ΣΩΚΡΆΤΗΣ",
    "koch^eva\\smith^john",
    "^",
]


def test_sql_and_python_agree_on_every_key_and_name(db: Database, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    uids = {}
    for number, name in enumerate(AGREEMENT_NAMES):
        uids[name] = generate_uid(entropy_srcs=["pn agreement", name])
        ds = ct_dataset(study_uid=uids[name], patient_id=f"AG{number}")
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ReferringPhysicianName = name.split("\\")
        result = store_instance(
            db, store, part10=to_bytes(ds), source=Source(), policy=IngestPolicy()
        )
        assert result.outcome is StoreOutcome.STORED
    by_uid = {uid: name for name, uid in uids.items()}
    disagreements = []
    for key in AGREEMENT_KEYS:
        with db.read() as session:
            found = find_entities(
                session,
                level=Level.STUDY,
                keys={"StudyInstanceUID": "", "ReferringPhysicianName": key},
                limit=100,
            )
        in_sql = {by_uid[row["StudyInstanceUID"]] for row in found.matches}
        match = parse_match("PN", key, keyword="ReferringPhysicianName")
        in_python = {name for name in AGREEMENT_NAMES if person_name_matches(match, name)}
        if in_sql != in_python:
            disagreements.append((key, in_sql, in_python))
    assert disagreements == []
    # and the rule says what it says: a few answers spelled out
    smith = parse_match("PN", "SMITH*", keyword="ReferringPhysicianName")
    assert {name for name in AGREEMENT_NAMES if person_name_matches(smith, name)} == {
        "Smith^John",
        "SMITH^JOHN^^=スミス^ジョン",
        "Koch^Eva\\Smith^J",
    }
