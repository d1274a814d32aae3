"""WADO-RS rendered and thumbnail resources, served for real to dicomweb-client
and httpx: the image is the domain's rendering of the stored instance
(dicom_node/domain/rendering.py, tested on its own in tests/unit/test_rendering.py),
the parameters change it, bad ones are refused, the visibility rule holds, and
each request is one audit event."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.domain.rendering import render
from dicom_node.domain.transcode import Transcoder, decoded_photometric_interpretation
from tests.api.dicomweb.conftest import DicomWeb
from tests.interop.studies import DAMAGED, Study


@dataclass(frozen=True)
class Target:
    study: str
    series: str
    sop: str
    path: str  # the imported file

    @property
    def url(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def _target(study: Study, source: str) -> Target:
    instance = next(i for i in study.instances if i.source == source)
    series = str(pydicom.dcmread(instance.path, stop_before_pixels=True).SeriesInstanceUID)
    return Target(study.study_instance_uid, series, instance.sop_instance_uid, str(instance.path))


def _image(body: bytes, kind: str) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    assert image.format == kind
    return image


def _expected(target: Target, frame: int = 0) -> np.ndarray:
    """The domain's rendering of the file (what the PNG must hold, losslessly)."""
    dataset = pydicom.dcmread(target.path)
    decoded = Transcoder(max_decoded_bytes=1 << 30, max_concurrent=1).frame(dataset, frame)
    photometric = decoded_photometric_interpretation(dataset)
    return np.asarray(render(decoded, dataset, photometric=photometric, frame_index=frame))


def _rendered_events(dicomweb: DicomWeb) -> list[AuditEvent]:
    with dicomweb.api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == "rendered").order_by(AuditEvent.id)
            )
        )


def test_dicomweb_client_gets_instance_frame_and_series_renderings(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    ct, emri = _target(mixed, "CT_small.dcm"), _target(mixed, "emri_small.dcm")
    client = dicomweb.client("radiologist")

    jpeg = _image(client.retrieve_instance_rendered(ct.study, ct.series, ct.sop), "JPEG")
    assert jpeg.size == (128, 128) and jpeg.mode == "L"
    png = client.retrieve_instance_rendered(ct.study, ct.series, ct.sop, media_types=("image/png",))
    # CT_small has no window: rescaled to HU, its range to 0..255
    assert np.array_equal(np.asarray(_image(png, "PNG")), _expected(ct))

    frames = [
        np.asarray(
            _image(
                client.retrieve_instance_frames_rendered(
                    emri.study, emri.series, emri.sop, [n], media_types=("image/png",)
                ),
                "PNG",
            )
        )
        for n in (1, 5)
    ]
    assert np.array_equal(frames[0], _expected(emri, 0))
    assert np.array_equal(frames[1], _expected(emri, 4))
    assert not np.array_equal(frames[0], frames[1])
    # each instance is a series of its own in these studies: the series's rendering is it
    series = client.retrieve_series_rendered(emri.study, emri.series, media_types=("image/png",))
    assert np.array_equal(np.asarray(_image(series, "PNG")), frames[0])


def test_window_viewport_and_quality_change_the_image(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    ct, tall = _target(mixed, "CT_small.dcm"), _target(mixed, "JPEG-lossy.dcm")
    http = dicomweb.api.client("radiologist")
    png = {"Accept": "image/png"}

    plain = np.asarray(_image(http.get(f"{ct.url}/rendered", headers=png).content, "PNG"))
    windowed = http.get(f"{ct.url}/rendered", params={"window": "40,80,linear"}, headers=png)
    assert windowed.status_code == 200, windowed.text
    narrow = np.asarray(_image(windowed.content, "PNG"))
    assert not np.array_equal(plain, narrow)
    # a soft-tissue window on CT: air and bone saturate
    assert (narrow == 0).mean() > 0.2 and (narrow == 255).mean() > 0.05

    # 256 x 1024 (portrait): fitted within the viewport, aspect kept
    fitted = http.get(f"{tall.url}/rendered", params={"viewport": "100,100"})
    assert fitted.status_code == 200, fitted.text
    assert _image(fitted.content, "JPEG").size == (25, 100)
    thumbnail = _image(http.get(f"{tall.url}/thumbnail").content, "JPEG")
    assert thumbnail.size == (32, 128)
    small = _image(http.get(f"{tall.url}/thumbnail", params={"viewport": "64,64"}).content, "JPEG")
    assert small.size == (16, 64)

    low = http.get(f"{ct.url}/rendered", params={"quality": "5"}).content
    high = http.get(f"{ct.url}/rendered", params={"quality": "100"}).content
    assert len(low) < len(high)
    # an annotation request is accepted and ignored
    annotated = http.get(f"{ct.url}/rendered", params={"annotation": "patient"}, headers=png)
    assert np.array_equal(np.asarray(_image(annotated.content, "PNG")), plain)


def test_thumbnails_of_frame_series_and_study(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    big, emri = _target(mixed, "MR2_J2KI.dcm"), _target(mixed, "emri_small.dcm")
    http = dicomweb.api.client("radiologist")
    for url, size in (
        (f"{big.url}/thumbnail", (128, 128)),  # 1024 x 1024
        (f"/dicomweb/studies/{big.study}/series/{big.series}/thumbnail", (128, 128)),
        (f"{emri.url}/frames/3/thumbnail", (128, 128)),  # 64 x 64, scaled up to fit
        (f"/dicomweb/studies/{big.study}/thumbnail", None),
        (f"/dicomweb/studies/{big.study}/rendered", None),
    ):
        response = http.get(url, headers={"Accept": "image/png"})
        assert response.status_code == 200, f"{url}: {response.text}"
        assert response.headers["content-type"] == "image/png"
        image = _image(response.content, "PNG")
        assert size is None or image.size == size, url
    gif = http.get(f"{big.url}/thumbnail", headers={"Accept": "image/gif"})
    assert gif.headers["content-type"] == "image/gif"
    assert _image(gif.content, "GIF").size == (128, 128)


@pytest.mark.parametrize(
    ("suffix", "params", "accept", "status"),
    [
        ("/rendered", {"window": "40"}, None, 400),
        ("/rendered", {"window": "40,0,linear"}, None, 400),
        ("/rendered", {"window": "40,80,cubic"}, None, 400),
        ("/rendered", {"viewport": "0,10"}, None, 400),
        ("/rendered", {"viewport": "5000,5000"}, None, 400),  # over rendered_max_dimension
        ("/rendered", {"viewport": "10,10,0,0,5,5"}, None, 400),
        ("/rendered", {"quality": "0"}, None, 400),
        ("/frames/1,2/rendered", {}, None, 400),
        ("/frames/0/rendered", {}, None, 400),
        ("/frames/%C2%B2/rendered", {}, None, 400),  # a superscript 2 is no frame number
        ("/rendered", {"viewport": "\u0661\u0662,10"}, None, 400),
        ("/frames/11/rendered", {}, None, 404),  # emri_small has 10
        ("/rendered", {}, "application/dicom", 406),
        ("/rendered", {}, "image/jpeg;q=0, text/html", 406),
        ("/rendered", {}, "text/html;q=0.9, image/*;q=0.5", 200),
    ],
)
def test_bad_parameters_are_refused(
    dicomweb: DicomWeb, suffix: str, params: dict[str, str], accept: str | None, status: int
) -> None:
    (mixed,) = dicomweb.load("mixed")
    emri = _target(mixed, "emri_small.dcm")
    http = dicomweb.api.client("radiologist")
    headers = {"Accept": accept} if accept else {}
    response = http.get(f"{emri.url}{suffix}", params=params, headers=headers)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["error"]["status"] == status
    assert len(_rendered_events(dicomweb)) == (1 if status == 200 else 0)


def test_a_malformed_uid_is_400(dicomweb: DicomWeb) -> None:
    http = dicomweb.api.client("radiologist")
    for url in (
        "/dicomweb/studies/1.02.3/rendered",
        "/dicomweb/studies/1.2/series/x/thumbnail",
        "/dicomweb/studies/1.2/series/1.3/instances/1..4/rendered",
    ):
        response = http.get(url)
        assert response.status_code == 400, f"{url}: {response.text}"


def test_an_undecodable_instance_is_406_and_not_audited(dicomweb: DicomWeb) -> None:
    (study,) = dicomweb.load("undecodable")
    damaged = _target(study, DAMAGED)
    response = dicomweb.api.client("radiologist").get(f"{damaged.url}/rendered")
    assert response.status_code == 406, response.text
    assert "cannot be rendered" in response.json()["error"]["message"]
    assert _rendered_events(dicomweb) == []


def test_a_study_not_visible_is_404_and_a_reader_s_renderings_are_audited_per_study(
    dicomweb: DicomWeb,
) -> None:
    (mixed,) = dicomweb.load("mixed")
    ct = _target(mixed, "CT_small.dcm")
    outsider = dicomweb.api.client("referring_physician")  # no order of this study
    for url in (
        f"{ct.url}/rendered",
        f"{ct.url}/thumbnail",
        f"/dicomweb/studies/{ct.study}/rendered",
    ):
        response = outsider.get(url)
        assert response.status_code == 404, response.text
    assert dicomweb.api.client("technologist").get(f"{ct.url}/rendered").status_code == 200
    assert dicomweb.api.anonymous().get(f"{ct.url}/rendered").status_code == 401

    reader = dicomweb.api.client("radiologist")
    assert reader.get(f"{ct.url}/rendered").status_code == 200
    assert reader.get(f"/dicomweb/studies/{ct.study}/thumbnail").status_code == 200
    events = [e for e in _rendered_events(dicomweb) if e.actor == reader.username]  # type: ignore[attr-defined]
    # two images of one study read by one reader: one event, the second read
    # counted into the key's next one (api/routes/dicomweb/image_audit.py)
    assert len(events) == 1
    assert {e.event_code for e in events} == {"110103"}
    assert {e.study_instance_uid for e in events} == {ct.study}
    assert all(e.details["instances"] == 1 for e in events)
