"""When every transcoding place of the process stays taken for the whole wait,
a DICOMweb request that needs one (a compressed frame decoded, a rendering, an
instance transcoded) is answered 503 with Retry-After: the instance is fine,
the node is busy. Before, it was 406, which tells a viewer to give up."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dicom_node.db.engine import Database
from dicom_node.domain.transcode import Transcoder
from dicom_node.settings import Settings
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
