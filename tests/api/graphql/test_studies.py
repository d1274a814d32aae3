"""Studies, patients, series and instances over GraphQL: REST's search (same
matches, order, totals and audit event), a study opened audited as REST's
detail, instances paged per series, and the referring physician's view."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, select

from dicom_node.db.models import AuditEvent, DicomStudy, ImagingRequest, User
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.query.studies import patients_by_ids
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.dicomfiles import ct_dataset, to_bytes

# label -> patient (id, name), study date, accession, series as (modality, instances)
STUDIES: dict[str, dict[str, Any]] = {
    "A": {"patient": ("PAT1", "DOE^JANE"), "date": "20260105", "accession": "ACC100",
          "series": [("CT", 2), ("MR", 1)]},
    "B": {"patient": ("PAT2", "doe^john"), "date": "20251231", "accession": "ACC200",
          "series": [("CT", 1)]},
    "C": {"patient": ("PAT3", "SMITH^ANN"), "date": "20260110", "accession": "ACC300",
          "series": [("CT", 5)]},
    # a second study of PAT1's
    "E": {"patient": ("PAT1", "DOE^JANE"), "date": "20240101", "accession": "ACC500",
          "series": [("CR", 1)]},
}  # fmt: skip


class Index:
    def __init__(self, api: ApiServer, root: Path) -> None:
        self.api = api
        self.store = FileStore(root, fsync=False)
        self.uid = {label: generate_uid() for label in STUDIES}
        self.id: dict[str, int] = {}

    def build(self) -> Index:
        for label, spec in STUDIES.items():
            patient_id, name = spec["patient"]
            for number, (modality, count) in enumerate(spec["series"], start=1):
                series_uid = generate_uid()
                # stored last first: the instances come back in instance number order
                for instance in range(count, 0, -1):
                    ds = ct_dataset(
                        study_uid=self.uid[label],
                        series_uid=series_uid,
                        patient_id=patient_id,
                        patient_name=name,
                        accession=spec["accession"],
                        modality=modality,
                        instance_number=instance,
                    )
                    ds.SeriesNumber = number
                    ds.StudyDate = spec["date"]
                    result = store_instance(
                        self.api.db,
                        self.store,
                        part10=to_bytes(ds),
                        source=Source(calling_ae_title="TEST"),
                        policy=IngestPolicy(),
                    )
                    assert result.outcome is StoreOutcome.STORED, result
        with self.api.db.read() as session:
            rows = session.execute(select(DicomStudy.study_instance_uid, DicomStudy.id)).all()
            by_uid = {uid: study_id for uid, study_id in rows}
        self.id = {label: by_uid[uid] for label, uid in self.uid.items()}
        return self

    def label(self, study_id: int) -> str:
        return next(label for label, known in self.id.items() if known == study_id)

    def order_for(self, label: str, username: str) -> int:
        """An order placed by ``username``, linked to the study ``label``."""
        with self.api.db.unit_of_work() as session:
            user_id = session.scalar(select(User.id).where(User.username == username))
            patient_id, name = STUDIES[label]["patient"]
            order = ImagingRequest(
                patient_id=patient_id,
                patient_name=name,
                patient_name_folded=name.casefold(),
                requested_by_id=user_id,
                priority="urgent",
                status="performed",
            )
            session.add(order)
            session.flush()
            study = session.get(DicomStudy, self.id[label])
            assert study is not None
            study.imaging_request_id = order.id
            return order.id


@pytest.fixture
def index(api: ApiServer, tmp_path: Path) -> Index:
    return Index(api, tmp_path / "store").build()


SEARCH = """
query ($first: Int, $after: String, $keys: [StudyKey!], $sort: String! = "-received",
       $metadataStatus: MetadataStatus, $status: StudyStatus, $completeness: Completeness) {
  studies(first: $first, after: $after, keys: $keys, sort: $sort,
          metadataStatus: $metadataStatus, status: $status, completeness: $completeness) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node {
      id studyInstanceUid accessionNumber patientId issuerOfPatientId patientName
      patientBirthDate patientSex studyDate studyTime studyDescription
      referringPhysicianName bodyPartExamined modalities seriesCount instanceCount
      status metadataStatus completeness orderId firstReceivedAt lastReceivedAt
    } }
  }
}
"""

# the REST field of each GraphQL one, and how its value compares
_ENUMS = {"status", "metadataStatus", "completeness"}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _as_rest(node: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL study as REST's StudyPublic spells it."""
    return {
        _snake(name): value.lower() if name in _ENUMS else value for name, value in node.items()
    }


def _same_instant(graphql: str | None, rest: str | None) -> bool:
    if graphql is None or rest is None:
        return graphql == rest
    return datetime.fromisoformat(graphql) == datetime.fromisoformat(rest.replace("Z", "+00:00"))


def _keys(**keys: str) -> list[dict[str, str]]:
    return [{"keyword": keyword, "value": value} for keyword, value in keys.items()]


def test_the_search_is_rest_s_matches_order_totals_and_fields(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    client = graph.client("scheduler")
    rest = api.client("scheduler")
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"keys": _keys(PatientName="doe*")}, {"PatientName": "doe*"}),
        ({"keys": _keys(ModalitiesInStudy="MR\\CR")}, {"ModalitiesInStudy": "MR\\CR"}),
        ({"keys": _keys(Modality="CT", StudyDate="20260101-")},
         {"Modality": "CT", "StudyDate": "20260101-"}),
        ({"sort": "accession"}, {"sort": "accession"}),
        ({"sort": "-study_date", "first": 2}, {"sort": "-study_date", "limit": 2}),
        ({"metadataStatus": "UNMATCHED"}, {"metadata_status": "unmatched"}),
        ({"status": "ACQUIRED", "completeness": "RECEIVING"},
         {"status": "acquired", "completeness": "receiving"}),
    ]  # fmt: skip
    for variables, params in cases:
        data = client.execute(SEARCH, **variables)["studies"]
        expected = rest.get("/api/studies", params=params).json()
        nodes = [_as_rest(edge["node"]) for edge in data["edges"]]
        assert [n["id"] for n in nodes] == [i["id"] for i in expected["items"]], variables
        assert data["totalCount"] == expected["total"], variables
        for node, item in zip(nodes, expected["items"], strict=True):
            for name in ("first_received_at", "last_received_at"):
                assert _same_instant(node.pop(name), item.pop(name)), name
            assert node == item
    assert len(client.execute(SEARCH)["studies"]["edges"]) == 4

    # first / after walks REST's pages
    pages: list[list[int]] = []
    after: str | None = None
    while True:
        page = client.execute(SEARCH, first=3, after=after, sort="accession")["studies"]
        pages.append([edge["node"]["id"] for edge in page["edges"]])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    second = rest.get("/api/studies", params={"sort": "accession", "offset": 3}).json()
    assert pages[1] == [item["id"] for item in second["items"]] and len(pages) == 2


def _events(api: ApiServer, action: str, actor: str) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == action, AuditEvent.actor == actor)
                .order_by(AuditEvent.id)
            )
        )


def test_the_search_is_audited_as_rest_s_also_when_refused(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    client = graph.client("technologist")
    client.execute(SEARCH, keys=_keys(PatientName="DOE*"), metadataStatus="UNMATCHED")

    refused = client.attempt(SEARCH, keys=_keys(StudyDate="nope"))
    assert refused.codes == ["BAD_USER_INPUT"]
    assert refused.errors[0]["extensions"]["field"] == "StudyDate"

    events = _events(api, "study_search", client.username)
    assert [e.event_code for e in events] == ["110112", "110112"]
    assert events[0].details["keys"] == {"PatientName": "DOE*"}
    assert events[0].details["filters"] == {"metadata_status": "unmatched"}
    assert events[0].outcome == "success" and "items" not in events[0].details
    assert events[1].outcome == "minor_failure" and "StudyDate" in (events[1].reason or "")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_search_input_is_bad_user_input_naming_the_field(graph: Graph, index: Index) -> None:
    client = graph.client("admin")

    def field(**variables: Any) -> str:
        outcome = client.attempt(SEARCH, **variables)
        assert outcome.codes == ["BAD_USER_INPUT"], variables
        return str(outcome.errors[0]["extensions"]["field"])

    assert field(keys=_keys(PatientNam="DOE*")) == "PatientNam"
    assert field(keys=_keys(ModalitiesInStudy="C*")) == "ModalitiesInStudy"
    assert field(keys=[*_keys(PatientID="PAT1"), *_keys(PatientID="PAT2")]) == "PatientID"
    assert field(keys=_keys(PatientID="\\".join(["P"] * 1001))) == "PatientID"
    assert field(metadataStatus="REJECTED") == "metadataStatus"
    assert field(sort="patient") == "sort"
    assert field(first=501) == "first"


STUDY = """
query ($id: Int!, $first: Int, $after: String) {
  study(id: $id) {
    id studyInstanceUid patientName
    patient { id patientId name birthDate sex }
    series { seriesInstanceUid modality seriesNumber instanceCount
      instances(first: $first, after: $after) {
        totalCount pageInfo { hasNextPage endCursor }
        edges { node { sopInstanceUid sopClassUid seriesInstanceUid instanceNumber
                       transferSyntaxUid fileSize receivedAt callingAeTitle quarantined } }
      }
    }
  }
}
"""


def test_a_study_with_series_and_paged_instances_is_rest_s_detail_and_audited(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    client = graph.client("radiologist")
    rest = api.client("radiologist")
    detail = rest.get(f"/api/studies/{index.id['A']}").json()

    # a page of 100 holds every instance of this small study (REST's detail:
    # all of them); 500 per series would be over the complexity limit
    study = client.execute(STUDY, id=index.id["A"], first=100)["study"]

    assert study["studyInstanceUid"] == index.uid["A"] and study["patientName"] == "DOE^JANE"
    assert study["patient"]["patientId"] == "PAT1" and study["patient"]["birthDate"] == "19700101"
    assert [(s["modality"], s["instanceCount"]) for s in study["series"]] == [("CT", 2), ("MR", 1)]
    assert [s["seriesInstanceUid"] for s in study["series"]] == [
        s["series_instance_uid"] for s in detail["series"]
    ]
    instances = [edge["node"] for s in study["series"] for edge in s["instances"]["edges"]]
    assert [i["sopInstanceUid"] for i in instances] == [
        i["sop_instance_uid"] for i in detail["instances"]
    ]
    assert [i["instanceNumber"] for i in instances] == [1, 2, 1]
    assert instances[0]["fileSize"] == detail["instances"][0]["file_size"]
    assert instances[0]["callingAeTitle"] == "TEST" and instances[0]["quarantined"] is False

    # one series of 5, paged two at a time
    seen: list[int] = []
    after: str | None = None
    while True:
        (series,) = client.execute(STUDY, id=index.id["C"], first=2, after=after)["study"]["series"]
        page = series["instances"]
        assert page["totalCount"] == 5 and len(page["edges"]) <= 2
        seen += [edge["node"]["instanceNumber"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [1, 2, 3, 4, 5]

    viewed = _events(api, "study_viewed", client.username)
    assert len(viewed) == 4 and viewed[0].event_code == "110103"
    assert viewed[0].patient_id == "PAT1" and viewed[0].study_instance_uid == index.uid["A"]

    by_uid = client.execute(
        "query ($uid: String!) { studyByUid(uid: $uid) { id } }", uid=index.uid["B"]
    )
    assert by_uid["studyByUid"]["id"] == index.id["B"]
    assert len(_events(api, "study_viewed", client.username)) == 5
    assert client.attempt(STUDY, id=999999).codes == ["NOT_FOUND"]
    unknown_uid = client.attempt('{ studyByUid(uid: "1.2.3.999") { id } }')
    assert unknown_uid.codes == ["NOT_FOUND"]
    assert client.attempt('{ studyByUid(uid: "1.2.abc") { id } }').codes == ["BAD_USER_INPUT"]
    assert client.attempt(STUDY, id=index.id["C"], first=0).codes == ["BAD_USER_INPUT"]


def test_series_and_instances_of_a_page_are_a_fixed_number_of_statements(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    client = graph.client("admin")
    document = (
        'query ($first: Int) { studies(first: $first, sort: "accession") { edges { node {'
        " id patient { id studies { id } } series { id instances(first: 2) {"
        " totalCount edges { node { id } } } } } } } }"
    )
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    counts = []
    for first in (1, 4):
        event.listen(api.db.engine, "before_cursor_execute", count)
        try:
            statements.clear()
            data = client.execute(document, first=first)
        finally:
            event.remove(api.db.engine, "before_cursor_execute", count)
        assert len(data["studies"]["edges"]) == first
        counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1], counts
    totals = [
        s["instances"]["totalCount"]
        for edge in data["studies"]["edges"]
        for s in edge["node"]["series"]
    ]
    assert totals == [2, 1, 1, 5, 1]


def test_a_referring_physician_sees_only_their_orders_studies_and_patients(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    mine = graph.client("referring_physician")
    other = graph.client("referring_physician")
    index.order_for("A", mine.username)
    index.order_for("B", other.username)

    found = mine.execute(SEARCH)["studies"]
    assert [edge["node"]["id"] for edge in found["edges"]] == [index.id["A"]]
    assert found["totalCount"] == 1
    # PAT1 has two studies: only the one of their order is theirs to see
    study = mine.execute(
        "query ($id: Int!) { study(id: $id) { id patient { patientId studies { id } } } }",
        id=index.id["A"],
    )["study"]
    assert study["patient"] == {"patientId": "PAT1", "studies": [{"id": index.id["A"]}]}
    admin = graph.client("admin")
    everything = admin.execute(
        "query ($id: Int!) { study(id: $id) { patient { studies { id } } } }", id=index.id["A"]
    )["study"]["patient"]["studies"]
    assert [s["id"] for s in everything] == [index.id["A"], index.id["E"]]  # newest first

    # another physician's study, or one no order claims: not found, never forbidden
    for label in ("B", "C", "E"):
        assert mine.attempt(STUDY, id=index.id[label]).codes == ["NOT_FOUND"], label
        outcome = mine.attempt(
            "query ($uid: String!) { studyByUid(uid: $uid) { id } }", uid=index.uid[label]
        )
        assert outcome.codes == ["NOT_FOUND"], label
    assert _events(api, "study_viewed", mine.username)[0].study_instance_uid == index.uid["A"]
    assert len(_events(api, "study_viewed", mine.username)) == 1


def test_the_report_edge_needs_reports_read(graph: Graph, index: Index) -> None:
    # every role reads studies; a scheduler or technologist reads no reports
    # (REST: the same table), so the study comes without its report
    for role in ("scheduler", "technologist"):
        outcome = graph.client(role).attempt(
            "query ($id: Int!) { study(id: $id) { id report { id } } }", id=index.id["A"]
        )
        assert outcome.codes == ["FORBIDDEN"], role
        assert outcome.errors[0]["path"] == ["study", "report"]
        assert outcome.data == {"study": {"id": index.id["A"], "report": None}}


def _principal(api: ApiServer, username: str) -> Principal:
    with api.db.read() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return Principal(user_id=user.id, username=user.username, role=Role(user.role))


def test_patient_loads_apply_the_visibility_rule(
    api: ApiServer, graph: Graph, index: Index
) -> None:
    """What patient_by_id (other areas' edges to a patient) batches: one
    statement, one answer per id in order, None for a patient none of whose
    studies the caller may see."""
    referring = graph.client("referring_physician")
    index.order_for("A", referring.username)
    with api.db.read() as session:
        rows = session.execute(
            select(DicomStudy.id, DicomStudy.patient_pk).where(DicomStudy.id.in_(index.id.values()))
        ).all()
    pks = {study_id: patient_pk for study_id, patient_pk in rows}
    wanted = [pks[index.id["B"]], pks[index.id["A"]], 999_999, pks[index.id["A"]]]
    with api.db.read() as session:
        theirs = patients_by_ids(
            session, principal=_principal(api, referring.username), patient_ids=wanted
        )
        everyone = patients_by_ids(
            session, principal=_principal(api, graph.client("admin").username), patient_ids=wanted
        )
    assert [p.patient_id if p else None for p in theirs] == [None, "PAT1", None, "PAT1"]
    assert [p.patient_id if p else None for p in everyone] == ["PAT2", "PAT1", None, "PAT1"]
