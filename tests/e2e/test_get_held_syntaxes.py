"""C-GET: the syntax the node accepts for a requester's storage context follows
what the store holds *now* (scp/get_negotiation.py, db/held_syntaxes.py).

A SOP class held only in JPEG Baseline makes the node accept JPEG Baseline
from a requester offering [JPEG Baseline, Explicit VR Little Endian]; once an
Explicit VR Little Endian instance of the class is stored, the next C-GET
association must get Explicit VR Little Endian, or that instance cannot be
sent. The node once read "held" from a sample cached for 60 s and failed it
(0xA702, "no accepted transfer syntax it can be transcoded to").
"""

from __future__ import annotations

from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
)

from dicom_node.node import Node

SC = "1.2.840.10008.5.1.4.1.1.7"
GET = StudyRootQueryRetrieveInformationModelGet


def _instance(name: str, study_uid: str) -> Dataset:
    """A pydicom test file as a new instance of study ``study_uid`` (its
    transfer syntax and pixel data untouched)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    ds = pydicom.dcmread(str(path))
    ds.PatientID = "HELD1"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _c_store(node: Node, ds: Dataset) -> None:
    """Over a real association, in the instance's own transfer syntax."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(SC, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


def _c_get(node: Node, study_uid: str) -> tuple[int, int, dict[str, str]]:
    """C-GET by a requester offering, like getscu +xy, one SC context with JPEG
    Baseline then Explicit VR Little Endian: (final status, completed,
    SOP Instance UID -> syntax received in)."""
    received: dict[str, str] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    ae = AE(ae_title="GETTER")
    ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(GET)
    ae.add_requested_context(SC, [JPEGBaseline8Bit, ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title="DICOM_NODE",
        ext_neg=[build_role(SC, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        responses = [status for status, _ in assoc.send_c_get(identifier, GET) if status]
    finally:
        assoc.release()
    final = responses[-1]
    return int(final.Status), int(final.get("NumberOfCompletedSuboperations", 0)), received


def test_an_instance_in_another_syntax_stored_since_the_last_c_get_is_delivered(
    make_node: Any,
) -> None:
    node = make_node()
    jpeg_study, native_study = generate_uid(), generate_uid()
    jpeg = _instance("SC_rgb_jpeg_dcmtk.dcm", jpeg_study)
    assert jpeg.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    _c_store(node, jpeg)

    # SC held in JPEG Baseline alone: the requester gets the JPEG as stored
    status, completed, received = _c_get(node, jpeg_study)
    assert (status, completed) == (0x0000, 1)
    assert received == {jpeg.SOPInstanceUID: JPEGBaseline8Bit}

    native = _instance("SC_rgb.dcm", native_study)
    assert native.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    _c_store(node, native)

    # right after: SC is held in two syntaxes; the node accepts Explicit VR
    # Little Endian, which the native instance goes in (it failed with 0xA702)
    status, completed, received = _c_get(node, native_study)
    assert (status, completed) == (0x0000, 1)
    assert received == {native.SOPInstanceUID: ExplicitVRLittleEndian}
    # and the JPEG one is decoded for it now
    status, completed, received = _c_get(node, jpeg_study)
    assert (status, completed) == (0x0000, 1)
    assert received == {jpeg.SOPInstanceUID: ExplicitVRLittleEndian}
