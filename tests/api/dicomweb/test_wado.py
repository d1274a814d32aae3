"""WADO-RS served for real: retrieve, metadata, frames and bulk data with
dicomweb-client (and raw httpx where the bytes, a header or a refusal is the
point), on SQLite and PostgreSQL, over pydicom's test files (tests/interop/
studies.py) imported into the node.
"""

from __future__ import annotations

import gc
import io
import threading
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import requests
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.domain.audit import SystemActor
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from tests.api.dicomweb.conftest import DicomWeb
from tests.dicomfiles import ct_dataset, write
from tests.interop.studies import DAMAGED, Study, judge, reference_pixels

EVRLE = str(ExplicitVRLittleEndian)


# --------------------------------------------------------------------------- helpers


def stored_path(dicomweb: DicomWeb, sop_uid: str) -> Path:
    """The node's own file of an instance."""
    with dicomweb.api.db.read() as session:
        relative = session.scalar(
            select(DicomInstance.file_path).where(DicomInstance.sop_instance_uid == sop_uid)
        )
    assert relative is not None
    return dicomweb.store.absolute(relative)


def instance_of(study: Study, source: str) -> tuple[str, str]:
    """(series UID, SOP UID) of the study's instance copied from ``source``."""
    for instance in study.instances:
        if instance.source == source:
            ds = pydicom.dcmread(instance.path, stop_before_pixels=True)
            return str(ds.SeriesInstanceUID), instance.sop_instance_uid
    raise AssertionError(source)


def multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related answer: (headers, body) each."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    body = response.content
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert data.endswith(b"\r\n")
        parts.append((headers, data[:-2]))
    return parts


def raw_client(dicomweb: DicomWeb, role: str = "admin") -> httpx.Client:
    client = dicomweb.api.client(role)
    client.base_url = httpx.URL(f"{dicomweb.url}/")
    return client


def served(dicomweb: DicomWeb, uri: str) -> str:
    """A BulkDataURI as this test's server serves it. The node builds it from the
    request's Host header (as a proxy in front of it would have it); dicomweb-client
    sends Host without the port, so the test's ephemeral port is put back."""
    url = httpx.URL(uri)
    assert url.path.startswith("/dicomweb/studies/"), uri
    return f"{dicomweb.api.base_url}{url.raw_path.decode()}"


def events(dicomweb: DicomWeb, action: str) -> list[AuditEvent]:
    with dicomweb.api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


# --------------------------------------------------------------------------- retrieve


def test_study_series_and_instance_retrieve_as_stored(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("radiologist")

    # dicomweb-client: every instance arrives, each the stored data set
    datasets = client.retrieve_study(mixed.study_instance_uid)
    assert {ds.SOPInstanceUID for ds in datasets} == mixed.sop_instance_uids
    for ds in datasets:
        stored = pydicom.dcmread(stored_path(dicomweb, ds.SOPInstanceUID))
        assert ds.file_meta.TransferSyntaxUID == stored.file_meta.TransferSyntaxUID
        assert ds == stored

    series, sop = instance_of(mixed, "MR_small_jp2klossless.dcm")
    (in_series,) = client.retrieve_series(mixed.study_instance_uid, series)
    assert in_series.SOPInstanceUID == sop
    single = client.retrieve_instance(mixed.study_instance_uid, series, sop)
    assert single.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"

    # raw: each part is the stored file byte for byte, labelled with its syntax
    response = raw_client(dicomweb).get(
        f"studies/{mixed.study_instance_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    parts = multipart(response)
    assert len(parts) == len(mixed.instances)
    for headers, data in parts:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert data == stored_path(dicomweb, ds.SOPInstanceUID).read_bytes()
        syntax = headers["content-type"].split("transfer-syntax=")[1]
        assert syntax == ds.file_meta.TransferSyntaxUID


def test_instance_transcoded_when_asked_for_explicit_vr_little_endian(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("radiologist")
    for source in ("MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm"):
        series, sop = instance_of(mixed, source)
        ds = client.retrieve_instance(
            mixed.study_instance_uid,
            series,
            sop,
            media_types=(("application/dicom", EVRLE),),
        )
        assert ds.file_meta.TransferSyntaxUID == EVRLE, source
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert judge(stored_path(dicomweb, sop), buffer.getvalue(), bit_preserving=False) == []
        assert np.array_equal(ds.pixel_array, reference_pixels(stored_path(dicomweb, sop)))


def test_what_cannot_be_produced_is_406_or_left_out_with_a_warning(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = raw_client(dicomweb)
    study = mixed.study_instance_uid
    series, sop = instance_of(mixed, "MR_small.dcm")
    jpeg_baseline = "1.2.840.10008.1.2.4.50"  # lossy: never produced
    lossy = {
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={jpeg_baseline}'
    }
    response = client.get(f"studies/{study}/series/{series}/instances/{sop}", headers=lossy)
    assert response.status_code == 406 and "error" in response.json()
    assert (
        client.get(f"studies/{study}", headers={"Accept": "application/dicom+json"}).status_code
        == 406
    )

    # a study: what is stored in the syntax goes, the rest is left out and counted
    _, jpeg_sop = instance_of(mixed, "SC_rgb_jpeg_dcmtk.dcm")
    response = client.get(f"studies/{study}", headers=lossy)
    assert response.status_code == 200
    parts = multipart(response)
    sent = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID for _, data in parts}
    assert jpeg_sop in sent and len(sent) < len(mixed.instances)
    assert response.headers["warning"].startswith(
        f'299 dicom-node "{len(mixed.instances) - len(sent)} '
    )


def test_malformed_and_missing(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = raw_client(dicomweb)
    study = mixed.study_instance_uid
    series, sop = instance_of(mixed, "emri_small.dcm")  # 10 frames
    instance = f"studies/{study}/series/{series}/instances/{sop}"
    assert client.get("studies/1.2.x").status_code == 400
    for frames in ("0", "a", "1,,2", "-1", "1;2"):
        response = client.get(f"{instance}/frames/{frames}")
        assert response.status_code == 400, frames
        assert response.json()["error"]["code"] == "bad_request"
    assert client.get(f"{instance}/frames/11").status_code == 404
    assert client.get(f"{instance}/frames/10").status_code == 200
    assert client.get(f"{instance}/bulkdata/zz").status_code == 400
    assert client.get(f"{instance}/bulkdata/00100010").status_code == 404  # not binary
    assert client.get(f"studies/{generate_uid()}").status_code == 404


def test_a_repeated_frame_number_is_sent_once_where_it_first_appears(
    dicomweb: DicomWeb,
) -> None:
    """Before, every repeat was a part of its own: 10,000 decodings for one URL."""
    (mixed,) = dicomweb.load("mixed")
    client = raw_client(dicomweb)
    series, sop = instance_of(mixed, "emri_small.dcm")  # 10 frames
    instance = f"studies/{mixed.study_instance_uid}/series/{series}/instances/{sop}"
    one = {n: multipart(client.get(f"{instance}/frames/{n}"))[0][1] for n in (1, 3)}
    response = client.get(f"{instance}/frames/3,1,3,1,3")
    assert response.status_code == 200
    assert [body for _, body in multipart(response)] == [one[3], one[1]]
    assert one[3] != one[1]


def test_referring_physician_gets_404_for_a_study_not_theirs(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("referring_physician")
    series, sop = instance_of(mixed, "MR_small.dcm")
    calls = [
        lambda: client.retrieve_study(mixed.study_instance_uid),
        lambda: client.retrieve_study_metadata(mixed.study_instance_uid),
        lambda: client.retrieve_instance_frames(mixed.study_instance_uid, series, sop, [1]),
    ]
    for call in calls:
        with pytest.raises(requests.HTTPError) as raised:
            call()
        assert raised.value.response.status_code == 404
    assert events(dicomweb, "dicomweb_retrieve") == []


def test_one_audit_event_per_study_per_request_with_the_instance_count(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("radiologist")
    client.retrieve_study(mixed.study_instance_uid)
    client.retrieve_study(mixed.study_instance_uid)
    series, sop = instance_of(mixed, "CT_small.dcm")
    client.retrieve_study_metadata(mixed.study_instance_uid)
    client.retrieve_instance_frames(mixed.study_instance_uid, series, sop, [1])
    retrieves = events(dicomweb, "dicomweb_retrieve")
    assert len(retrieves) == 2
    for event in retrieves:
        assert event.event_code == "110103"
        assert event.study_instance_uid == mixed.study_instance_uid
        assert event.details["instances"] == len(mixed.instances)
    (metadata,) = events(dicomweb, "dicomweb_metadata")
    assert metadata.details["instances"] == len(mixed.instances)
    (frames,) = events(dicomweb, "dicomweb_frames")
    assert frames.details["instances"] == 1


def test_a_viewer_reading_image_after_image_is_audited_once_per_study_then_counted(
    dicomweb: DicomWeb,
) -> None:
    """A viewer asks for each image's frames (and renderings) in turn: the first
    read of a study by a user is one event at once; the same reads in the next
    minutes are counted into that key's next event, not one row each."""
    (mixed,) = dicomweb.load("mixed")
    series, sop = instance_of(mixed, "CT_small.dcm")
    reader, other = dicomweb.client("radiologist"), dicomweb.client("radiologist")
    for _ in range(5):
        reader.retrieve_instance_frames(mixed.study_instance_uid, series, sop, [1])
    (first,) = events(dicomweb, "dicomweb_frames")
    assert first.details["instances"] == 1 and "repeats_since_last_event" not in first.details
    assert first.study_instance_uid == mixed.study_instance_uid
    # another reader of the same study: their own event at once
    other.retrieve_instance_frames(mixed.study_instance_uid, series, sop, [1])
    assert len(events(dicomweb, "dicomweb_frames")) == 2
    reader.retrieve_instance_rendered(mixed.study_instance_uid, series, sop)
    reader.retrieve_instance_rendered(mixed.study_instance_uid, series, sop)
    assert len(events(dicomweb, "rendered")) == 1
    # the count carried into the key's next event: RepeatedListingAudit's own
    # tests (tests/api/test_listing_audit.py)


# --------------------------------------------------------------------------- metadata and bulk data


def test_metadata_has_no_pixel_values_and_its_bulk_data_uris_fetch(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("radiologist")
    models = client.retrieve_study_metadata(mixed.study_instance_uid)
    assert len(models) == len(mixed.instances)
    for model in models:
        pixel = model["7FE00010"]
        assert "Value" not in pixel and "InlineBinary" not in pixel and pixel["BulkDataURI"]
        assert model["00080018"]["Value"][0] in mixed.sop_instance_uids

    series, sop = instance_of(mixed, "MR_small.dcm")  # Explicit VR Little Endian
    model = client.retrieve_instance_metadata(mixed.study_instance_uid, series, sop)
    stored = pydicom.dcmread(stored_path(dicomweb, sop))
    assert model["00100020"]["Value"] == [stored.PatientID]
    assert model["00083002"]["Value"] == [EVRLE]  # Available Transfer Syntax UID
    (pixels,) = client.retrieve_bulkdata(served(dicomweb, model["7FE00010"]["BulkDataURI"]))
    assert pixels == stored.PixelData

    # a compressed one: its pixel data bulk data is its frames as stored
    series, sop = instance_of(mixed, "emri_small_jpeg_2k_lossless.dcm")
    model = client.retrieve_instance_metadata(mixed.study_instance_uid, series, sop)
    frames = client.retrieve_bulkdata(served(dicomweb, model["7FE00010"]["BulkDataURI"]))
    stored = pydicom.dcmread(stored_path(dicomweb, sop))
    assert len(frames) == 10
    assert frames[3] == get_frame(stored.PixelData, 3, number_of_frames=10)


def test_large_values_other_than_pixel_data_are_bulk_data(
    dicomweb: DicomWeb, tmp_path: Path
) -> None:
    ds = ct_dataset(study_uid=str(generate_uid()))
    curve = bytes(range(256)) * 8  # 2 KiB: over the threshold
    ds.add_new(0x00091010, "OB", curve)  # a private one
    small = Path(tmp_path / "small.dcm")
    ds.add_new(0x00291010, "OB", b"\x01\x02")  # small: inline
    write(ds, small)
    summary = import_files(
        dicomweb.api.db, dicomweb.store, [small], policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.ok, summary.describe()
    client = dicomweb.client("admin")
    model = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert "InlineBinary" in model["00291010"]
    uri = model["00091010"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/00091010")
    assert client.retrieve_bulkdata(served(dicomweb, uri)) == [curve]


# --------------------------------------------------------------------------- frames


def test_frames_uncompressed_and_compressed(dicomweb: DicomWeb) -> None:
    (mixed,) = dicomweb.load("mixed")
    client = dicomweb.client("radiologist")
    study = mixed.study_instance_uid

    # native multi-frame: the frames' bytes as stored
    series, sop = instance_of(mixed, "emri_small.dcm")
    stored = pydicom.dcmread(stored_path(dicomweb, sop))
    size = stored.Rows * stored.Columns * stored.BitsAllocated // 8
    frames = client.retrieve_instance_frames(study, series, sop, [2, 5])
    assert frames == [stored.PixelData[size : 2 * size], stored.PixelData[4 * size : 5 * size]]

    # compressed, as stored (the default */*): the frame's codestream
    series, sop = instance_of(mixed, "emri_small_jpeg_2k_lossless.dcm")
    path = stored_path(dicomweb, sop)
    stored = pydicom.dcmread(path)
    (frame,) = client.retrieve_instance_frames(study, series, sop, [4])
    assert frame == get_frame(stored.PixelData, 3, number_of_frames=10)
    response = raw_client(dicomweb).get(
        f"studies/{study}/series/{series}/instances/{sop}/frames/4",
        headers={"Accept": 'multipart/related; type="image/jp2"'},
    )
    ((headers, data),) = multipart(response)
    assert headers["content-type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert data == frame

    # compressed, asked uncompressed: decoded, as pydicom decodes it
    decoded = client.retrieve_instance_frames(
        study, series, sop, [1, 10], media_types=(("application/octet-stream", EVRLE),)
    )
    expected = reference_pixels(path)
    assert decoded == [expected[0].astype("<u2").tobytes(), expected[9].astype("<u2").tobytes()]

    # big endian stored: decoded to little endian
    series, sop = instance_of(mixed, "MR_small_bigendian.dcm")
    (frame,) = client.retrieve_instance_frames(study, series, sop, [1])
    expected = reference_pixels(stored_path(dicomweb, sop))
    assert frame == expected.astype(expected.dtype.newbyteorder("<")).tobytes()

    # OHIF's request: octet-stream, any syntax: the stored codestream, so labelled
    series, sop = instance_of(mixed, "MR_small_RLE.dcm")
    response = raw_client(dicomweb).get(
        f"studies/{study}/series/{series}/instances/{sop}/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    ((headers, data),) = multipart(response)
    assert (
        headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"
    )
    assert data == get_frame(pydicom.dcmread(stored_path(dicomweb, sop)).PixelData, 0)
    response = raw_client(dicomweb).get(
        f"studies/{study}/series/{series}/instances/{sop}/frames/1",
        headers={"Accept": 'multipart/related; type="image/jp2"'},
    )
    assert response.status_code == 406


# --------------------------------------------------------------------------- streaming


def test_a_study_is_streamed_not_buffered(dicomweb: DicomWeb, tmp_path: Path) -> None:
    """24 instances of 2 MiB of pixels each (48 MiB): the server's allocations
    while the whole study is read (the server runs in this process) stay far
    below the study's size."""
    study_uid = str(generate_uid())
    series_uid = str(generate_uid())
    files = []
    rng = np.random.default_rng(1)
    for number in range(24):
        ds = ct_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=number + 1)
        ds.Rows = ds.Columns = 1024
        ds.PixelData = rng.integers(0, 4096, size=1024 * 1024, dtype="<u2").tobytes()
        files.append(write(ds, tmp_path / f"{number}.dcm"))
    summary = import_files(
        dicomweb.api.db, dicomweb.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.ok, summary.describe()
    study_bytes = sum(path.stat().st_size for path in files)
    client = raw_client(dicomweb)
    received = 0
    gc.collect()
    tracemalloc.start()
    try:
        with client.stream("GET", f"studies/{study_uid}") as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers  # sent as it is read
            for chunk in response.iter_raw(64 * 1024):
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received > study_bytes
    # the node writes pieces of multipart.WRITE_BYTES (2 MiB), about six of them
    # alive at the peak (~13 MB here): bounded by that, not by the study
    assert peak < study_bytes / 3, (
        f"peak {peak / 1e6:.1f} MB for a {study_bytes / 1e6:.1f} MB study"
    )
    assert threading.active_count() > 1  # the server lives in this process, so it was measured


def test_an_instance_that_cannot_be_decoded_is_406_alone_and_left_out_of_its_study(
    dicomweb: DicomWeb,
) -> None:
    (study,) = dicomweb.load("undecodable")
    client = raw_client(dicomweb)
    uncompressed = {
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}'
    }
    series, damaged = instance_of(study, DAMAGED)
    response = client.get(
        f"studies/{study.study_instance_uid}/series/{series}/instances/{damaged}",
        headers=uncompressed,
    )
    assert response.status_code == 406 and response.json()["error"]["status"] == 406
    # found only while the study is being sent: left out, the others arrive
    response = client.get(f"studies/{study.study_instance_uid}", headers=uncompressed)
    assert response.status_code == 200
    sent = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID for _, data in multipart(response)}
    assert sent == study.sop_instance_uids - {damaged}
    # as stored, it goes as it is
    as_stored = multipart(client.get(f"studies/{study.study_instance_uid}"))
    assert len(as_stored) == len(study.instances)
