"""The PDU length check replaces pynetdicom's ``_read_pdu_data``, the state
machine and the reaper complete what pynetdicom does with a connection that
never sends its request: these tests fail on an upgrade that renames what they
rely on, instead of the node losing it."""

from __future__ import annotations

import contextlib
import inspect
import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, P_DATA
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicom_node.scp.polling import AdaptiveDUL
from dicom_node.scp.transport import (
    LimitedDUL,
    TolerantStateMachine,
    expect_request_within,
    limit_pdu_length,
)
from tests.support import wait_for


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


def test_pynetdicom_still_ends_a_connection_without_request_in_sta1_silently() -> None:
    """What TolerantStateMachine completes: a close, an A-ABORT or the ARTIM timer
    before the request take Sta2 to Sta1 and give the association thread nothing,
    while it waits for the request with the ACSE timeout."""
    assert TRANSITION_TABLE[("Evt17", "Sta2")] == "AA-5"  # transport closed
    assert TRANSITION_TABLE[("Evt16", "Sta2")] == "AA-2"  # A-ABORT received
    assert TRANSITION_TABLE[("Evt18", "Sta2")] == "AA-2"  # ARTIM expired
    source = inspect.getsource(Association.run_reactor)
    assert "self.dul.receive_pdu(wait=True, timeout=self.acse_timeout)" in source
    assert "if primitive is None:" in source


@contextlib.contextmanager
def _waiting_acceptor() -> Iterator[Association]:
    """An accepted connection (a real socket pair) in Sta2: no request yet."""
    ours, theirs = socket.socketpair()
    assoc = Association(AE("TEST"), "acceptor")
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 11112)
    limit_pdu_length(assoc)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    assoc.dul.state_machine.do_action(assoc.dul.event_queue.get(block=False))  # Evt5: AE-5
    assert assoc.dul.state_machine.current_state == "Sta2"
    try:
        yield assoc
    finally:
        theirs.close()
        ours.close()


def test_a_connection_ending_before_its_request_wakes_the_association_thread() -> None:
    for event in ("Evt17", "Evt16", "Evt18"):
        with _waiting_acceptor() as assoc:
            if event == "Evt16":
                assoc.dul._recv_pdu.put(A_ABORT_RQ())
            assoc.dul.state_machine.do_action(event)
            assert assoc.dul.state_machine.current_state == "Sta1"
            # what the association thread's wait returns on a timeout: it ends now
            assert assoc.dul.to_user_queue.qsize() == 1, event
            assert assoc.dul.receive_pdu(wait=False) is None

    with _waiting_acceptor() as established:
        established.requestor.primitive = A_ASSOCIATE()  # the thread has its request
        established.dul.state_machine.do_action("Evt17")
        assert established.dul.to_user_queue.empty()


def test_the_reaper_cuts_a_connection_whose_request_is_overdue() -> None:
    """The pre-association timeout: an accepted connection, silent past its
    deadline, is shut down and its association thread ends at once (its ACSE
    timeout is 30 s)."""
    ours, theirs = socket.socketpair()
    assoc = Association(AE("TEST"), "acceptor")
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 11112)
    limit_pdu_length(assoc)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    try:
        assert isinstance(assoc.dul, LimitedDUL) and not assoc.dul.request_read
        assert assoc.acse_timeout == 30
        expect_request_within(assoc, 0.0)
        assoc.start()  # the association thread waits for its request
        assert wait_for(lambda: not assoc.is_alive(), timeout=5)
        theirs.settimeout(5)
        assert theirs.recv(1) == b""  # the node's side was shut down
    finally:
        theirs.close()
        ours.close()
