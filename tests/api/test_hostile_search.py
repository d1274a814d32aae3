"""The HTTP study search with over-long integers and long value lists (issue 13,
finding 8): 422 naming the field, never 500; lists work up to the node's
``max_query_list_values``. Real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.conftest import node_settings
from tests.dicomfiles import ct_dataset, to_bytes

LIMIT = 300  # the 300-value PatientName list, at the limit


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", max_query_list_values=LIMIT)


@pytest.fixture
def studies(api: ApiServer, tmp_path: Path) -> dict[str, str]:
    """Patient name -> StudyInstanceUID, one CT study each."""
    store = FileStore(tmp_path / "store", fsync=False)
    uids = {}
    for number, name in enumerate(["DOE^JANE", "SMITH^JOHN", "MÜLLER^HANS"], start=1):
        uids[name] = generate_uid()
        ds = ct_dataset(study_uid=uids[name], patient_id=f"P{number}", patient_name=name)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SeriesNumber = number
        result = store_instance(
            api.db, store, part10=to_bytes(ds), source=Source(), policy=IngestPolicy()
        )
        assert result.outcome is StoreOutcome.STORED
    return uids


def _found(response_json: dict[str, object]) -> set[str]:
    items = response_json["items"]
    assert isinstance(items, list)
    return {item["study_instance_uid"] for item in items}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"SeriesNumber": "1" * 20}, "SeriesNumber"),
        ({"SeriesNumber": "-2147483649"}, "SeriesNumber"),
        ({"InstanceNumber": "1\\" + "9" * 12}, "InstanceNumber"),
    ],
    ids=["20-digits", "below-int32", "in-a-list"],
)
def test_an_out_of_range_integer_is_422_naming_the_field(
    api: ApiServer,
    studies: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    params: dict[str, str],
    field: str,
) -> None:
    caplog.set_level(logging.INFO)
    client = api.client("radiologist")
    response = client.get("/api/studies", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert "out of range for IS" in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # the refused search is audited, as every search is
    with api.db.read() as session:
        (audit,) = session.scalars(select(AuditEvent).where(AuditEvent.event_code == "110112"))
    assert audit.outcome == "minor_failure"


def test_a_series_number_within_range_still_matches(
    api: ApiServer, studies: dict[str, str]
) -> None:
    client = api.client("radiologist")
    response = client.get("/api/studies", params={"SeriesNumber": "2"})
    assert response.status_code == 200, response.text
    assert _found(response.json()) == {studies["SMITH^JOHN"]}


def test_name_and_id_lists_work_up_to_the_limit(api: ApiServer, studies: dict[str, str]) -> None:
    # short values: the whole key must fit services/studies.MAX_KEY_LENGTH
    client = api.client("radiologist")
    names = ["doe^jane", "MÜL*"] + [str(i % 10) for i in range(LIMIT - 2)]
    response = client.get("/api/studies", params={"PatientName": "\\".join(names)})
    assert response.status_code == 200, response.text
    assert _found(response.json()) == {studies["DOE^JANE"], studies["MÜLLER^HANS"]}

    ids = ["P2"] + [chr(ord("a") + i % 26) for i in range(LIMIT - 1)]
    response = client.get("/api/studies", params={"PatientID": "\\".join(ids)})
    assert response.status_code == 200, response.text
    assert _found(response.json()) == {studies["SMITH^JOHN"]}


def test_a_list_beyond_the_limit_is_422(api: ApiServer, studies: dict[str, str]) -> None:
    client = api.client("radiologist")
    names = "\\".join(["DOE^JANE"] + [str(i % 10) for i in range(LIMIT)])
    response = client.get("/api/studies", params={"PatientName": names})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["field"], error["message"]) == (
        "PatientName",
        f"PatientName: more than {LIMIT} values",
    )


@pytest.mark.timeout(120)
def test_a_hostile_wildcard_pattern_is_answered(api: ApiServer, studies: dict[str, str]) -> None:
    client = api.client("radiologist")
    cases = [("PatientName", "*D?" * 300 + "Z", 0), ("PatientID", "*" * 1000 + "P?", 3)]
    for keyword, pattern, total in cases:
        response = client.get("/api/studies", params={keyword: pattern})
        assert response.status_code == 200, response.text
        assert response.json()["total"] == total
