"""STOW-RS (api/routes/dicomweb/stow.py) on a live server, SQLite and PostgreSQL:
dicomweb-client storing pydicom's test files, then the index, the REST API and
the store holding them; partial and total failures in the response data set;
the request limits; the audit; and a large body streamed without the server's
memory growing by its size."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from requests import HTTPError
from sqlalchemy import select, text

from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.settings import Settings
from tests.api.dicomweb.conftest import DicomWeb
from tests.conftest import node_settings
from tests.dicomfiles import ct_dataset, to_bytes
from tests.interop.studies import Study

# a small request limit, so the 413 test sends little; the memory test raises it
REQUEST_LIMIT = 8 * 1024 * 1024
BOUNDARY = "stow-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The request limit small, unless a test asks otherwise (indirect parameter)."""
    overrides = getattr(request, "param", {"stow_max_request_bytes": REQUEST_LIMIT})
    return node_settings(db_url, tmp_path / "data", **overrides)


def multipart(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def post(client: httpx.Client, body: bytes, *, study: str | None = None) -> httpx.Response:
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    return client.post(url, content=body, headers={"Content-Type": CONTENT_TYPE})


def stored_paths(dicomweb: DicomWeb, sop_uids: set[str]) -> dict[str, Path]:
    with dicomweb.api.db.read() as session:
        rows = session.execute(
            select(DicomInstance.sop_instance_uid, DicomInstance.file_path).where(
                DicomInstance.sop_instance_uid.in_(sop_uids)
            )
        ).all()
    return {uid: dicomweb.store.absolute(path) for uid, path in rows}


def stow_audits(dicomweb: DicomWeb) -> list[AuditEvent]:
    with dicomweb.api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_code == "110104", AuditEvent.action == "instances_stored")
                .order_by(AuditEvent.id)
            )
        )


def sequence_uids(body: dict[str, object], tag: str) -> list[str]:
    items = body.get(tag, {}).get("Value", [])  # type: ignore[attr-defined]
    return [item["00081155"]["Value"][0] for item in items if "Value" in item["00081155"]]


def temp_files(dicomweb: DicomWeb) -> list[Path]:
    return list(dicomweb.store.tmp.glob("*.part"))


def test_dicomweb_client_stores_test_files(dicomweb: DicomWeb) -> None:
    study: Study = dicomweb.studies["mixed"]
    datasets = [pydicom.dcmread(instance.path) for instance in study.instances]
    client = dicomweb.client("technologist")

    answer = client.store_instances(datasets=datasets)

    referenced = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert referenced == study.sop_instance_uids
    assert "FailedSOPSequence" not in answer
    # (the host part is the request's Host: requests sends a chunked POST's
    # without the port, so only the path is compared)
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study.study_instance_uid}")
    first = answer.ReferencedSOPSequence[0]
    assert f"/dicomweb/studies/{study.study_instance_uid}/series/" in first.RetrieveURL
    # in the index, and through the REST API
    paths = stored_paths(dicomweb, study.sop_instance_uids)
    assert set(paths) == study.sop_instance_uids
    rest = dicomweb.api.client("admin").get(
        "/api/studies", params={"StudyInstanceUID": study.study_instance_uid}
    )
    assert rest.status_code == 200, rest.text
    [found] = rest.json()["items"]
    assert found["instance_count"] == len(study.instances)
    # the stored data set is the one sent
    for dataset in datasets:
        stored = pydicom.dcmread(paths[str(dataset.SOPInstanceUID)])
        assert stored == dataset
    # one 110104 for the request, in the user's name, with the counts
    [audit] = stow_audits(dicomweb)
    assert audit.actor_role == "technologist" and audit.outcome == "success"
    assert audit.details["counts"] == {"stored": len(study.instances)}
    assert audit.study_instance_uid == study.study_instance_uid
    assert audit.patient_id == study.patient_id
    assert temp_files(dicomweb) == []


def test_the_file_kept_is_the_part_byte_for_byte(dicomweb: DicomWeb) -> None:
    study = dicomweb.studies["rle"]
    sent = {i.sop_instance_uid: i.path.read_bytes() for i in study.instances}
    client = dicomweb.api.client("technologist")

    response = post(client, multipart(*sent.values()), study=study.study_instance_uid)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    paths = stored_paths(dicomweb, set(sent))
    assert {uid: paths[uid].read_bytes() for uid in sent} == sent
    # sent again: duplicates, answered as stored (C-STORE answers Success)
    again = post(client, multipart(*sent.values()))
    assert again.status_code == 200, again.text
    assert sorted(sequence_uids(again.json(), "00081199")) == sorted(sent)
    assert stow_audits(dicomweb)[-1].details["counts"] == {"duplicate": len(sent)}


def test_a_bad_part_fails_alone_and_all_bad_is_409(dicomweb: DicomWeb) -> None:
    study = dicomweb.studies["rle"]
    good = study.instances[0]
    client = dicomweb.api.client("technologist")

    response = post(client, multipart(b"not dicom at all", good.path.read_bytes()))

    assert response.status_code == 202, response.text
    body = response.json()
    assert sequence_uids(body, "00081199") == [good.sop_instance_uid]
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [0xC000]}
    assert set(stored_paths(dicomweb, {good.sop_instance_uid})) == {good.sop_instance_uid}
    assert stow_audits(dicomweb)[-1].outcome == "minor_failure"

    everything_bad = post(client, multipart(b"junk", b"\x00" * 200))
    assert everything_bad.status_code == 409, everything_bad.text
    reasons = [i["00081197"]["Value"][0] for i in everything_bad.json()["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000]
    assert "00081199" not in everything_bad.json()
    assert temp_files(dicomweb) == []


def test_an_instance_of_another_study_than_the_url_is_not_stored(dicomweb: DicomWeb) -> None:
    ours, other = dicomweb.studies["rle"], dicomweb.studies["mixed"]
    mine, stranger = ours.instances[0], other.instances[0]
    client = dicomweb.api.client("technologist")

    response = post(
        client,
        multipart(mine.path.read_bytes(), stranger.path.read_bytes()),
        study=ours.study_instance_uid,
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["00081190"]["Value"] == [f"{dicomweb.url}/studies/{ours.study_instance_uid}"]
    assert sequence_uids(body, "00081199") == [mine.sop_instance_uid]
    [failed] = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [stranger.sop_instance_uid]
    assert failed["00081150"]["Value"] == [stranger.sop_class_uid]
    assert failed["00081197"]["Value"] == [0xA900]
    assert stored_paths(dicomweb, {stranger.sop_instance_uid}) == {}
    assert stow_audits(dicomweb)[-1].details["counts"] == {"stored": 1, "wrong_study": 1}


SMALL_DATASETS = {"stow_max_request_bytes": REQUEST_LIMIT, "max_dataset_bytes": 65536}


@pytest.mark.parametrize("api_settings", [SMALL_DATASETS], indirect=True)
def test_a_part_over_max_dataset_bytes_fails_with_a700(dicomweb: DicomWeb) -> None:
    """Over the limit by a little (store_instance measures the data set, as for
    C-STORE) and by more than the reader keeps (the part is not even written):
    both A700 Out of Resources, and the other parts are stored."""
    limit = dicomweb.api.settings.max_dataset_bytes
    fine = dicomweb.studies["rle"].instances[0]
    assert len(fine.path.read_bytes()) < limit
    over = to_bytes(ct_dataset(study_uid="1.2.3.4")) + b"\x00" * limit  # trailing padding
    far_over = over + b"\x00" * (2 * 1024 * 1024)
    client = dicomweb.api.client("technologist")

    response = post(client, multipart(over, fine.path.read_bytes(), far_over))

    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0xA700], [0xA700]]
    assert sequence_uids(response.json(), "00081199") == [fine.sop_instance_uid]
    assert stow_audits(dicomweb)[-1].details["counts"] == {"stored": 1, "too_large": 2}
    assert temp_files(dicomweb) == []


def test_refusals_of_the_whole_request(dicomweb: DicomWeb) -> None:
    client = dicomweb.api.client("technologist")
    part = dicomweb.studies["rle"].instances[0].path.read_bytes()

    # over stow_max_request_bytes: declared, and streamed without a length
    too_big = multipart(part, b"\x00" * REQUEST_LIMIT)
    assert post(client, too_big).status_code == 413

    streamed = client.post(  # chunked: no Content-Length to refuse at once
        "/dicomweb/studies",
        content=_chunked(too_big, 65536),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert streamed.status_code == 413, streamed.text
    # wrong media types
    for content_type in (
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "text/plain",
    ):
        wrong = client.post(
            "/dicomweb/studies", content=b"x", headers={"Content-Type": content_type}
        )
        assert wrong.status_code == 415, (content_type, wrong.text)
    # malformed: no closing boundary, no parts, no boundary
    assert post(client, multipart(part)[: -len(f"--{BOUNDARY}--\r\n")]).status_code == 400
    assert post(client, f"--{BOUNDARY}--\r\n".encode()).status_code == 400
    no_boundary = client.post(
        "/dicomweb/studies",
        content=b"x",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert no_boundary.status_code == 400
    # nothing stored, nothing left behind, each refusal audited
    with dicomweb.api.db.read() as session:
        assert session.scalar(select(DicomInstance.id).limit(1)) is None
    assert temp_files(dicomweb) == []
    assert {a.outcome for a in stow_audits(dicomweb)} == {"serious_failure"}


def test_only_roles_that_store_may_stow(dicomweb: DicomWeb) -> None:
    part = dicomweb.studies["rle"].instances[0].path.read_bytes()
    for role in ("radiologist", "referring_physician"):
        assert post(dicomweb.api.client(role), multipart(part)).status_code == 403
    assert post(dicomweb.api.anonymous(), multipart(part)).status_code == 401
    with pytest.raises(HTTPError):
        dicomweb.client("radiologist").store_instances(
            [pydicom.dcmread(dicomweb.studies["rle"].instances[0].path)]
        )
    assert post(dicomweb.api.client("admin"), multipart(part)).status_code == 200


def _chunked(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


# ------------------------------------------------------------------ memory

# A 96 MiB instance (3 frames of 4096x4096x16 bits), generated while it is sent
FRAMES, SIDE = 3, 4096
PIXEL_BYTES = FRAMES * SIDE * SIDE * 2
LARGE = {"stow_max_request_bytes": 2 * PIXEL_BYTES, "max_dataset_bytes": 2 * PIXEL_BYTES}


def _large_instance(study_uid: str) -> tuple[bytes, Iterator[bytes]]:
    """The Part 10 file's head (all but the pixel data's value) and a
    generator of the whole multipart body, pixel data in 1 MiB pieces."""
    ds = ct_dataset(study_uid=study_uid)
    del ds.PixelData
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = FRAMES
    head = to_bytes(ds) + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", PIXEL_BYTES)

    def body() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + head
        piece = bytes(1024 * 1024)
        for _ in range(PIXEL_BYTES // len(piece)):
            yield piece
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return head, body()


@pytest.mark.parametrize("api_settings", [LARGE], indirect=True)
def test_a_large_body_is_streamed_not_held(dicomweb: DicomWeb) -> None:
    """The server (a thread of this process) stores a 96 MiB instance while
    Python's allocations peak far below that: the body is never held whole."""
    study_uid = "1.2.826.0.1.3680043.8.498.777"
    head, body = _large_instance(study_uid)
    client = dicomweb.api.client("technologist")
    tracemalloc.start()
    try:
        response = client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": CONTENT_TYPE}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    [sop_uid] = sequence_uids(response.json(), "00081199")
    stored = stored_paths(dicomweb, {sop_uid})[sop_uid]
    assert stored.stat().st_size == len(head) + PIXEL_BYTES
    with stored.open("rb") as file:
        assert file.read(len(head)) == head
    # a chunk, the 1 MiB feed step and the client's own pieces: not 96 MiB
    print(f"peak Python allocations: {peak} bytes for a {PIXEL_BYTES}-byte instance")
    assert peak < PIXEL_BYTES // 8, f"peak {peak} bytes of Python allocations"


def test_a_part_of_another_media_type_fails_with_c000(dicomweb: DicomWeb) -> None:
    part = dicomweb.studies["rle"].instances[0].path.read_bytes()
    client = dicomweb.api.client("technologist")
    response = post(client, multipart(part, content_type="application/octet-stream"))
    assert response.status_code == 409, response.text
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert stow_audits(dicomweb)[-1].details["counts"] == {"not_application_dicom": 1}
    assert temp_files(dicomweb) == []


def _refuse_index_row(dicomweb: DicomWeb, sop_uid: str) -> None:
    """A real database error for one instance: a trigger that refuses its row."""
    db = dicomweb.api.db
    if db.dialect == "sqlite":
        statements = [
            "CREATE TRIGGER stow_test_refuse BEFORE INSERT ON dicom_instances "
            f"WHEN NEW.sop_instance_uid = '{sop_uid}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
    else:
        statements = [
            "CREATE FUNCTION stow_test_refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.sop_instance_uid = '{sop_uid}' THEN "
            "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER stow_test_refuse BEFORE INSERT ON dicom_instances "
            "FOR EACH ROW EXECUTE FUNCTION stow_test_refuse()",
        ]
    with db.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def test_a_database_error_on_one_part_fails_that_part_alone(dicomweb: DicomWeb) -> None:
    """The database refusing one instance's row (a real error, raised by a
    trigger) is that instance's A700; the others are stored, and the request's
    110104 counts both."""
    study = dicomweb.studies["rle"]
    first, second = study.instances[0], study.instances[1]
    _refuse_index_row(dicomweb, second.sop_instance_uid)
    client = dicomweb.api.client("technologist")

    response = post(client, multipart(first.path.read_bytes(), second.path.read_bytes()))

    assert response.status_code == 202, response.text
    body = response.json()
    assert sequence_uids(body, "00081199") == [first.sop_instance_uid]
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [0xA700]}
    assert set(stored_paths(dicomweb, {first.sop_instance_uid, second.sop_instance_uid})) == {
        first.sop_instance_uid
    }
    [event] = stow_audits(dicomweb)
    assert event.outcome == "minor_failure"
    assert event.details["counts"] == {"stored": 1, "failed": 1}
    assert temp_files(dicomweb) == []
