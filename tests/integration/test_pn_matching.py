"""Every PN key matched by the one PN rule (domain/names.py), on real databases.

PatientName, ReferringPhysicianName, NameOfPhysiciansReadingStudy (multi-valued,
with component groups) and PerformingPhysicianName (series level) of images
stored through ingest: case-insensitively (Unicode case folding), by component
group, with wildcards, lists and universal matching, the same for each key.
The C-FIND, worklist and HTTP tests (tests/e2e/test_pn_find.py) send these
cases over the wire.
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
from tests.dicomfiles import ct_dataset, to_bytes

# deterministic UIDs: they appear in test ids, the same in every process
UID = {label: generate_uid(entropy_srcs=["test_pn_matching", label]) for label in "ABC"}
SERIES_UID = {
    label: generate_uid(entropy_srcs=["test_pn_matching", label]) for label in ("A1", "A2", "B1")
}

YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"
# study label -> (PatientID, PatientName, ReferringPhysicianName, NameOfPhysiciansReadingStudy)
STUDIES: dict[str, tuple[str, str, str | None, list[str] | None]] = {
    "A": ("PN1", "Müller^Hans", "García^José", ["Wong^Anna", YAMADA]),
    "B": ("PN2", "DOE^JANE", "GARCIA^JOSE^^", ["SMITH^JOHN"]),
    "C": ("PN3", "doe^john", None, None),  # no physicians at all
}
# series label -> (study, PerformingPhysicianName)
SERIES: dict[str, tuple[str, str | None]] = {
    "A1": ("A", "Smith^John^^^"),
    "A2": ("A", "Koch^Eva\\ΣΩΚΡΆΤΗΣ^ΠΑΠΑΔΌΠΟΥΛΟΣ"),
    "B1": ("B", None),
}
SERIES_OF_STUDY = {"C": "C1"}

STUDY_CASES: list[tuple[dict[str, str], set[str]]] = [
    # ReferringPhysicianName: was case-sensitive before the PN rule covered it
    ({"ReferringPhysicianName": "García^José"}, {"A"}),
    ({"ReferringPhysicianName": "garcía^josé"}, {"A"}),
    ({"ReferringPhysicianName": "GARCÍA^JOSÉ"}, {"A"}),
    ({"ReferringPhysicianName": "garcia^jose"}, {"B"}),  # accents are letters
    ({"ReferringPhysicianName": "Garcia^Jose^"}, {"B"}),  # trailing empty components
    ({"ReferringPhysicianName": "gar*"}, {"A", "B"}),
    ({"ReferringPhysicianName": "G?RC?A^*"}, {"A", "B"}),
    ({"ReferringPhysicianName": "garcía"}, set()),  # a whole group, not a prefix
    ({"ReferringPhysicianName": "garcía^josé\\nobody^x"}, {"A"}),
    ({"ReferringPhysicianName": ""}, {"A", "B", "C"}),
    ({"ReferringPhysicianName": "*"}, {"A", "B", "C"}),
    # NameOfPhysiciansReadingStudy: multi-valued, one value with three groups
    ({"NameOfPhysiciansReadingStudy": "WONG^ANNA"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "yamada^tarou"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "山田^太郎"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "やまだ^*"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "YAMADA^TAROU=山田^太郎=やまだ^たろう"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "Yamada^Tarou=山田^太郎"}, set()),
    ({"NameOfPhysiciansReadingStudy": "smith^john"}, {"B"}),
    ({"NameOfPhysiciansReadingStudy": "s*"}, {"B"}),
    ({"NameOfPhysiciansReadingStudy": "wong^anna\\SMITH^JOHN"}, {"A", "B"}),
    ({"NameOfPhysiciansReadingStudy": ""}, {"A", "B", "C"}),
    # PatientName: the rule it always had
    ({"PatientName": "MÜLLER^HANS"}, {"A"}),
    ({"PatientName": "Mu\u0308ller^hans"}, {"A"}),  # decomposed ü
    ({"PatientName": "doe^jane"}, {"B"}),
    ({"PatientName": "DOE*"}, {"B", "C"}),
    # keys of series below the study: a study matches when one of its series does
    # (the HTTP search; C-FIND refuses a key below the query level)
]
SERIES_CASES: list[tuple[dict[str, str], set[str]]] = [
    ({"PerformingPhysicianName": "SMITH^JOHN"}, {"A1"}),
    ({"PerformingPhysicianName": "smith^john^"}, {"A1"}),
    ({"PerformingPhysicianName": "koch^eva"}, {"A2"}),
    ({"PerformingPhysicianName": "σωκράτης^παπαδόπουλος"}, {"A2"}),  # final sigma
    ({"PerformingPhysicianName": "Σωκ*"}, {"A2"}),
    ({"PerformingPhysicianName": "*^JOHN"}, {"A1"}),
    ({"PerformingPhysicianName": "k*\\smith^john"}, {"A1", "A2"}),
    ({"PerformingPhysicianName": "eva"}, set()),
    ({"PerformingPhysicianName": ""}, {"A1", "A2", "B1", "C1"}),
    ({"PerformingPhysicianName": "koch^eva", "ReferringPhysicianName": "GARCÍA^JOSÉ"}, {"A2"}),
]


def store_named(db: Database, store: FileStore) -> None:
    """Store the table's studies (also used by the C-FIND and HTTP tests)."""
    series = [(label, study, performer) for label, (study, performer) in SERIES.items()]
    series += [(label, study, None) for study, label in SERIES_OF_STUDY.items()]
    for series_label, study, performer in series:
        patient_id, patient_name, referring, readers = STUDIES[study]
        ds = ct_dataset(
            study_uid=UID[study],
            series_uid=SERIES_UID.get(series_label)
            or generate_uid(entropy_srcs=["test_pn_matching", series_label]),
            patient_id=patient_id,
            patient_name=patient_name,
        )
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SeriesDescription = series_label
        if referring is not None:
            ds.ReferringPhysicianName = referring
        if readers is not None:
            ds.NameOfPhysiciansReadingStudy = readers
        if performer is not None:
            ds.PerformingPhysicianName = performer.split("\\")
        result = store_instance(
            db,
            store,
            part10=to_bytes(ds),
            source=Source(calling_ae_title="TEST"),
            policy=IngestPolicy(),
        )
        assert result.outcome is StoreOutcome.STORED, result.reason


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
