"""Study search (C-FIND semantics over HTTP), detail, corrections and rejection."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
    User,
    WorklistItem,
)
from dicom_node.domain.enums import MetadataStatus
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes

# label -> patient id, name, study date, accession, description; series: (modality, instances)
STUDIES: dict[str, dict[str, Any]] = {
    "A": {
        "patient": ("PAT1", "DOE^JANE"),
        "date": "20260105",
        "accession": "ACC100",
        "description": "CT CHEST",
        "series": [("CT", 2), ("MR", 1)],
    },
    "B": {
        "patient": ("PAT2", "doe^john"),
        "date": "20251231",
        "accession": "ACC200",
        "description": "HEAD",
        "series": [("CT", 1)],
    },
    "C": {
        "patient": ("PAT3", "Διονυσιος"),
        "date": "20260110",
        "accession": "ACC300",
        "description": "ct chest",
        "series": [("MR", 1)],
    },
    "D": {
        "patient": ("PAT4", "SMITH^ANN"),
        "date": "20250101",
        "accession": "ACC400",
        "description": "KNEE",
        "series": [("CR", 1)],
    },
}


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
                for instance in range(1, count + 1):
                    ds = ct_dataset(
                        study_uid=self.uid[label],
                        series_uid=series_uid,
                        patient_id=patient_id,
                        patient_name=name,
                        accession=spec["accession"],
                        modality=modality,
                        instance_number=instance,
                    )
                    ds.SpecificCharacterSet = "ISO_IR 192"
                    ds.SeriesNumber = number
                    ds.StudyDate = spec["date"]
                    ds.StudyDescription = spec["description"]
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
            by_uid = dict(rows)
        self.id = {label: by_uid[uid] for label, uid in self.uid.items()}
        return self

    def labels(self, response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        by_uid = {uid: label for label, uid in self.uid.items()}
        return {by_uid[item["study_instance_uid"]] for item in response.json()["items"]}

    def set_status(self, label: str, status: MetadataStatus) -> None:
        with self.api.db.unit_of_work() as session:
            study = session.get(DicomStudy, self.id[label])
            assert study is not None
            study.metadata_status = status.value

    def order_for(self, label: str, username: str) -> int:
        """An order placed by ``username``, linked to the study ``label``."""
        with self.api.db.unit_of_work() as session:
            user_id = session.scalar(select(User.id).where(User.username == username))
            order = ImagingRequest(
                patient_id=STUDIES[label]["patient"][0],
                patient_name=STUDIES[label]["patient"][1],
                patient_name_folded=STUDIES[label]["patient"][1].casefold(),
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


def _events(api: ApiServer, action: str) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


# --------------------------------------------------------------------------- search

SEARCH_CASES = [
    # PN: case-insensitive, wildcards, non-ASCII (PS3.4 C.2.2.2.1, C.2.2.2.4)
    ({"PatientName": "DOE^JANE"}, {"A"}),
    ({"PatientName": "doe^jane"}, {"A"}),
    ({"PatientName": "DOE*"}, {"A", "B"}),
    ({"PatientName": "d?e^j*"}, {"A", "B"}),
    ({"PatientName": "ΔΙΟΝΥΣΙΟΣ"}, {"C"}),
    ({"PatientName": "DOE"}, set()),  # a single value is the whole name, not a prefix
    # other text: case-sensitive, wildcards
    ({"StudyDescription": "*CHEST*"}, {"A"}),
    ({"StudyDescription": "*chest"}, {"C"}),
    ({"AccessionNumber": "ACC?00"}, {"A", "B", "C", "D"}),
    ({"PatientID": "PAT2"}, {"B"}),
    # date ranges, inclusive, open ends
    ({"StudyDate": "20260101-20260131"}, {"A", "C"}),
    ({"StudyDate": "-20251231"}, {"B", "D"}),
    ({"StudyDate": "20260110-"}, {"C"}),
    ({"StudyDate": "20260105"}, {"A"}),
    # ModalitiesInStudy: one of the study's modalities; a list means any of them
    ({"ModalitiesInStudy": "CT"}, {"A", "B"}),
    ({"ModalitiesInStudy": "MR\\CR"}, {"A", "C", "D"}),
    # series-level keys: the study matches when one of its series does
    ({"Modality": "MR"}, {"A", "C"}),
    # several keys: all must match
    ({"PatientName": "doe*", "ModalitiesInStudy": "MR"}, {"A"}),
    # empty value: universal
    ({"PatientName": ""}, {"A", "B", "C", "D"}),
]


@pytest.mark.parametrize(("keys", "expected"), SEARCH_CASES)
def test_study_search_matches_like_c_find(
    api: ApiServer, index: Index, keys: dict[str, str], expected: set[str]
) -> None:
    client = api.client("scheduler")
    assert index.labels(client.get("/api/studies", params=keys)) == expected


def test_study_search_accepts_a_uid_list(api: ApiServer, index: Index) -> None:
    client = api.client("radiologist")
    uids = f"{index.uid['A']}\\{index.uid['D']}"
    assert index.labels(client.get("/api/studies", params={"StudyInstanceUID": uids})) == {
        "A",
        "D",
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"PatientNam": "DOE*"}, "PatientNam"),
        ({"patientname": "DOE*"}, "patientname"),
        ({"NumberOfStudyRelatedInstances": "3"}, "NumberOfStudyRelatedInstances"),
        ({"StudyDate": "20260231"}, "StudyDate"),
        ({"StudyDate": "20260110-20260101"}, "StudyDate"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"ModalitiesInStudy": "C*"}, "ModalitiesInStudy"),
        ({"PatientID": "PAT\x001"}, "PatientID"),
        ({"metadata_status": "rejected"}, "query.metadata_status"),
        ({"PatientName": "D" * 1025}, "PatientName"),
        ({"sort": "patient"}, "query.sort"),
    ],
)
def test_study_search_refuses_unknown_keys_and_malformed_values_with_422_naming_them(
    api: ApiServer, index: Index, params: dict[str, str], field: str
) -> None:
    response = api.client("admin").get("/api/studies", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_study_search_is_audited_as_a_query_with_its_keys_also_when_refused(
    api: ApiServer, index: Index
) -> None:
    client = api.client("technologist")
    assert client.get("/api/studies", params={"PatientName": "DOE*"}).status_code == 200
    assert client.get("/api/studies", params={"StudyDate": "nope"}).status_code == 422
    events = [e for e in _events(api, "study_search") if e.actor == client.username]
    assert [e.event_code for e in events] == ["110112", "110112"]
    assert events[0].details["keys"] == {"PatientName": "DOE*"}
    assert events[0].outcome == "success" and events[0].actor_role == "technologist"
    assert "StudyDate" in (events[1].reason or "") and events[1].outcome == "minor_failure"
    # the query is recorded, never the results
    assert "items" not in events[0].details


def test_study_search_pages_counts_and_sorts(api: ApiServer, index: Index) -> None:
    client = api.client("admin")
    first = client.get("/api/studies", params={"sort": "accession", "limit": 3}).json()
    assert first["total"] == 4 and first["limit"] == 3
    assert [item["accession_number"] for item in first["items"]] == ["ACC100", "ACC200", "ACC300"]
    rest = client.get("/api/studies", params={"sort": "accession", "offset": 3}).json()
    assert [item["accession_number"] for item in rest["items"]] == ["ACC400"]
    newest = client.get("/api/studies", params={"sort": "-study_date", "limit": 2}).json()
    assert [item["study_date"] for item in newest["items"]] == ["20260110", "20260105"]


def test_study_search_results_carry_the_workflow_fields(api: ApiServer, index: Index) -> None:
    client = api.client("admin")
    item = client.get("/api/studies", params={"AccessionNumber": "ACC100"}).json()["items"][0]
    assert item["id"] == index.id["A"]
    assert item["patient_id"] == "PAT1" and item["patient_name"] == "DOE^JANE"
    assert item["modalities"] == ["CT", "MR"]
    assert item["series_count"] == 2 and item["instance_count"] == 3
    assert item["study_description"] == "CT CHEST"
    assert item["metadata_status"] == "unmatched" and item["status"] == "acquired"
    assert item["completeness"] == "receiving" and item["order_id"] is None
    assert item["first_received_at"] and item["last_received_at"]


def test_study_search_filters_on_workflow_states(api: ApiServer, index: Index) -> None:
    index.set_status("B", MetadataStatus.CONFLICT)
    client = api.client("scheduler")
    assert index.labels(client.get("/api/studies", params={"metadata_status": "conflict"})) == {"B"}
    both = client.get(
        "/api/studies", params={"metadata_status": "unmatched", "PatientName": "doe*"}
    )
    assert index.labels(both) == {"A"}


def test_referring_physician_sees_only_studies_of_their_own_orders(
    api: ApiServer, index: Index
) -> None:
    mine = api.client("referring_physician")
    other = api.client("referring_physician")
    index.order_for("A", mine.username)
    index.order_for("B", other.username)
    assert index.labels(mine.get("/api/studies")) == {"A"}
    assert index.labels(mine.get("/api/studies", params={"PatientName": "doe*"})) == {"A"}
    assert mine.get("/api/studies").json()["total"] == 1
    assert mine.get(f"/api/studies/{index.id['A']}").status_code == 200
    # not theirs to see: 404, like an order of someone else
    assert mine.get(f"/api/studies/{index.id['B']}").status_code == 404
    assert mine.get(f"/api/studies/{index.id['C']}").status_code == 404


# --------------------------------------------------------------------------- detail


def test_study_detail_lists_series_instances_order_and_reports_and_is_audited(
    api: ApiServer, index: Index
) -> None:
    radiologist = api.client("radiologist")
    order_id = index.order_for("A", radiologist.username)
    with api.db.unit_of_work() as session:
        author = session.scalar(select(User.id).where(User.username == radiologist.username))
        report = Report(dicom_study_id=index.id["A"], radiologist_id=author)
        session.add(report)
        session.flush()
        report_id = report.id
    response = radiologist.get(f"/api/studies/{index.id['A']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["study"]["study_instance_uid"] == index.uid["A"]
    assert [(s["modality"], s["instance_count"]) for s in body["series"]] == [("CT", 2), ("MR", 1)]
    assert body["instance_total"] == 3 and len(body["instances"]) == 3
    first = body["instances"][0]
    assert first["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    assert first["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert first["instance_number"] == 1 and first["file_size"] > 0 and first["received_at"]
    assert body["order"]["id"] == order_id and body["order"]["priority"] == "urgent"
    assert body["report_ids"] == [report_id]
    page = radiologist.get(
        f"/api/studies/{index.id['A']}", params={"instance_offset": 2, "instance_limit": 1}
    ).json()
    assert page["instance_total"] == 3
    assert [i["sop_instance_uid"] for i in page["instances"]] == [
        body["instances"][2]["sop_instance_uid"]
    ]
    events = [e for e in _events(api, "study_viewed") if e.actor == radiologist.username]
    assert len(events) == 2 and events[0].event_code == "110103"
    assert events[0].patient_id == "PAT1" and events[0].study_instance_uid == index.uid["A"]


def test_referring_physician_sees_only_report_ids_signed_at_least_once(
    api: ApiServer, index: Index
) -> None:
    referring = api.client("referring_physician")
    index.order_for("A", referring.username)  # type: ignore[attr-defined]
    radiologist = api.client("radiologist")
    with api.db.unit_of_work() as session:
        author = session.scalar(select(User.id).where(User.username == radiologist.username))
        report = Report(dicom_study_id=index.id["A"], radiologist_id=author)
        session.add(report)
        session.flush()
        report_id = report.id
    url = f"/api/studies/{index.id['A']}"

    assert referring.get(url).json()["report_ids"] == []
    assert radiologist.get(url).json()["report_ids"] == [report_id]
    with api.db.unit_of_work() as session:
        signed = session.get(Report, report_id)
        assert signed is not None
        signed.signed_at = signed.created_at
    assert referring.get(url).json()["report_ids"] == [report_id]


def test_study_detail_of_an_unknown_study_is_404(api: ApiServer, index: Index) -> None:
    assert api.client("admin").get("/api/studies/999999").status_code == 404


# --------------------------------------------------------------------------- corrections


def _file_digests(api: ApiServer, index: Index, label: str) -> dict[str, str]:
    with api.db.read() as session:
        paths = session.scalars(
            select(DicomInstance.file_path)
            .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
            .where(DicomSeries.study_pk == index.id[label])
        ).all()
    return {
        path: hashlib.sha256(index.store.absolute(path).read_bytes()).hexdigest() for path in paths
    }


def test_correcting_a_matched_study_marks_it_corrected_and_audits_old_and_new_values(
    api: ApiServer, index: Index
) -> None:
    index.set_status("A", MetadataStatus.MATCHED)
    files_before = _file_digests(api, index, "A")
    client = api.client("scheduler")
    response = client.patch(
        f"/api/studies/{index.id['A']}",
        json={
            "reason": "typo at the modality",
            "patient_name": "DOE^JOANNA",
            "study_description": "CT THORAX",
            "accession_number": "ACC101",
            "body_part_examined": "CHEST",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata_status"] == "corrected"
    assert body["patient_name"] == "DOE^JOANNA" and body["accession_number"] == "ACC101"
    (event,) = [e for e in _events(api, "study_corrected") if e.actor == client.username]
    assert event.reason == "typo at the modality"
    assert event.details["before"] == {
        "patient_name": "DOE^JANE",
        "accession_number": "ACC100",
        "study_description": "CT CHEST",
        "body_part_examined": None,
        "metadata_status": "matched",
    }
    assert event.details["after"] == {
        "patient_name": "DOE^JOANNA",
        "accession_number": "ACC101",
        "study_description": "CT THORAX",
        "body_part_examined": "CHEST",
        "metadata_status": "corrected",
    }
    # the index follows: case-insensitive name, series-level body part, accession
    for keys in (
        {"PatientName": "doe^joanna"},
        {"BodyPartExamined": "CHEST"},
        {"AccessionNumber": "ACC101"},
    ):
        assert index.labels(client.get("/api/studies", params=keys)) == {"A"}
    assert index.labels(client.get("/api/studies", params={"PatientName": "DOE^JANE"})) == set()
    # the files stay byte-identical to what the modality sent
    assert _file_digests(api, index, "A") == files_before


def test_correcting_an_unmatched_study_keeps_its_status_and_reaches_the_change_feed(
    api: ApiServer, index: Index
) -> None:
    client = api.client("technologist")
    since = client.get("/api/changes").json()["latest"]
    response = client.patch(
        f"/api/studies/{index.id['B']}",
        json={"reason": "wrong sex", "patient_sex": "M", "patient_birth_date": "19800229"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata_status"] == "unmatched"
    assert response.json()["patient_sex"] == "M"
    feed = client.get("/api/changes", params={"since": since, "entity": "study"}).json()
    assert [(c["entity_id"], c["action"]) for c in feed["items"]] == [(index.id["B"], "updated")]


def test_a_correction_that_changes_nothing_writes_no_audit_event(
    api: ApiServer, index: Index
) -> None:
    index.set_status("A", MetadataStatus.MATCHED)
    response = api.client("admin").patch(
        f"/api/studies/{index.id['A']}", json={"reason": "check", "patient_name": "DOE^JANE"}
    )
    assert response.status_code == 200
    assert response.json()["metadata_status"] == "matched"
    assert _events(api, "study_corrected") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"patient_sex": "X"}, "patient_sex"),
        ({"patient_birth_date": "19990231"}, "patient_birth_date"),
        ({"patient_id": ""}, "patient_id"),
        ({"patient_name": "A\\B"}, "patient_name"),
        ({"body_part_examined": "chest"}, "body_part_examined"),
        ({"study_description": "x\x00y"}, "study_description"),
        ({"status": "reported"}, "status"),
    ],
)
def test_corrections_refuse_invalid_values_with_422(
    api: ApiServer, index: Index, body: dict[str, str], field: str
) -> None:
    response = api.client("admin").patch(
        f"/api/studies/{index.id['A']}", json={"reason": "fix", **body}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_a_correction_needs_a_reason_and_the_correct_permission(
    api: ApiServer, index: Index
) -> None:
    url = f"/api/studies/{index.id['A']}"
    response = api.client("admin").patch(url, json={"patient_sex": "M"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "reason"
    for role in ("radiologist", "referring_physician", "auditor"):
        assert api.client(role).patch(
            url, json={"reason": "x", "patient_sex": "M"}
        ).status_code == (403)


def _patient_rows(api: ApiServer) -> dict[str, int]:
    with api.db.read() as session:
        return dict(session.execute(select(Patient.patient_id, Patient.id)).all())


def test_a_new_patient_id_renames_the_patient_when_the_study_is_its_only_one(
    api: ApiServer, index: Index
) -> None:
    before = _patient_rows(api)
    client = api.client("admin")
    response = client.patch(
        f"/api/studies/{index.id['D']}", json={"reason": "wrong MRN", "patient_id": "PAT4X"}
    )
    assert response.status_code == 200, response.text
    rows = _patient_rows(api)
    assert "PAT4" not in rows and rows["PAT4X"] == before["PAT4"]
    assert index.labels(client.get("/api/studies", params={"PatientID": "PAT4X"})) == {"D"}
    assert index.labels(client.get("/api/studies", params={"PatientID": "PAT4"})) == set()
    (event,) = _events(api, "study_corrected")
    assert event.details["before"]["patient_id"] == "PAT4"
    assert event.details["after"]["patient_id"] == "PAT4X"
    assert event.details["patient_move"]["how"] == "renamed"


def test_a_new_patient_id_moves_the_study_to_that_patients_existing_record(
    api: ApiServer, index: Index
) -> None:
    before = _patient_rows(api)
    client = api.client("admin")
    response = client.patch(
        f"/api/studies/{index.id['D']}", json={"reason": "same person", "patient_id": "PAT2"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # the study now shows that patient's demographics; the audit keeps the old ones
    assert body["patient_id"] == "PAT2" and body["patient_name"] == "doe^john"
    assert index.labels(client.get("/api/studies", params={"PatientID": "PAT2"})) == {"B", "D"}
    with api.db.read() as session:
        study = session.get(DicomStudy, index.id["D"])
        assert study is not None and study.patient_pk == before["PAT2"]
    (event,) = _events(api, "study_corrected")
    assert event.details["before"]["patient_name"] == "SMITH^ANN"
    assert event.details["after"]["patient_name"] == "doe^john"
    assert event.details["patient_move"]["how"] == "joined_existing"
    # PAT4 had no other study: its record goes, no empty patient row stays behind
    assert event.details["patient_move"]["removed_patient_pk"] == before["PAT4"]
    assert "PAT4" not in _patient_rows(api)


def test_moving_onto_an_existing_patient_with_other_demographics_is_a_409(
    api: ApiServer, index: Index
) -> None:
    response = api.client("admin").patch(
        f"/api/studies/{index.id['D']}",
        json={"reason": "merge", "patient_id": "PAT2", "patient_name": "SMITH^ANN"},
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"]["existing"]["patient_name"] == "doe^john"
    with api.db.read() as session:
        study = session.get(DicomStudy, index.id["D"])
        patient = session.get(Patient, study.patient_pk)  # type: ignore[union-attr]
        assert patient is not None and patient.patient_id == "PAT4"
    assert _events(api, "study_corrected") == []


def test_a_new_patient_id_for_one_of_several_studies_creates_a_new_patient(
    api: ApiServer, index: Index
) -> None:
    client = api.client("admin")
    # B joins PAT1 (A's patient) first, then moves away again to a new id
    assert (
        client.patch(
            f"/api/studies/{index.id['B']}", json={"reason": "x", "patient_id": "PAT1"}
        ).status_code
        == 200
    )
    response = client.patch(
        f"/api/studies/{index.id['B']}",
        json={"reason": "it was not", "patient_id": "PAT9", "patient_name": "ROE^JOHN"},
    )
    assert response.status_code == 200, response.text
    rows = _patient_rows(api)
    assert {"PAT1", "PAT9"} <= set(rows)
    assert index.labels(client.get("/api/studies", params={"PatientID": "PAT1"})) == {"A"}
    assert index.labels(client.get("/api/studies", params={"PatientName": "roe^john"})) == {"B"}
    assert _events(api, "study_corrected")[-1].details["patient_move"]["how"] == "created"


# --------------------------------------------------------------------------- rejection


def test_rejecting_a_study_withdraws_it_from_search_but_keeps_it_readable(
    api: ApiServer, index: Index
) -> None:
    client = api.client("scheduler")
    url = f"/api/studies/{index.id['B']}"
    response = client.post(f"{url}/reject", json={"reason": "test images"})
    assert response.status_code == 200, response.text
    assert response.json()["metadata_status"] == "rejected"
    assert index.labels(client.get("/api/studies", params={"PatientName": "doe*"})) == {"A"}
    assert client.get("/api/studies").json()["total"] == 3
    assert client.get(url).json()["study"]["metadata_status"] == "rejected"
    (event,) = _events(api, "study_rejected")
    assert event.reason == "test images"
    assert event.details == {
        "before": {"metadata_status": "unmatched", "released_to_reading": False},
        "after": {"metadata_status": "rejected", "released_to_reading": False},
    }
    again = client.post(f"{url}/reject", json={"reason": "again"})
    assert again.status_code == 409
    assert again.json()["error"]["current_state"] == "rejected"
    correction = client.patch(url, json={"reason": "x", "patient_sex": "M"})
    assert correction.status_code == 409


def test_rejecting_needs_a_reason_and_the_correct_permission(api: ApiServer, index: Index) -> None:
    url = f"/api/studies/{index.id['A']}/reject"
    assert api.client("admin").post(url, json={"reason": ""}).status_code == 422
    assert api.client("admin").post(url, json={"reason": "   "}).status_code == 422
    assert api.client("radiologist").post(url, json={"reason": "x"}).status_code == 403
    assert api.client("admin").post(
        "/api/studies/999999/reject", json={"reason": "x"}
    ).status_code == (404)


def test_rejecting_a_study_cancels_its_open_worklist_items_in_every_queue(
    api: ApiServer, index: Index
) -> None:
    reader = api.client("radiologist")
    holder = api.user("radiologist")
    with api.db.unit_of_work() as session:
        holder_id = session.scalar(select(User.id).where(User.username == holder))
        items = [
            WorklistItem(dicom_study_id=index.id["A"], queue_type=queue, status=status, **extra)
            for queue, status, extra in (
                ("reading", "claimed", {"assigned_to_id": holder_id}),
                ("reconciliation", "pending", {}),
                ("review", "completed", {}),
            )
        ]
        items.append(WorklistItem(dicom_study_id=index.id["B"], queue_type="reading"))
        session.add_all(items)
        session.flush()
        ids = [item.id for item in items]
    listed = reader.get("/api/worklist").json()
    assert {i["id"] for i in listed["items"]} == {ids[0], ids[3]}

    response = api.client("admin").post(
        f"/api/studies/{index.id['A']}/reject", json={"reason": "wrong patient"}
    )

    assert response.status_code == 200, response.text
    with api.db.read() as session:
        statuses = [session.get(WorklistItem, item_id).status for item_id in ids]  # type: ignore[union-attr]
    assert statuses == ["cancelled", "cancelled", "completed", "pending"]
    cancelled = [e for e in _events(api, "worklist_item_cancelled") if e.target_id in map(str, ids)]
    assert sorted(int(e.target_id) for e in cancelled) == ids[:2]  # type: ignore[arg-type]
    assert all(e.reason == "study rejected: wrong patient" for e in cancelled)
    assert cancelled[0].details["before"]["status"] in {"claimed", "pending"}
    listed = reader.get("/api/worklist").json()
    assert [i["id"] for i in listed["items"]] == [ids[3]]
