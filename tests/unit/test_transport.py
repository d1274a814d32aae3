"""The PDU length check replaces pynetdicom's ``_read_pdu_data``: these tests fail
on an upgrade that renames what it relies on, instead of the node losing it."""

from __future__ import annotations

import inspect

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, InvalidEventError
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.scp.polling import AdaptiveDUL
from dicom_node.scp.transport import LimitedDUL, TolerantStateMachine, limit_pdu_length


def test_pynetdicom_still_reads_pdus_where_the_check_replaces_it() -> None:
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    # the same events for the same faults as the replacement
    for event in ('"Evt17"', '"Evt19"'):
        assert event in source
    assert "self._decode_pdu(" in source and "self._recv_pdu.put(" in source
    dul = Association(AE("TEST"), "acceptor").dul
    assert hasattr(dul, "event_queue") and hasattr(dul, "_recv_pdu")


def test_every_association_of_the_node_gets_the_check() -> None:
    assert issubclass(AdaptiveDUL, LimitedDUL)  # accepted associations
    assoc = Association(AE("TEST"), "requestor")
    limit_pdu_length(assoc)  # the ones the node requests
    assert type(assoc.dul) is LimitedDUL


def test_the_p_data_limit_is_the_maximum_length_the_node_sent() -> None:
    ae = AE("TEST")
    ae.maximum_pdu_size = 65_536
    acceptor = Association(ae, "acceptor")
    acceptor.acceptor.maximum_length = 65_536
    limit_pdu_length(acceptor)
    requestor = Association(ae, "requestor")
    requestor.requestor.maximum_length = 32_768
    limit_pdu_length(requestor)
    assert acceptor.dul._limit(0x04) == 65_536  # type: ignore[attr-defined]
    assert requestor.dul._limit(0x04) == 32_768  # type: ignore[attr-defined]
    assert acceptor.dul._limit(0x01) == 1_048_576  # type: ignore[attr-defined]
    acceptor.acceptor.maximum_length = 0  # max_pdu_size = 0: no limit
    assert acceptor.dul._limit(0x04) == 0  # type: ignore[attr-defined]


def test_a_response_sent_after_the_abort_is_dropped_not_fatal_to_the_dul() -> None:
    """A handler still running when the DUL aborted (Sta13) or closed (Sta1)
    sends its response: pynetdicom alone raises InvalidEventError in the DUL
    thread, which then ends without closing the connection."""
    for state in ("Sta13", "Sta1"):
        assoc = Association(AE("TEST"), "acceptor")
        limit_pdu_length(assoc)
        assert isinstance(assoc.dul.state_machine, TolerantStateMachine)
        assoc.dul.state_machine.current_state = state
        assoc.dul.to_provider_queue.put(P_DATA())
        assert assoc.dul._process_recv_primitive()
        event = assoc.dul.event_queue.get(block=False)
        assert event == "Evt9"
        assoc.dul.state_machine.do_action(event)  # no InvalidEventError
        assert assoc.dul.to_provider_queue.empty()
        assert assoc.dul.state_machine.current_state == state

    bare = Association(AE("TEST"), "acceptor").dul.state_machine
    bare.current_state = "Sta13"
    with pytest.raises(InvalidEventError):
        bare.do_action("Evt9")  # what the node guards against
    # events of the peer are never dropped: an invalid PDU still gets its A-ABORT
    assert ("Evt19", "Sta13") in TRANSITION_TABLE
