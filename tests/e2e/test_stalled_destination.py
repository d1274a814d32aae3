"""A C-MOVE destination (or a storage commitment requester) that stalls in the
middle of a PDU must not hang the node's outgoing association (issue 13).

The destination is a plain socket server: it answers the reachability probe,
reads the A-ASSOCIATE-RQ, sends the first bytes of an A-ASSOCIATE-AC and stops
(as /tmp/review-dicom/stall_dest.py did). Before the fix the node's outgoing
association was never watched by the reaper: pynetdicom's ACSE timeout called
``kill()``, which waited for ever for the reader blocked in ``recv()``; the
C-MOVE never answered, the requester's association (and its slot) stayed, and
the node could not stop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from tests.builders import StallingPeer, pydicom_testfile
from tests.support import wait_for

MOVE = StudyRootQueryRetrieveInformationModelMove


@pytest.fixture
def backend() -> str:
    """Transport only: SQLite."""
    return "sqlite"


class StallingDestination:
    """Listens on 127.0.0.1; each connection that sends an A-ASSOCIATE-RQ gets
    6 + 2 bytes of an A-ASSOCIATE-AC announcing 200, then nothing. Closing it
    closes every connection (so a failing run still ends)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.requests = 0
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            header = _read(connection, 6)
            if len(header) < 6:
                return  # the reachability probe
            _read(connection, struct.unpack(">BBL", header)[2])
            with self._lock:
                self.requests += 1
            connection.sendall(struct.pack(">BBL", 0x02, 0, 200) + b"\x00\x01")
            # and stall: the node's reader waits for the other 198 bytes

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.close()


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def destination() -> Iterator[StallingDestination]:
    stalling = StallingDestination()
    yield stalling
    stalling.close()


def _store_one(port: int) -> str:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    return str(ds.StudyInstanceUID)


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


def _assert_cut_and_the_slot_free(
    caplog: pytest.LogCaptureFixture, ae: AE, node: Node, reason: str
) -> None:
    """The node logged that it cut the destination's association for ``reason``,
    and its one association slot (max_associations 1) serves a C-ECHO again."""
    assert wait_for(
        lambda: any(
            "association to STALLER at 127.0.0.1:" in r.getMessage()
            and f"cut: {reason}" in r.getMessage()
            for r in caplog.records
        )
    )
    again = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert again.is_established
    assert again.send_c_echo().Status == 0x0000
    again.release()


def test_a_move_destination_stalling_mid_pdu_ends_the_move_frees_the_slot_and_lets_the_node_stop(
    make_node: Callable[..., Node],
    destination: StallingDestination,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dicom_node.scp")
    node = make_node(
        peers=f"STALLER@127.0.0.1:{destination.port}",
        acse_timeout_seconds=2,
        dimse_timeout_seconds=2,
        network_timeout_seconds=3,
        max_associations=1,
    )
    study = _store_one(node.dicom_port)

    ae = AE(ae_title="REQUESTER")
    ae.add_requested_context(MOVE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study

    def move() -> list[int]:
        return [int(status.Status) for status, _ in assoc.send_c_move(identifier, "STALLER", MOVE)]

    mover, statuses = _in_thread(move)
    mover.join(timeout=30)  # ACSE timeout 2 s + the reaper's pass
    assert not mover.is_alive(), "the C-MOVE never ended"
    assert destination.requests == 1
    # the association with the destination failed: a known destination the node
    # could not use, every sub-operation failed (0xA702, not 0xA801)
    assert statuses == [[0xA702]]
    assoc.release()
    _assert_cut_and_the_slot_free(caplog, ae, node, "the peer stopped in the middle of a PDU")

    # and the node stops promptly (the fixture's stop() is then a no-op)
    stopper, _ = _in_thread(node.stop)
    started = time.monotonic()
    stopper.join(timeout=20)
    assert not stopper.is_alive(), "the node did not stop"
    assert time.monotonic() - started < 20


# --------------------------------------------------- a destination that stops reading

# far more than the socket buffers of both ends hold (32 MB of pixel data)
ROWS = 4096


@pytest.fixture
def reader_staller() -> Iterator[StallingPeer]:
    stalling = StallingPeer()
    yield stalling
    stalling.close()  # the peer reads again: a failing run still ends


def _import_big_instance(node: Node, tmp_path: Path) -> str:
    """One CT instance of 32 MB of pixel data, imported into the node: its study's UID."""
    assert node.db is not None and node.store is not None
    ds = pydicom.dcmread(pydicom_testfile("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = ROWS
    ds.PixelData = bytes(ROWS * ROWS * 2)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    summary = import_files(
        node.db, node.store, [path], policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.ok, summary.describe()
    return str(ds.StudyInstanceUID)


def test_a_move_destination_that_stops_reading_ends_the_move_and_frees_the_slot(
    make_node: Callable[..., Node],
    reader_staller: StallingPeer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The destination accepts the association, then stops reading at the first
    P-DATA-TF: the node's DUL thread blocks in ``send()``. pynetdicom's DIMSE
    timeout aborts the sub-operation, and its ``kill()`` waits for that thread.
    Before the fix the reaper had stopped watching the association (its own
    thread ends on ``kill()``): the C-MOVE never answered and held the slot."""
    caplog.set_level(logging.WARNING, logger="dicom_node.scp")
    node = make_node(
        peers=f"STALLER@127.0.0.1:{reader_staller.port}",
        acse_timeout_seconds=2,
        dimse_timeout_seconds=2,
        network_timeout_seconds=3,
        max_associations=1,
    )
    study = _import_big_instance(node, tmp_path)

    ae = AE(ae_title="REQUESTER")
    ae.add_requested_context(MOVE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study

    def move() -> list[Dataset]:
        return [status for status, _ in assoc.send_c_move(identifier, "STALLER", MOVE)]

    started = time.monotonic()
    mover, answers = _in_thread(move)
    mover.join(timeout=30)  # DIMSE timeout 2 s + the reaper's pass
    assert not mover.is_alive(), "the C-MOVE never ended"
    assert reader_staller.stalled.is_set()
    assert time.monotonic() - started < 30
    [responses] = answers
    assert isinstance(responses, list)
    final = responses[-1]
    # the one sub-operation failed: a failure with the counts (PS3.4 C.4.2.1.4)
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0xA702, 0)
    assert final.NumberOfFailedSuboperations == 1
    assoc.release()
    _assert_cut_and_the_slot_free(caplog, ae, node, "the peer stopped reading what the node sends")
