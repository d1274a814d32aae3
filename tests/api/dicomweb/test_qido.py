"""QIDO-RS served for real, searched with dicomweb-client (and raw httpx where
a header or a refusal is the point), on SQLite and PostgreSQL.

The node holds three studies built here (known names, dates, accessions and
UIDs), five instances in all; its cap (max_find_matches) is 4, so a search of
all instances is cut by the node and a search of the studies is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, select, update

from dicom_node.db.models import AuditEvent, DicomStudy, ImagingRequest, User
from dicom_node.domain.audit import SystemActor
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.settings import Settings
from tests.api.dicomweb.conftest import DicomWeb
from tests.conftest import node_settings
from tests.dicomfiles import ct_dataset, write

CAP = 4
CAPPED = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", max_find_matches=CAP)


@dataclass(frozen=True)
class Held:
    a: str  # DOE^JANE, 2026-01-05 10:15, CT series of 2 + MR series of 1
    b: str  # Smith^John, 2026-01-10
    c: str  # SMYTHE^ANNA, 2025-12-31
    a_ct: str  # series UIDs of study a
    a_mr: str
    sops: dict[str, str]  # name -> SOP Instance UID


@pytest.fixture
def held(dicomweb: DicomWeb, tmp_path: Path) -> Held:
    a, b, c = (str(generate_uid()) for _ in range(3))
    a_ct, a_mr = str(generate_uid()), str(generate_uid())
    specs: list[dict[str, Any]] = [
        dict(name="a1", study_uid=a, series_uid=a_ct, patient_id="P1", patient_name="DOE^JANE",
             accession="ACC-A", modality="CT", instance_number=1, date="20260105", time="101500"),
        dict(name="a2", study_uid=a, series_uid=a_ct, patient_id="P1", patient_name="DOE^JANE",
             accession="ACC-A", modality="CT", instance_number=2, date="20260105", time="101500"),
        dict(name="a3", study_uid=a, series_uid=a_mr, patient_id="P1", patient_name="DOE^JANE",
             accession="ACC-A", modality="MR", instance_number=1, date="20260105", time="101500"),
        dict(name="b1", study_uid=b, patient_id="P2", patient_name="Smith^John",
             accession="ACC-B", modality="CT", instance_number=1, date="20260110", time="080000"),
        dict(name="c1", study_uid=c, patient_id="P3", patient_name="SMYTHE^ANNA",
             accession="ACC-C", modality="CR", instance_number=1, date="20251231", time="235900"),
    ]  # fmt: skip
    sops: dict[str, str] = {}
    files = []
    for spec in specs:
        name, date, time = spec.pop("name"), spec.pop("date"), spec.pop("time")
        ds = ct_dataset(**spec, pixel_seed=len(sops))
        ds.StudyDate, ds.StudyTime = date, time
        ds.ReferringPhysicianName = "HOUSE^GREGORY"
        ds.StudyDescription = f"STUDY {spec['accession']}"
        ds.StudyID = spec["accession"][-1]
        ds.SeriesDescription = f"{spec['modality']} SERIES"
        sops[name] = str(ds.SOPInstanceUID)
        files.append(write(ds, tmp_path / "qido" / f"{name}.dcm"))
    summary = import_files(
        dicomweb.api.db, dicomweb.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.ok, summary.describe()
    return Held(a, b, c, a_ct, a_mr, sops)


def _uids(results: list[dict[str, Any]], tag: str = "0020000D") -> set[str]:
    return {result[tag]["Value"][0] for result in results}


def _value(result: dict[str, Any], tag: str) -> Any:
    return result[tag]["Value"][0]


def _raw(dicomweb: DicomWeb, role: str = "admin") -> httpx.Client:
    return dicomweb.api.client(role)


# ------------------------------------------------------------------ study level


def test_studies_answer_the_default_attributes_as_dicom_json(
    dicomweb: DicomWeb, held: Held
) -> None:
    client = dicomweb.client("radiologist")
    studies = {_value(s, "0020000D"): s for s in client.search_for_studies()}
    assert set(studies) == {held.a, held.b, held.c}
    a = studies[held.a]
    assert a["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}
    assert a["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert a["00100030"]["vr"] == "DA" and a["00100040"]["Value"] == ["F"]
    assert a["00080020"] == {"vr": "DA", "Value": ["20260105"]}
    assert a["00080030"]["Value"] == ["101500"]
    assert a["00080050"]["Value"] == ["ACC-A"]
    assert sorted(a["00080061"]["Value"]) == ["CT", "MR"]
    assert a["00080090"]["Value"] == [{"Alphabetic": "HOUSE^GREGORY"}]
    assert a["00200010"]["Value"] == ["A"]
    assert a["00201206"] == {"vr": "IS", "Value": [2]}  # numbers, not strings
    assert a["00201208"] == {"vr": "IS", "Value": [3]}
    assert a["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    # built from the Host header; dicomweb-client sends its host without the port
    assert a["00081190"] == {"vr": "UR", "Value": [f"http://127.0.0.1/dicomweb/studies/{held.a}"]}
    [raw] = _raw(dicomweb).get("/dicomweb/studies", params={"StudyInstanceUID": held.a}).json()
    assert raw["00081190"]["Value"] == [f"{dicomweb.url}/studies/{held.a}"]
    assert list(a) == sorted(a)  # by tag
    # not a default study attribute, not asked for; nothing of lower levels
    assert "00081030" not in a and "0020000E" not in a and "00080060" not in a


def test_study_matching_is_c_find_matching(dicomweb: DicomWeb, held: Held) -> None:
    client = dicomweb.client("radiologist")

    def found(**filters: str) -> set[str]:
        return _uids(client.search_for_studies(search_filters=filters))

    # PN: case-insensitive, wildcards; other text: case-sensitive wildcards
    assert found(PatientName="sm*") == {held.b, held.c}
    assert found(PatientName="smith^john") == {held.b}
    assert found(AccessionNumber="ACC-?") == {held.a, held.b, held.c}
    assert found(AccessionNumber="acc-*") == set()
    # date ranges, open ranges, and date with time as one range
    assert found(StudyDate="20260101-20260131") == {held.a, held.b}
    assert found(StudyDate="-20251231") == {held.c}
    # (the time bounds the first and the last day, not every day)
    assert found(StudyDate="20260105-20260110", StudyTime="110000-") == {held.b}
    assert found(StudyDate="20260105-20260110", StudyTime="-075900") == {held.a}
    # UID lists, with backslashes (C-FIND) or commas (PS3.18)
    assert found(StudyInstanceUID=f"{held.a}\\{held.c}") == {held.a, held.c}
    assert found(StudyInstanceUID=f"{held.a},{held.c}") == {held.a, held.c}
    # an attribute by tag; a multi-valued study attribute
    assert found(**{"00100020": "P2"}) == {held.b}
    assert found(ModalitiesInStudy="MR") == {held.a}
    # the matching keys come back
    [b] = client.search_for_studies(search_filters={"StudyDescription": "STUDY ACC-B"})
    assert b["00081030"]["Value"] == ["STUDY ACC-B"]
    # fuzzymatching is accepted (literal matching, PN case-insensitive as always)
    assert _uids(client.search_for_studies(fuzzymatching=True, search_filters={
        "PatientName": "SMITH*"})) == {held.b}  # fmt: skip


def test_includefield_adds_attributes_of_the_level_and_above_only(
    dicomweb: DicomWeb, held: Held
) -> None:
    client = dicomweb.client("radiologist")
    filters = {"StudyInstanceUID": held.a}
    [plain] = client.search_for_studies(search_filters=filters)
    [asked] = client.search_for_studies(
        search_filters=filters, fields=["StudyDescription", "00081030", "Modality"]
    )
    assert "00081030" not in plain
    assert asked["00081030"] == {"vr": "LO", "Value": ["STUDY ACC-A"]}
    assert "00080060" not in asked  # a series attribute is not returned for a study
    [everything] = client.search_for_studies(search_filters=filters, fields=["all"])
    assert everything["00081030"]["Value"] == ["STUDY ACC-A"]
    assert everything["00201200"]["Value"] == [1]  # NumberOfPatientRelatedStudies
    # comma lists and repeated parameters (raw: dicomweb-client sends one per field)
    raw = _raw(dicomweb).get(
        "/dicomweb/studies",
        params=[
            ("StudyInstanceUID", held.a),
            ("includefield", "StudyDescription,NameOfPhysiciansReadingStudy"),
            ("includefield", "PatientAge"),  # a DICOM attribute the index does not hold
            ("includefield", "00091001"),  # a private tag
        ],
    )
    assert raw.status_code == 200, raw.text
    [result] = raw.json()
    assert "00081030" in result and result["00081060"] == {"vr": "PN"}
    assert "00101010" not in result and "00091001" not in result
    # a name that is neither a keyword nor a tag is refused
    typo = _raw(dicomweb).get("/dicomweb/studies", params={"includefield": "StudyDescriptio"})
    assert typo.status_code == 400 and typo.json()["error"]["field"] == "StudyDescriptio"


def test_limit_and_offset_page_through_the_matches(dicomweb: DicomWeb, held: Held) -> None:
    client = dicomweb.client("radiologist")
    first = client.search_for_studies(limit=2)
    rest = client.search_for_studies(limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 1
    assert _uids(first) | _uids(rest) == {held.a, held.b, held.c}
    assert client.search_for_studies(offset=3) == []
    # the client's own limit is no cap of the node's: no Warning
    response = _raw(dicomweb).get("/dicomweb/studies", params={"limit": 2})
    assert len(response.json()) == 2 and "warning" not in response.headers


def test_the_node_cap_cuts_the_list_with_a_warning(dicomweb: DicomWeb, held: Held) -> None:
    http = _raw(dicomweb)
    capped = http.get("/dicomweb/instances")
    assert capped.status_code == 200
    assert len(capped.json()) == CAP
    assert capped.headers["warning"] == f'299 {dicomweb.url}: "{CAPPED}"'
    asked_more = http.get("/dicomweb/instances", params={"limit": 10})
    assert len(asked_more.json()) == CAP and CAPPED in asked_more.headers["warning"]
    last = http.get("/dicomweb/instances", params={"offset": CAP})
    assert len(last.json()) == 1 and "warning" not in last.headers
    # dicomweb-client follows the warning with offsets and gets everything
    client = dicomweb.client("radiologist")
    every = client.search_for_instances(get_remaining=True)
    assert _uids(every, "00080018") == set(held.sops.values())
    # fuzzymatching=true: served literally, and said so
    fuzzy = http.get("/dicomweb/studies", params={"fuzzymatching": "true"})
    assert (
        fuzzy.status_code == 200
        and "fuzzymatching parameter is not supported" in (fuzzy.headers["warning"])
    )


# -------------------------------------------------------------- series, instances


def test_series_of_a_study_and_of_all_studies(dicomweb: DicomWeb, held: Held) -> None:
    client = dicomweb.client("technologist")
    of_a = {_value(s, "0020000E"): s for s in client.search_for_series(held.a)}
    assert set(of_a) == {held.a_ct, held.a_mr}
    ct = of_a[held.a_ct]
    assert ct["00080060"]["Value"] == ["CT"]
    assert ct["0008103E"]["Value"] == ["CT SERIES"]
    assert ct["00200011"] == {"vr": "IS", "Value": [1]}
    assert ct["00201209"] == {"vr": "IS", "Value": [2]}
    assert _value(ct, "00081190").endswith(f"/dicomweb/studies/{held.a}/series/{held.a_ct}")
    assert "00100010" not in ct  # the study is in the path: its attributes are not repeated
    assert _uids(client.search_for_series(held.a, search_filters={"Modality": "MR"}),
                 "0020000E") == {held.a_mr}  # fmt: skip

    every = client.search_for_series()
    assert len(every) == 4
    mr = [s for s in every if _value(s, "00080060") == "MR"]
    assert [_value(s, "00100010") for s in mr] == [{"Alphabetic": "DOE^JANE"}]
    assert mr[0]["00201208"]["Value"] == [3]  # the study's attributes with each series
    # a study-level key narrows a search of all series
    assert len(client.search_for_series(search_filters={"PatientName": "s*"})) == 2
    assert client.search_for_series(str(generate_uid())) == []


def test_instances_at_every_path(dicomweb: DicomWeb, held: Held) -> None:
    client = dicomweb.client("radiologist")
    of_series = client.search_for_instances(held.a, held.a_ct)
    assert _uids(of_series, "00080018") == {held.sops["a1"], held.sops["a2"]}
    one = next(i for i in of_series if _value(i, "00080018") == held.sops["a1"])
    assert one["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert one["00200013"] == {"vr": "IS", "Value": [1]}
    assert _value(one, "00081190").endswith(
        f"/dicomweb/studies/{held.a}/series/{held.a_ct}/instances/{held.sops['a1']}"
    )
    assert "00080060" not in one and "00100010" not in one

    of_study = client.search_for_instances(held.a)
    assert len(of_study) == 3
    assert {_value(i, "00080060") for i in of_study} == {"CT", "MR"}  # series attributes
    assert all("00100010" not in i for i in of_study)

    matched = client.search_for_instances(search_filters={"PatientID": "P3", "InstanceNumber": "1"})
    assert _uids(matched, "00080018") == {held.sops["c1"]}
    assert matched[0]["00100010"]["Value"] == [{"Alphabetic": "SMYTHE^ANNA"}]
    assert matched[0]["00080060"]["Value"] == ["CR"]
    listed = client.search_for_instances(
        held.a, search_filters={"SOPInstanceUID": f"{held.sops['a1']},{held.sops['a3']}"}
    )
    assert _uids(listed, "00080018") == {held.sops["a1"], held.sops["a3"]}


# ------------------------------------------------------------------ visibility


def test_a_referring_physician_finds_only_the_studies_of_their_orders(
    dicomweb: DicomWeb, held: Held
) -> None:
    username = dicomweb.api.user("referring_physician")
    with dicomweb.api.db.unit_of_work() as session:
        physician = session.scalar(select(User.id).where(User.username == username))
        order = ImagingRequest(
            patient_id="P1",
            patient_name="DOE^JANE",
            accession_number="ACC-A",
            status="performed",
            referring_physician_id=physician,
        )
        session.add(order)
        session.flush()
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.study_instance_uid == held.a)
            .values(imaging_request_id=order.id)
        )
    client = dicomweb.client(token=dicomweb.api.token(username))
    assert _uids(client.search_for_studies()) == {held.a}
    assert _uids(client.search_for_studies(search_filters={"PatientName": "*"})) == {held.a}
    assert _uids(client.search_for_series(), "0020000E") == {held.a_ct, held.a_mr}
    assert len(client.search_for_instances()) == 3
    # another study is answered as one that does not exist
    assert client.search_for_series(held.b) == []
    assert client.search_for_instances(held.c) == []
    assert client.search_for_studies(search_filters={"StudyInstanceUID": held.b}) == []
    # an admin still sees all three
    assert len(dicomweb.client("admin").search_for_studies()) == 3


# ------------------------------------------------------------ refusals, audit


def test_a_query_it_cannot_honour_is_400_in_the_error_shape_and_audited(
    dicomweb: DicomWeb, held: Held
) -> None:
    http = _raw(dicomweb)
    refused = {
        "/dicomweb/studies?StudyDate=2026-01-05": "StudyDate",
        "/dicomweb/studies?NoSuchKeyword=1": "NoSuchKeyword",
        "/dicomweb/studies?PatientWeight=70": "PatientWeight",  # not indexed
        "/dicomweb/studies?Modality=CT": None,  # a series key at study level
        "/dicomweb/studies?RequestAttributesSequence.AccessionNumber=A": None,
        "/dicomweb/studies?NumberOfStudyRelatedSeries=2": None,  # returned, not matched
        "/dicomweb/studies?limit=many": "limit",
        "/dicomweb/studies?limit=0": "limit",
        "/dicomweb/studies?fuzzymatching=maybe": "fuzzymatching",
        "/dicomweb/studies?PatientID=P1&PatientID=P2": "PatientID",
        "/dicomweb/studies/not-a-uid/series": None,
        f"/dicomweb/studies/{held.a}/series/1..2/instances": None,
        f"/dicomweb/studies/{held.a}/series?StudyInstanceUID={held.b}": None,
    }
    for url, field in refused.items():
        response = http.get(url)
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["status"] == 400 and error["code"] == "bad_request" and error["message"]
        if field is not None:
            assert error.get("field") == field, (url, error)
    with dicomweb.api.db.read() as session:
        failures = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "qido_search", AuditEvent.outcome != "success"
            )
        ).all()
    assert len(failures) == len(refused)
    assert all(event.event_code == "110112" and event.reason for event in failures)


def test_each_search_is_one_query_audit_event_with_the_keys_never_the_results(
    dicomweb: DicomWeb, held: Held
) -> None:
    http = _raw(dicomweb, "radiologist")
    response = http.get(
        f"/dicomweb/studies/{held.a}/series", params={"Modality": "CT", "includefield": "all"}
    )
    assert response.status_code == 200 and len(response.json()) == 1
    with dicomweb.api.db.read() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "qido_search")).all()
    [event] = events
    assert event.event_code == "110112" and event.outcome == "success"
    assert event.actor == http.username  # type: ignore[attr-defined]
    assert event.target_class == "SERIES"
    assert event.details["keys"] == {
        "StudyInstanceUID": held.a,
        "Modality": "CT",
        "includefield": "all",
    }
    assert "DOE" not in str(event.details)  # the results are not recorded


def _flushes(connection: Any, dialect: str) -> bool:
    """Whether a commit on this DBAPI connection waits for the disk flush now
    (the tests' PostgreSQL runs with synchronous_commit off: only a session
    override counts, as in tests/integration/test_commit_durability.py)."""
    if dialect == "postgresql":
        setting, source = connection.execute(
            "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
        ).fetchone()
        return not (setting == "off" and source == "session")
    return bool(connection.execute("PRAGMA synchronous").fetchone()[0] == 2)  # FULL


def test_the_query_audit_is_committed_without_waiting_for_the_disk(
    dicomweb: DicomWeb, held: Held
) -> None:
    """As C-FIND's Query event: committed before the answer, the disk flush not
    waited for (it was most of a selective search's time on SQLite)."""
    http = _raw(dicomweb, "radiologist")
    engine = dicomweb.api.db.engine
    seen: list[bool] = []

    def note(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "INSERT INTO audit_events" in statement and "qido_search" in str(parameters):
            seen.append(_flushes(cursor.connection, engine.dialect.name))

    event.listen(engine, "before_cursor_execute", note)
    try:
        response = http.get("/dicomweb/studies", params={"PatientID": "P1"})
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert response.status_code == 200 and len(response.json()) == 1
    assert seen == [False]


def test_media_types_and_authentication(dicomweb: DicomWeb, held: Held) -> None:
    http = _raw(dicomweb)
    for accept in ("application/dicom+json", "application/json", "*/*", "application/*"):
        response = http.get("/dicomweb/studies", headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert len(response.json()) == 3
    assert http.get("/dicomweb/studies").headers["content-type"] == "application/dicom+json"
    as_json = http.get("/dicomweb/studies", headers={"Accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    only_xml = http.get(
        "/dicomweb/studies", headers={"Accept": 'multipart/related; type="application/dicom+xml"'}
    )
    assert only_xml.status_code == 406 and only_xml.json()["error"]["status"] == 406
    refused_json = http.get(
        "/dicomweb/studies", headers={"Accept": "application/dicom+json;q=0, text/html"}
    )
    assert refused_json.status_code == 406
    # no match: 200 with an empty array (not 204)
    none = http.get("/dicomweb/studies", params={"PatientID": "NOBODY"})
    assert none.status_code == 200 and none.json() == []
    anonymous = dicomweb.api.anonymous()
    for path in ("/dicomweb/studies", f"/dicomweb/studies/{held.a}/instances"):
        assert anonymous.get(path).status_code == 401


def test_pydicom_test_files_are_answered_at_every_level(dicomweb: DicomWeb) -> None:
    """Real-world values (colour, multi-frame, odd headers) of the interop
    studies through every resource with every indexed attribute."""
    studies = dicomweb.load("mixed", "jpeg-baseline", "rle")
    client = dicomweb.client("radiologist")
    found = client.search_for_studies(fields=["all"], get_remaining=True)
    assert _uids(found) == {study.study_instance_uid for study in studies}
    for study in studies:
        series = client.search_for_series(
            study.study_instance_uid, fields=["all"], get_remaining=True
        )
        assert len(series) == len(study.instances)  # one series per file
        instances = client.search_for_instances(
            study.study_instance_uid, fields=["all"], get_remaining=True
        )
        assert _uids(instances, "00080018") == study.sop_instance_uids
    every = client.search_for_instances(fields=["all"], get_remaining=True)
    assert len(every) == sum(len(study.instances) for study in studies)
    for result in [*found, *every]:
        assert all(set(element) <= {"vr", "Value"} for element in result.values())
