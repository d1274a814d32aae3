"""The lean receive path (scp/lean_receive.py) over real associations: the
C-STORE-RSP encoded without pydicom, and every bound of the receive path
holding on it as on pynetdicom's path (``lean_receive = false``): fragments cut
anywhere by TCP, a data set over max_dataset_bytes, an A-ABORT in the middle
of a data set, and other messages on the same association."""

from __future__ import annotations

import shutil
import socket
import struct
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from dicom_node.scp import lean_receive
from dicom_node.scp.dataset_limit import bound_messages, claim_received
from dicom_node.scp.handlers import handle_connection_opened
from dicom_node.scp.store import part10_prefix
from tests.builders import stored_dataset_bytes, stored_files
from tests.conftest import node_settings
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, to_bytes
from tests.support import wait_for

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
LIMIT = 65_536


def _image(side: int, seed: int) -> Dataset:
    ds = ct_dataset(study_uid=generate_uid(), instance_number=seed, pixel_seed=seed)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes((seed + i) % 251 for i in range(256)) * (side * side * 2 // 256)
    return ds


def _dataset_bytes(ds: Dataset) -> bytes:
    data = to_bytes(ds)
    return data[dataset_offset(data) :]


def _associate(port: int) -> Association:
    ae = AE(ae_title="LEAN_SCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def _store_pdus(assoc: Association, ds: Dataset, max_pdu: int) -> list[bytes]:
    """A C-STORE-RQ as P-DATA-TF PDUs of ``max_pdu`` bytes; the first one also
    carries the first data set fragment (a command and its data in one PDU)."""
    context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CT_IMAGE_STORAGE)
    assert context.context_id is not None
    request = C_STORE()
    request.MessageID = 3
    request.AffectedSOPClassUID = CT_IMAGE_STORAGE
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(_dataset_bytes(ds))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdvs = [
        pdv
        for primitive in message.encode_msg(context.context_id, max_pdu)
        for pdv in primitive.presentation_data_value_list
    ]
    assert pdvs[0][1][0] == 0x03 and len(pdvs) > 3  # the command in one fragment, then data
    return [_pdu(pdvs[:2]), *(_pdu([pdv]) for pdv in pdvs[2:])]


def _pdu(pdvs: list[tuple[int, bytes]]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[cid, data] for cid, data in pdvs]  # type: ignore[misc]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _send_awkwardly(sock: socket.socket, stream: bytes) -> None:
    """The bytes in TCP writes cut at awkward places: inside PDU headers (1, 5
    bytes), inside PDV headers, and across PDU boundaries."""
    sizes = [1, 5, 2, 7, 3, 6, 4, 11, 1000, 13, 4097]
    at, k = 0, 0
    while at < len(stream):
        size = sizes[k % len(sizes)]
        sock.sendall(stream[at : at + size])
        at += size
        k += 1
        if k % 7 == 0:
            time.sleep(0.001)  # let the reader see a partial PDU


def _store_raw(assoc: Association, stream: bytes) -> int:
    """Write a C-STORE's PDUs ourselves; its status. The client's own reactor is
    paused meanwhile (as its send_* methods do), so the response is ours to read."""
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    assoc._reactor_checkpoint.clear()
    try:
        assert wait_for(lambda: assoc._is_paused, timeout=5, interval=0.001)
        _send_awkwardly(raw, stream)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert isinstance(response, C_STORE) and response.Status is not None
    return int(response.Status)


@pytest.fixture(params=[True, False], ids=["lean", "pynetdicom"])
def node(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[Node]:
    """The network layer's behaviour, the same on both databases: SQLite only."""
    database = tmp_path / "lean.sqlite3"
    shutil.copyfile(sqlite_template, database)
    node = Node(
        node_settings(
            f"sqlite:///{database}",
            tmp_path / "data",
            lean_receive=request.param,
            max_dataset_bytes=LIMIT,
            max_pdu_size=16_384,
        )
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()
        lean_receive.configure(enabled=True)  # the process-wide default again


def _temp_files(node: Node) -> list[Path]:
    assert node.store is not None
    return sorted(node.store.tmp.iterdir())


def test_fragments_cut_anywhere_by_tcp_are_stored_exactly(node: Node) -> None:
    assoc = _associate(node.dicom_port)
    try:
        ds = _image(side=96, seed=5)  # ~18 KB: several 1 KB fragments
        assert _store_raw(assoc, b"".join(_store_pdus(assoc, ds, max_pdu=1024))) == SUCCESS
        assert assoc.send_c_echo().Status == SUCCESS  # another message, same association
        ds2 = _image(side=16, seed=6)
        assert assoc.send_c_store(ds2).Status == SUCCESS
    finally:
        assoc.release()
    files = stored_files(node)
    assert stored_dataset_bytes(files[ds.SOPInstanceUID][1]) == _dataset_bytes(ds)
    assert ds2.SOPInstanceUID in files
    assert _temp_files(node) == []


def test_a_data_set_over_the_limit_is_refused_and_nothing_is_kept(node: Node) -> None:
    assoc = _associate(node.dicom_port)
    try:
        big = _image(side=256, seed=7)  # 128 KB of pixels, over the 64 KiB limit
        assert assoc.send_c_store(big).Status == OUT_OF_RESOURCES
        assert _temp_files(node) == []
        small = _image(side=16, seed=8)
        assert assoc.send_c_store(small).Status == SUCCESS  # the association goes on
    finally:
        assoc.release()
    files = stored_files(node)
    assert big.SOPInstanceUID not in files and small.SOPInstanceUID in files


def test_an_abort_in_the_middle_of_a_data_set_leaves_nothing_behind(node: Node) -> None:
    assoc = _associate(node.dicom_port)
    ds = _image(side=96, seed=9)
    pdus = _store_pdus(assoc, ds, max_pdu=1024)
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(b"".join(pdus[: len(pdus) // 2]))
    assert node.store is not None
    assert wait_for(lambda: len(_temp_files(node)) == 1, timeout=10)  # being written
    raw.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))  # A-ABORT, service user
    assert wait_for(lambda: _temp_files(node) == [], timeout=10)
    assert wait_for(lambda: node.dicom.active_associations() == 0, timeout=10)  # type: ignore[union-attr]
    assoc.abort()
    assert ds.SOPInstanceUID not in stored_files(node)
    again = _associate(node.dicom_port)  # and the node serves the next one
    try:
        assert again.send_c_store(_image(side=16, seed=10)).Status == SUCCESS
    finally:
        again.release()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "pynetdicom"])
def test_the_store_response_is_encoded_without_pydicom_only_on_the_lean_path(
    tmp_path: Path, lean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's encoding of a C-STORE-RSP (through a pydicom Dataset) is
    what the lean path replaces; the peer gets the same bytes either way."""
    encoded: list[int] = []
    served: list[int] = []
    original = C_STORE_RSP.primitive_to_message

    def counted(self: C_STORE_RSP, primitive: Any) -> None:
        encoded.append(1)
        original(self, primitive)

    monkeypatch.setattr(C_STORE_RSP, "primitive_to_message", counted)

    def opened(event: Event) -> None:
        handle_connection_opened(event)
        bound_messages(event.assoc, limit=LIMIT, scratch_dir=tmp_path, prefix=part10_prefix)

    def store(event: Event) -> int:
        received = claim_received(event)
        assert received is not None and received.kept
        received.discard()
        served.append(1)
        return OUT_OF_RESOURCES if len(served) == 2 else SUCCESS  # one with a status

    scp = AE(ae_title="DICOM_NODE")
    for context in AllStoragePresentationContexts:
        scp.add_supported_context(context.abstract_syntax, ExplicitVRLittleEndian)
    scp.add_supported_context(Verification)
    lean_receive.configure(enabled=lean)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, store)],
    )
    try:
        assoc = _associate(server.server_address[1])
        statuses = []
        try:
            for seed in range(3):
                statuses.append(assoc.send_c_store(_image(side=16, seed=seed)).Status)
            assert assoc.send_c_echo().Status == SUCCESS
        finally:
            assoc.release()
    finally:
        server.shutdown()
        lean_receive.configure(enabled=True)
    assert statuses == [SUCCESS, OUT_OF_RESOURCES, SUCCESS]
    # the client encodes its C-STORE-RQs with C_STORE_RQ; responses only count here
    assert len(encoded) == (0 if lean else 3)
