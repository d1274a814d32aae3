"""The count of open associations (scp/polling.py) against a running node.

An association counts from its establishment to the close of its connection,
however that ends. A CI run once failed four tests of tests/unit/test_polling.py
because one association stayed counted for good in their process: pynetdicom
ends its DUL thread without closing the connection or signalling its close when
an exception reaches its reactor, and a connection counted from its opening,
not its association. Transport only: SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.metrics import REGISTRY
from dicom_node.node import Node
from dicom_node.scp.polling import open_associations
from dicom_node.scp.server import DicomServer
from tests.support import wait_for


@pytest.fixture
def backend() -> str:
    """Transport only: SQLite."""
    return "sqlite"


@pytest.fixture(autouse=True)
def _no_other_association_in_the_process() -> None:
    assert wait_for(lambda: open_associations() == 0, timeout=15), open_associations()


def _associate(node: Node, ae_title: str = "COUNT_SCU") -> Association:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def _active_gauge() -> float:
    value = REGISTRY.get_sample_value("dicom_node_associations_active")
    return 0.0 if value is None else value


def test_a_connection_counts_only_once_it_is_an_association(node: Node) -> None:
    assert isinstance(node.dicom, DicomServer)
    silent = socket.create_connection(("127.0.0.1", node.dicom_port))
    try:
        assert wait_for(lambda: node.dicom.gate.pending() == 1)  # type: ignore[union-attr]
        assert open_associations() == 0  # a port probe, a silent peer: no association
        assoc = _associate(node)
        # counted when the node's DUL enters Sta6, which it does once AE-7 has sent
        # the A-ASSOCIATE-AC this client holds: wait for the count
        assert wait_for(lambda: open_associations() == 1), open_associations()
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert wait_for(lambda: open_associations() == 0, timeout=5)
    finally:
        silent.close()
    assert wait_for(lambda: node.dicom.gate.pending() == 0)  # type: ignore[union-attr]


def _unknown_command(assoc: Association) -> bytes:
    """A P-DATA-TF PDU with one whole command set whose Command Field (0x7777)
    no DIMSE service has (PS3.7 E.1)."""
    command = Dataset()
    command.AffectedSOPClassUID = Verification
    command.CommandField = 0x7777
    command.MessageID = 1
    command.CommandDataSetType = 0x0101  # no data set
    encoded = encode(command, True, True)
    assert encoded is not None
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    pdv = bytes([0x03]) + encoded  # message control header: command, last fragment
    item = struct.pack(">LB", len(pdv) + 1, context_id) + pdv
    return struct.pack(">BBL", 0x04, 0x00, len(item)) + item


def test_a_command_no_service_has_aborts_the_association_which_stops_counting(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom raised in its DUL thread while decoding the command: the thread
    died with two tracebacks, the peer got no A-ABORT, and the association stayed
    counted (here, and in the open-associations gauge) for good."""
    caplog.set_level(logging.INFO)
    gauge_before = _active_gauge()
    assoc = _associate(node, "ODD_SCU")
    assert wait_for(lambda: open_associations() == 1), open_associations()  # Sta6, after the AC
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(_unknown_command(assoc))
    assert wait_for(lambda: assoc.is_aborted, timeout=5), "the node sent no A-ABORT"
    assert wait_for(lambda: open_associations() == 0, timeout=5)
    assert wait_for(lambda: _active_gauge() == gauge_before, timeout=5)
    with contextlib.suppress(Exception):
        assoc.abort()

    def lines() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name.startswith("dicom_node") and "ODD_SCU" in r.getMessage()
        ]

    assert any(
        "P-DATA-TF PDU that could not be processed" in r.getMessage()
        and r.levelno == logging.WARNING
        for r in lines()
    ), [r.getMessage() for r in lines()]
    # EVT_ABORTED's line comes from the node's association thread once it hears of
    # the abort its DUL thread sent; the connection may be closed, and counted
    # closed, before that thread gets to it: wait for the line
    assert wait_for(
        lambda: any("aborted by the node: invalid PDU received" in r.getMessage() for r in lines())
    ), [r.getMessage() for r in lines()]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

    again = _associate(node)  # and the node goes on
    assert again.send_c_echo().Status == 0x0000
    again.release()
