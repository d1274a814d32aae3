"""C-MOVE and C-GET of compressed and mixed-syntax studies to peers that accept
some syntaxes and not others (issue 14): per-syntax contexts, transcoding, the
honest final status and Export audit, the PATIENT level on the Study Root.

The peers are pynetdicom acceptors and requesters over real loopback
associations; the studies are pydicom's own compressed test files (and
pydicom-data's), never downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.node import Node
from tests.builders import (
    UNCOMPRESSED,
    Destination,
    Received,
    compressed_study,
    export_audits,
    import_study,
    pydicom_testfile,
    retrieve_identifier,
    stored_dataset_bytes,
    stored_files,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"

# (file, lossy original): every compressed syntax pydicom's codecs decode here
COMPRESSED = [
    ("MR_small_jp2klossless.dcm", False),  # JPEG 2000 lossless
    ("US1_J2KR.dcm", False),  # JPEG 2000 lossless, YBR_RCT
    ("US1_J2KI.dcm", True),  # JPEG 2000 lossy, YBR_ICT
    ("JPEG2000.dcm", True),  # JPEG 2000 lossy, monochrome
    ("SC_rgb_jpeg_dcmtk.dcm", True),  # JPEG Baseline, YBR_FULL
    ("MR_small_RLE.dcm", False),  # RLE
    ("SC_rgb_rle_2frame.dcm", False),  # RLE, RGB, 2 frames
    ("MR_small_jpeg_ls_lossless.dcm", False),  # JPEG-LS lossless
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", False),  # JPEG Lossless SV1 (pydicom-data)
]
# native: explicit VR, deflated (inflated on the way), big endian (transcoded)
UNCOMPRESSED_FILES = ["MR_small.dcm", "CT_small.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm"]


@pytest.fixture
def destinations() -> Iterator[list[Destination]]:
    started: list[Destination] = []
    yield started
    for destination in started:
        destination.stop()


@dataclass
class Final:
    status: int
    completed: int
    failed: int
    warning: int
    failed_uids: list[str]
    comment: str


def _final(responses: list[tuple[Dataset, Dataset | None]]) -> Final:
    status, identifier = responses[-1]
    failed_uids: list[str] = []
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        failed_uids = [value] if isinstance(value, str) else [str(v) for v in value]
    return Final(
        int(status.Status),
        int(status.get("NumberOfCompletedSuboperations", 0)),
        int(status.get("NumberOfFailedSuboperations", 0)),
        int(status.get("NumberOfWarningSuboperations", 0)),
        [uid for uid in failed_uids if uid],
        str(status.get("ErrorComment", "")),
    )


def _move(
    node: Node,
    identifier: Dataset,
    destination: str = "DEST",
    model: Any = StudyRootQueryRetrieveInformationModelMove,
) -> Final:
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(model)
    ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        responses = [(s, i) for s, i in assoc.send_c_move(identifier, destination, model) if s]
    finally:
        assoc.release()
    return _final(responses)


def _pixels(dataset: Dataset) -> np.ndarray[Any, Any]:
    return np.asarray(dataset.pixel_array, dtype=np.int64)


def _assert_pixels(received: Dataset, stored: Path, *, lossy: bool) -> None:
    """Pixel-equal to pydicom's own decoding of the stored file (lossless), within
    2 per sample (lossy); a lossy original stays marked lossy."""
    original = pydicom.dcmread(stored)
    got, want = _pixels(received), _pixels(original)
    assert got.shape == want.shape
    if lossy:
        assert int(np.abs(got - want).max()) <= 2
        assert received.LossyImageCompression == "01"
    else:
        assert np.array_equal(got, want)


# --------------------------------------------------------------------------- C-MOVE


@pytest.mark.timeout(300)
def test_a_destination_accepting_only_uncompressed_gets_every_instance_decoded(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    destination = Destination(UNCOMPRESSED)
    destinations.append(destination)
    names = [name for name, _ in COMPRESSED] + UNCOMPRESSED_FILES
    lossy = dict(COMPRESSED)
    study_uid, by_uid = compressed_study(tmp_path, names)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed, final.failed) == (0x0000, len(names), 0)
    assert set(destination.received) == set(by_uid)
    stored = stored_files(node)
    for uid, received in destination.received.items():
        assert received.transfer_syntax in UNCOMPRESSED
        assert not UID(received.dataset.file_meta.TransferSyntaxUID).is_compressed
        _assert_pixels(received.dataset, stored[uid][1], lossy=lossy.get(by_uid[uid], False))
    (export,) = export_audits(node)
    assert export.outcome == "success"
    counts = export.details["counts"]
    assert counts["completed"] == counts["offered"] == len(names)
    assert counts["transcoded"] == len(COMPRESSED) + 1  # and the big endian one
    assert counts["failed"] == 0 and export.details["failed_instances"] == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # ~110 MB decoded: once
def test_a_multi_frame_jpeg_baseline_reaches_an_uncompressed_destination(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    destination = Destination(UNCOMPRESSED)
    destinations.append(destination)
    study_uid, _by_uid = compressed_study(tmp_path, ["color3d_jpeg_baseline.dcm"])  # 120 frames
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed) == (0x0000, 1)
    ((uid, received),) = destination.received.items()
    assert received.transfer_syntax in UNCOMPRESSED
    assert received.dataset.LossyImageCompression == "01"  # still marked lossy
    assert int(received.dataset.NumberOfFrames) == 120
    frames = received.dataset.pixel_array
    path = stored_files(node)[uid][1]
    for index in (0, 59, 119):  # pydicom's decoding of those frames of the stored file
        want = np.asarray(pixel_array(path, index=index), dtype=np.int64)
        assert int(np.abs(np.asarray(frames[index], dtype=np.int64) - want).max()) <= 2


def test_a_destination_accepting_the_stored_syntaxes_gets_them_byte_identical(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    # pynetdicom's own preference: Implicit VR Little Endian first, every syntax
    # accepted. Each stored syntax has a context of its own and keeps its bytes,
    # the uncompressed ones included (the fallback got Implicit VR here).
    destination = Destination(None)
    destinations.append(destination)
    compressed = [name for name, _ in COMPRESSED]
    native = ["MR_small.dcm", "CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, [*compressed, *native])
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed) == (0x0000, len(by_uid))
    stored = stored_files(node)
    for uid, received in destination.received.items():
        syntax, path = stored[uid]
        assert received.transfer_syntax == syntax
        assert received.raw == stored_dataset_bytes(path)  # the data set, unchanged
    (export,) = export_audits(node)
    counts = export.details["counts"]
    assert (counts["sent_as_stored"], counts["converted"]) == (len(by_uid), 0)
    assert counts["transcoded"] == 0


def test_a_mixed_study_reaches_a_destination_that_prefers_jpeg_2000(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    """storescp +xa style: JPEG 2000 first in the destination's own list. One
    context per SOP class listing every syntax got JPEG 2000 and lost the
    uncompressed MR instances; a context per stored syntax loses nothing."""
    destination = Destination([JPEG2000Lossless, JPEG2000, *UNCOMPRESSED])
    destinations.append(destination)
    names = ["MR_small_jp2klossless.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "US1_J2KI.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, names)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed, final.failed) == (0x0000, len(names), 0)
    stored = stored_files(node)
    how = {by_uid[uid]: received.transfer_syntax for uid, received in destination.received.items()}
    assert how == {
        "MR_small_jp2klossless.dcm": JPEG2000Lossless,  # as stored, byte for byte
        "US1_J2KI.dcm": JPEG2000,
        "MR_small.dcm": ExplicitVRLittleEndian,  # the uncompressed fallback
        "MR_small_RLE.dcm": ExplicitVRLittleEndian,  # RLE not accepted: decoded
    }
    for uid, received in destination.received.items():
        if received.transfer_syntax == stored[uid][0]:
            assert received.raw == stored_dataset_bytes(stored[uid][1])
    _assert_pixels(
        next(r.dataset for u, r in destination.received.items() if by_uid[u] == "MR_small_RLE.dcm"),
        next(stored[u][1] for u in by_uid if by_uid[u] == "MR_small_RLE.dcm"),
        lossy=False,
    )


def test_a_destination_taking_only_jpeg_2000_lossless_gets_native_instances_encoded(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    destination = Destination(UNCOMPRESSED, per_class={MR: [JPEG2000Lossless]})
    destinations.append(destination)
    # one stored as JPEG 2000 lossless: the node proposes that syntax for MR
    names = ["MR_small_jp2klossless.dcm", "MR_small_implicit.dcm", "MR_small.dcm"]
    names.append("MR_small_RLE.dcm")
    study_uid, _by_uid = compressed_study(tmp_path, names)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed) == (0x0000, 4)
    stored = stored_files(node)
    for uid, received in destination.received.items():
        assert received.transfer_syntax == JPEG2000Lossless
        _assert_pixels(received.dataset, stored[uid][1], lossy=False)


def test_a_destination_refusing_some_instances_gets_b000_and_the_audit_says_so(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    names = ["MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, names)
    refused = {uid for uid, name in by_uid.items() if name in {"CT_small.dcm", "MR_small_RLE.dcm"}}
    destination = Destination(UNCOMPRESSED, refuse=refused)
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed, final.failed, final.warning) == (0xB000, 2, 2, 0)
    assert set(final.failed_uids) == refused
    (export,) = export_audits(node)
    assert export.outcome == "minor_failure"
    counts = export.details["counts"]
    assert (counts["completed"], counts["failed"], counts["offered"]) == (2, 2, 4)
    assert counts["transcoded"] == 2  # the RLE ones, one of them refused
    assert {(f["sop_instance_uid"], f["reason"]) for f in export.details["failed_instances"]} == {
        (uid, "destination answered 0xA700") for uid in refused
    }


def test_instances_the_node_cannot_send_are_listed_with_the_destination_refusals(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    """Transcoding switched off: the compressed instances fail on the node's
    side (never offered), the uncompressed ones go; the destination refuses
    one of those. The final response lists all three, and counts them."""
    names = ["MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, names)
    ct = next(uid for uid, name in by_uid.items() if name == "CT_small.dcm")
    destination = Destination(UNCOMPRESSED, refuse={ct})
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}", transcode_on_retrieve=False)
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    compressed = {uid for uid, name in by_uid.items() if name.startswith("MR_small_")}
    assert (final.status, final.completed, final.failed) == (0xB000, 1, 3)
    assert set(final.failed_uids) == compressed | {ct}
    assert final.comment.startswith("3 failed")  # the reasons are in the audit
    assert set(destination.received) == {uid for uid in by_uid if uid not in compressed}
    (export,) = export_audits(node)
    reasons = {f["sop_instance_uid"]: f["reason"] for f in export.details["failed_instances"]}
    assert reasons == {
        **dict.fromkeys(compressed, "stored transfer syntax not accepted, transcoding off"),
        ct: "destination answered 0xA700",
    }
    assert export.outcome == "minor_failure"


def test_nothing_delivered_is_a702_and_a_serious_failure(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    names = ["MR_small.dcm", "MR_small_RLE.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, names)
    destination = Destination(UNCOMPRESSED)
    destination.refuse_all = True
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}", transcode_on_retrieve=False)
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    # one refused by the destination, one the node could not send
    assert (final.status, final.completed, final.failed) == (0xA702, 0, 2)
    assert set(final.failed_uids) == set(by_uid)
    (export,) = export_audits(node)
    assert export.outcome == "serious_failure"
    assert export.details["counts"]["failed"] == 2


def _undecodable(tmp_path: Path, study_uid: str, syntax: str, name: str) -> str:
    """An instance of the study whose pixel data claims ``syntax`` and holds a
    stream no decoder reads: its SOP Instance UID."""
    ds = pydicom.dcmread(pydicom_testfile("MR_small.dcm"))
    ds.PatientID = "TX1"
    ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # a J2K marker, then junk
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / f"in-{study_uid}" / name, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_an_instance_that_cannot_be_decoded_fails_with_its_reason_the_rest_go(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    study_uid, by_uid = compressed_study(tmp_path, ["MR_small_RLE.dcm"])
    no_decoder = _undecodable(tmp_path, study_uid, MPEG2MPML, "mpeg2.dcm")
    damaged = _undecodable(tmp_path, study_uid, JPEG2000Lossless, "damaged.dcm")
    destination = Destination(UNCOMPRESSED)
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid))

    assert (final.status, final.completed, final.failed) == (0xB000, 1, 2)
    assert set(final.failed_uids) == {no_decoder, damaged}
    assert set(destination.received) == set(by_uid)
    (export,) = export_audits(node)
    reasons = {f["sop_instance_uid"]: f["reason"] for f in export.details["failed_instances"]}
    assert reasons[no_decoder] == f"no decoder for {MPEG2MPML}"
    assert reasons[damaged]  # the transcoder's reason, whatever the codec said
    assert export.outcome == "minor_failure"


# --------------------------------------------------------------------------- PATIENT level


def _two_studies_of_one_patient(tmp_path: Path) -> set[str]:
    _, first = compressed_study(
        tmp_path, ["MR_small.dcm", "MR_small_RLE.dcm"], patient_id="PAT-LVL"
    )
    _, second = compressed_study(tmp_path, ["CT_small.dcm"], patient_id="PAT-LVL")
    compressed_study(tmp_path, ["MR_small_jp2klossless.dcm"], patient_id="SOMEONE-ELSE")
    return set(first) | set(second)


def test_a_patient_level_move_on_the_study_root_moves_every_study_of_the_patient(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    """As Orthanc sends it for a patient it found."""
    destination = Destination(UNCOMPRESSED)
    destinations.append(destination)
    wanted = _two_studies_of_one_patient(tmp_path)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)

    final = _move(node, retrieve_identifier("PATIENT", PatientID="PAT-LVL"))
    assert (final.status, final.completed) == (0x0000, 3)
    assert set(destination.received) == wanted

    # without a PatientID: refused as before, nothing sent
    assert _move(node, retrieve_identifier("PATIENT", PatientID="")).status == 0xA900
    assert _move(node, retrieve_identifier("PATIENT")).status == 0xA900
    assert len(destination.received) == 3
    exports = export_audits(node)
    assert exports[0].target_class == "PATIENT" and exports[0].outcome == "success"
    assert [e.reason for e in exports[1:]] == ["a PATIENT retrieve needs PatientID"] * 2


def test_the_patient_level_on_the_study_root_can_be_refused(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    destination = Destination(UNCOMPRESSED)
    destinations.append(destination)
    _two_studies_of_one_patient(tmp_path)
    node = make_node(
        peers=f"DEST@127.0.0.1:{destination.port}", accept_patient_level_on_study_root=False
    )
    import_study(node, tmp_path)
    assert _move(node, retrieve_identifier("PATIENT", PatientID="PAT-LVL")).status == 0xA900
    # the Patient Root model has that level: unaffected
    patient_root = PatientRootQueryRetrieveInformationModelMove
    assert (
        _move(node, retrieve_identifier("PATIENT", PatientID="PAT-LVL"), model=patient_root).status
        == 0
    )
    assert len(destination.received) == 3


# --------------------------------------------------------------------------- C-GET


def _get(
    node: Node, identifier: Dataset, offers: dict[str, list[str]]
) -> tuple[Final, dict[str, Received]]:
    """C-GET by a requester that offers ``offers`` (SOP class -> syntaxes, in
    one context each) with the SCP role."""
    received: dict[str, Received] = {}

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received[str(dataset.SOPInstanceUID)] = Received(
            str(event.context.transfer_syntax), event.request.DataSet.getvalue(), dataset
        )
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntaxes in offers.items():
        ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in offers]
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title="DICOM_NODE",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = [
            (s, i)
            for s, i in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
            if s
        ]
    finally:
        assoc.release()
    return _final(responses), received


@pytest.mark.parametrize("stored", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm"])
def test_c_get_gets_the_stored_lossy_syntax_when_offered_next_to_explicit_little_endian(
    make_node: Any, tmp_path: Path, stored: str
) -> None:
    """getscu +xy / +xw: one context per SOP class, the compressed syntax and
    Explicit VR Little Endian; the node used to accept Explicit VR Little
    Endian (its order for C-STORE to it) and could not send the stored JPEG."""
    study_uid, _by_uid = compressed_study(tmp_path, [stored])
    node = make_node()
    import_study(node, tmp_path)
    syntax = JPEGBaseline8Bit if stored.startswith("SC_") else JPEG2000

    final, received = _get(
        node,
        retrieve_identifier("STUDY", StudyInstanceUID=study_uid),
        {SC: [syntax, *UNCOMPRESSED]},
    )

    assert (final.status, final.completed) == (0x0000, 1)
    ((uid, got),) = received.items()
    assert got.transfer_syntax == syntax
    assert got.raw == stored_dataset_bytes(stored_files(node)[uid][1])
    (export,) = export_audits(node)
    assert export.details["counts"]["sent_as_stored"] == 1


def test_c_get_offering_only_uncompressed_gets_transcoded_instances(
    make_node: Any, tmp_path: Path
) -> None:
    names = ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small.dcm"]
    study_uid, _by_uid = compressed_study(tmp_path, names)
    node = make_node()
    import_study(node, tmp_path)

    final, received = _get(
        node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid), {MR: list(UNCOMPRESSED)}
    )

    assert (final.status, final.completed) == (0x0000, 3)
    stored = stored_files(node)
    for uid, got in received.items():
        assert got.transfer_syntax == ExplicitVRLittleEndian
        _assert_pixels(got.dataset, stored[uid][1], lossy=False)
    (export,) = export_audits(node)
    assert export.details["counts"]["transcoded"] == 2


def test_c_get_of_a_sop_class_the_requester_did_not_offer_fails_it_explicitly(
    make_node: Any, tmp_path: Path
) -> None:
    study_uid, by_uid = compressed_study(tmp_path, ["MR_small.dcm", "CT_small.dcm"])
    node = make_node()
    import_study(node, tmp_path)

    final, _received = _get(
        node, retrieve_identifier("STUDY", StudyInstanceUID=study_uid), {MR: list(UNCOMPRESSED)}
    )

    ct = next(uid for uid, name in by_uid.items() if name == "CT_small.dcm")
    assert (final.status, final.completed, final.failed, final.failed_uids) == (
        0xB000,
        1,
        1,
        [ct],
    )
    (export,) = export_audits(node)
    assert export.details["failed_instances"] == [
        {
            "sop_instance_uid": ct,
            "reason": "no presentation context accepted for its SOP class",
        }
    ]


def test_only_a_c_get_requester_has_its_storage_syntax_chosen_by_what_is_stored(
    make_node: Any, tmp_path: Path
) -> None:
    """A C-STORE requester (no SCP role) still gets the node's order for what it
    sends (uncompressed before lossy: no modality made to compress lossily),
    and so does one that keeps the SCU role next to the SCP role."""
    compressed_study(tmp_path, ["SC_rgb_jpeg_dcmtk.dcm"])  # the store holds SC as JPEG Baseline
    node = make_node()
    import_study(node, tmp_path)

    def accepted(*roles: Any) -> str:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(SC, [JPEGBaseline8Bit, ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE", ext_neg=roles)
        assert assoc.is_established
        try:
            return str(assoc.accepted_contexts[0].transfer_syntax[0])
        finally:
            assoc.release()

    assert accepted() == ExplicitVRLittleEndian
    assert accepted(build_role(SC, scu_role=True, scp_role=True)) == ExplicitVRLittleEndian
    assert accepted(build_role(SC, scp_role=True)) == JPEGBaseline8Bit


def test_a_cancelled_c_get_stops_and_is_audited_as_cancelled(
    make_node: Any, tmp_path: Path
) -> None:
    """C-CANCEL still works: the requester cancels while storing the first
    instance; the node answers Cancel (0xFE00) before the next one."""
    study_uid, _by_uid = compressed_study(
        tmp_path, ["MR_small.dcm", "MR_small_RLE.dcm", "CT_small.dcm"]
    )
    node = make_node()
    import_study(node, tmp_path)
    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (MR, "1.2.840.10008.5.1.4.1.1.2"):
        ae.add_requested_context(sop_class, UNCOMPRESSED)
    received: list[str] = []

    def on_store(event: Any) -> int:
        if not received:  # sent before this C-STORE's response: seen first
            event.assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title="DICOM_NODE",
        ext_neg=[
            build_role(MR, scp_role=True),
            build_role("1.2.840.10008.5.1.4.1.1.2", scp_role=True),
        ],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = [
            (s, i)
            for s, i in assoc.send_c_get(
                retrieve_identifier("STUDY", StudyInstanceUID=study_uid),
                StudyRootQueryRetrieveInformationModelGet,
                msg_id=1,
            )
            if s
        ]
    finally:
        assoc.release()
    final = _final(responses)
    assert final.status == 0xFE00
    assert len(received) == final.completed == 1
    (export,) = export_audits(node)
    counts = export.details["counts"]
    assert (counts["completed"], counts["cancelled"], counts["failed"]) == (1, 2, 0)
    assert export.outcome == "success"  # nothing failed: the requester stopped it


def test_a_patient_level_c_get_on_the_study_root_gets_every_study_of_the_patient(
    make_node: Any, tmp_path: Path
) -> None:
    wanted = _two_studies_of_one_patient(tmp_path)
    node = make_node()
    import_study(node, tmp_path)
    offers = {MR: UNCOMPRESSED, "1.2.840.10008.5.1.4.1.1.2": UNCOMPRESSED}

    final, received = _get(node, retrieve_identifier("PATIENT", PatientID="PAT-LVL"), offers)

    assert (final.status, final.completed) == (0x0000, 3)
    assert set(received) == wanted
    final, received = _get(node, retrieve_identifier("PATIENT"), offers)
    assert (final.status, received) == (0xA900, {})


def test_with_unknown_sop_classes_accepted_the_c_get_preference_still_holds(
    make_node: Any, tmp_path: Path
) -> None:
    """pynetdicom's unrestricted storage takes a context's first proposed syntax,
    whatever the node's list: the proposed list is put in the node's order."""
    study_uid, _ = compressed_study(tmp_path, ["SC_rgb_jpeg_dcmtk.dcm"])
    node = make_node(accept_unknown_sop_classes=True)
    import_study(node, tmp_path)

    final, received = _get(
        node,
        retrieve_identifier("STUDY", StudyInstanceUID=study_uid),
        {SC: [ExplicitVRLittleEndian, JPEGBaseline8Bit]},  # Explicit first this time
    )

    assert (final.status, final.completed) == (0x0000, 1)
    ((uid, got),) = received.items()
    assert got.transfer_syntax == JPEGBaseline8Bit
    assert got.raw == stored_dataset_bytes(stored_files(node)[uid][1])
