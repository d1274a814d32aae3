"""When every transcoding place of the process stays taken for the whole wait,
a DICOMweb request that needs one (a compressed frame decoded, a rendering, an
instance transcoded) is answered 503 with Retry-After: the instance is fine,
the node is busy. Before, it was 406, which tells a viewer to give up."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.domain.transcode import Transcoder, TranscoderBusy
from dicom_node.services.dicomweb.instances import StoredInstance
from dicom_node.services.dicomweb.multipart import stream_parts
from dicom_node.services.dicomweb.retrieve import plan_retrieve
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer, serve
from tests.api.dicomweb.conftest import DicomWeb
from tests.interop.studies import Study


@pytest.fixture
def busy(
    db: Database, api_settings: Settings, dicomweb_studies: dict[str, Study]
) -> Iterator[tuple[DicomWeb, Transcoder]]:
    """A served API whose transcoder has one place and gives up waiting at once."""
    server, thread, port = serve(db, api_settings)
    transcoder = Transcoder(
        max_decoded_bytes=api_settings.max_transcode_bytes, max_concurrent=1, max_wait_seconds=0.05
    )
    server.config.app.state.transcoder = transcoder
    api = ApiServer(base_url=f"http://127.0.0.1:{port}", db=db, settings=api_settings)
    yield DicomWeb(api, dicomweb_studies), transcoder
    for client in api.clients:
        client.close()
    server.should_exit = True
    thread.join(timeout=10)


def test_a_busy_transcoder_is_503_with_retry_after(busy: tuple[DicomWeb, Transcoder]) -> None:
    dicomweb, transcoder = busy
    (study,) = dicomweb.load("rle")
    token = dicomweb.token("radiologist")
    found = httpx.get(
        f"{dicomweb.url}/studies/{study.study_instance_uid}/instances",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    series = found[0]["0020000E"]["Value"][0]
    sop = found[0]["00080018"]["Value"][0]
    instance = f"{dicomweb.url}/studies/{study.study_instance_uid}/series/{series}/instances/{sop}"
    requests = {
        "rendered": (f"{instance}/rendered", "image/jpeg"),
        "decoded frame": (
            f"{instance}/frames/1",
            "multipart/related; type=application/octet-stream",
        ),
        "transcoded": (
            instance,
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        ),
    }
    headers = {"Authorization": f"Bearer {token}"}
    with transcoder.place():  # the only place, held for the whole request
        for what, (url, accept) in requests.items():
            answer = httpx.get(url, headers={**headers, "Accept": accept}, timeout=30)
            assert answer.status_code == 503, (what, answer.status_code, answer.text)
            assert answer.headers["retry-after"].isdigit(), what
            assert answer.json()["error"]["code"] == "service_unavailable", what
    # the same requests succeed once the place is free
    for what, (url, accept) in requests.items():
        answer = httpx.get(url, headers={**headers, "Accept": accept}, timeout=30)
        assert answer.status_code == 200, (what, answer.status_code, answer.text)


def test_a_study_retrieve_that_needs_a_busy_transcoder_is_never_a_complete_200(
    busy: tuple[DicomWeb, Transcoder],
) -> None:
    """Before, each instance whose transcoding found the place taken was left out
    with a log line: a 200 with none of the study's instances and no Warning."""
    dicomweb, transcoder = busy
    (study,) = dicomweb.load("rle")
    token = dicomweb.token("radiologist")
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": 'multipart/related; type="application/dicom"; '
        "transfer-syntax=1.2.840.10008.1.2.1",
    }
    url = f"{dicomweb.url}/studies/{study.study_instance_uid}"
    with transcoder.place():
        answer = httpx.get(url, headers=headers, timeout=30)
    assert answer.status_code == 503, (answer.status_code, answer.headers)
    assert answer.headers["retry-after"].isdigit()
    # with the place free, the whole study
    answer = httpx.get(url, headers=headers, timeout=30)
    assert answer.status_code == 200
    assert answer.content.count(b"Content-Type: application/dicom") == len(study.instances)


def test_busy_once_the_answer_has_started_cuts_the_stream_short(tmp_path: Path) -> None:
    """The first instance to transcode is made before the answer starts; a later
    one that finds the place taken ends the body with an error (no closing
    boundary) instead of leaving the instance out silently."""
    store = FileStore(tmp_path, fsync=False)
    instances = []
    for number, name in enumerate(("MR_small_RLE.dcm", "emri_small_RLE.dcm")):
        shutil.copy(get_testdata_file(name), store.instances / f"{number}.dcm")
        instances.append(
            StoredInstance(
                1,
                "1.2",
                "1.2.3",
                f"1.2.3.{number}",
                "1.2.840.10008.5.1.4.1.1.4",
                str(RLELossless),
                number,
                f"{number}.dcm",
                1,
                None,
                None,
            )
        )
    transcoder = Transcoder(max_decoded_bytes=1 << 30, max_concurrent=1, max_wait_seconds=0.05)
    plan = plan_retrieve(
        instances,
        [str(ExplicitVRLittleEndian)],
        store,
        transcoder,
        max_dataset_bytes=1 << 30,
        single=False,
    )
    body = stream_parts(plan.parts, "B")
    first = next(body)
    assert first.startswith(b"--B\r\n")
    with transcoder.place(), pytest.raises(TranscoderBusy):
        for _chunk in body:
            pass


def test_a_rendering_reads_its_file_within_the_transcoding_place(
    busy: tuple[DicomWeb, Transcoder],
) -> None:
    """The whole file read and the float rendering count against the limit, not
    only the frame's decoding: with the place taken, the request waits and is
    503 before it reads anything (here, a file gone from the store: before, the
    read came first and failed, 500, while every place was busy)."""
    dicomweb, transcoder = busy
    (study,) = dicomweb.load("rle")
    token = dicomweb.token("radiologist")
    found = httpx.get(
        f"{dicomweb.url}/studies/{study.study_instance_uid}/instances",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    series = found[0]["0020000E"]["Value"][0]
    sop = found[0]["00080018"]["Value"][0]
    with dicomweb.api.db.read() as session:
        relative = session.scalar(
            select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop)
        )
    assert relative is not None
    dicomweb.store.absolute(relative).unlink()
    url = f"{dicomweb.url}/studies/{study.study_instance_uid}/series/{series}/instances/{sop}"
    headers = {"Authorization": f"Bearer {token}"}
    with transcoder.place():
        for resource in ("rendered", "thumbnail", "frames/1/rendered"):
            answer = httpx.get(f"{url}/{resource}", headers=headers, timeout=30)
            assert answer.status_code == 503, (resource, answer.status_code, answer.text)
