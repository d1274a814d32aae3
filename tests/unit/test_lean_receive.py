"""Guards of scp/lean_receive.py: the pynetdicom behaviour it relies on, and its
C-STORE-RSP encoding, byte for byte pynetdicom's. A pynetdicom upgrade that
changes either fails here instead of the lean path quietly going wrong."""

from __future__ import annotations

import inspect
import queue
import threading
from io import BytesIO
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider

from dicom_node.scp.lean_receive import encode_store_response

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_the_pynetdicom_version_is_one_these_guards_cover() -> None:
    assert pynetdicom.__version__.startswith("3.0."), pynetdicom.__version__


class _Recording(queue.Queue[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[Any, threading.Thread]] = []

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.puts.append((item, threading.current_thread()))
        super().put(item, block, timeout)


def test_a_completed_message_is_queued_by_msg_queue_put_on_the_receiving_thread() -> None:
    """LeanDIMSE takes a C-STORE-RQ out of this put to serve it where it was read."""
    assoc = Association(AE("TEST"), "acceptor")
    recording = _Recording()
    assoc.dimse.msg_queue = recording
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = "1.2.3"
    request.Priority = 0
    request.DataSet = BytesIO(b"\x08\x00\x16\x00\x02\x00\x00\x00AB")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    for pdata in message.encode_msg(1, 16_384):
        assoc.dimse.receive_primitive(pdata)
    assert len(recording.puts) == 1
    (context_id, primitive), thread = recording.puts[0]
    assert context_id == 1 and isinstance(primitive, C_STORE)
    assert primitive.MessageIDBeingRespondedTo is None  # how a request is told apart
    assert thread is threading.current_thread()
    assert assoc.dimse.message is None  # reset before the put returned to its caller
    assert assoc.dimse.get_msg() == (1, primitive)  # get_msg takes from msg_queue


def test_the_other_internals_it_relies_on_are_still_there() -> None:
    assert "self.dul.send_pdu(pdata)" in inspect.getsource(DIMSEServiceProvider.send_msg)
    assert "evt.EVT_DIMSE_SENT" in inspect.getsource(DIMSEServiceProvider.send_msg)
    assert "self.msg_queue.get(" in inspect.getsource(DIMSEServiceProvider.get_msg)
    assoc = Association(AE("TEST"), "acceptor")
    assert callable(assoc._serve_request) and callable(assoc.get_handlers)
    assert hasattr(assoc, "_accepted_cx")
    dul = assoc.dul
    assert callable(dul._idle_timer.restart)
    assert "self._idle_timer.expired" in inspect.getsource(DULServiceProvider.idle_timer_expired)
    # the association thread's network timeout is what a held idle timer keeps off
    assert "self.dul.idle_timer_expired()" in inspect.getsource(Association._run_reactor)
    # after an action the DUL loop looks at the outgoing queue before sleeping
    reactor = inspect.getsource(DULServiceProvider.run_reactor)
    assert "sleep = False" in reactor.split("self.state_machine.do_action(event)")[1]


def _pynetdicom_encoding(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def _response(**values: Any) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = values.pop("message_id", 7)
    primitive.AffectedSOPClassUID = values.pop("sop_class", CT)
    primitive.AffectedSOPInstanceUID = values.pop("sop_instance", "1.2.3.4")
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


@pytest.mark.parametrize(
    "values",
    [
        {"Status": 0x0000},
        {"Status": 0xA700, "ErrorComment": "data set over the limit"},
        {"Status": 0xC000, "ErrorComment": "odd"},
        {"Status": 0xB007, "ErrorComment": "even"},
        {"Status": 0x0000, "sop_instance": "1.2.34", "message_id": 65535},
        {"Status": 0x0000, "sop_class": "1.2.840.10008.5.1.4.1.1.2.1"},
        {"Status": 0xC211},
    ],
)
def test_a_store_response_is_encoded_as_pynetdicom_encodes_it(values: dict[str, Any]) -> None:
    primitive = _response(**values)
    assert encode_store_response(primitive) == _pynetdicom_encoding(primitive)


@pytest.mark.parametrize(
    "values",
    [
        {"Status": 0xA900, "OffendingElement": [0x00100010]},
        {"Status": 0xC000, "ErrorComment": "Müller"},
        {"Status": None},
    ],
)
def test_what_it_does_not_cover_is_left_to_pynetdicom(values: dict[str, Any]) -> None:
    assert encode_store_response(_response(**values)) is None
