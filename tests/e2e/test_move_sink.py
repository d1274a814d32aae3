"""Refused C-MOVEs (unknown calling AE, refused identifier) share one loopback
acceptor per process, stopped with the DICOM server (issue 13): each refusal
started and stopped a pynetdicom server of its own (two copies of the code, in
scp/access.py and scp/retrieve.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from dicom_node.node import Node
from dicom_node.scp import move_sink
from tests.support import free_port

MOVE = StudyRootQueryRetrieveInformationModelMove


@pytest.fixture
def backend() -> str:
    """No database behaviour here: SQLite."""
    return "sqlite"


def _move(node: Node, calling: str, identifier: Dataset) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        return [int(s.Status) for s, _ in assoc.send_c_move(identifier, "DEST", MOVE) if s]
    finally:
        assoc.release()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_refused_moves_share_one_sink_that_stops_with_the_server(
    make_node: Callable[..., Node],
) -> None:
    move_sink.stop_sink()  # whatever an earlier test in this process left
    node = make_node(
        peers=f"DEST@127.0.0.1:{free_port()}",
        allowed_calling_aets=[],
        known_ae_required_for=["retrieve"],
    )
    study = Dataset()
    study.QueryRetrieveLevel = "STUDY"
    study.StudyInstanceUID = generate_uid()
    # an unknown calling AE: refused by access control (0xC124)
    assert _move(node, "STRANGER", study) == [0xC124]
    assert move_sink.sink_running()
    address = move_sink.sink_address()
    # a known AE (a configured peer) with a refused identifier: refused by the
    # retrieve handler (0xA900), through the same acceptor
    wildcard = Dataset()
    wildcard.QueryRetrieveLevel = "STUDY"
    wildcard.StudyInstanceUID = "1.2.*"
    for _ in range(3):
        assert _move(node, "DEST", wildcard) == [0xA900]
        assert _move(node, "STRANGER", study) == [0xC124]
    assert move_sink.sink_address() == address
    node.stop()
    assert not move_sink.sink_running()
