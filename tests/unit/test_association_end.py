"""Every connection ends with its close signalled, once (scp/transport.py).

pynetdicom ends its DUL thread without closing the socket or triggering
EVT_CONN_CLOSE when an exception reaches its reactor: the close handlers (the
adaptive polling's and the metrics' counts of open associations, the pending
connections, the store's clean-up) never ran, and the association stayed
counted for good. These tests use a real connection (a socket pair) and a real
DUL thread, and fail if a pynetdicom upgrade changes what the node relies on.
"""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, StateMachine
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicom_node.scp.polling import AdaptiveDUL, open_associations, poll_adaptively
from dicom_node.scp.transport import LimitedDUL, TolerantStateMachine, tolerate_late_requests
from tests.support import wait_for


def test_pynetdicom_runs_the_dul_reactor_as_the_thread_body_the_node_wraps() -> None:
    assert issubclass(DULServiceProvider, threading.Thread)
    assert DULServiceProvider.run is threading.Thread.run  # so LimitedDUL.run wraps it
    assert "self.run_reactor" in inspect.getsource(DULServiceProvider.__init__)


def test_every_action_leading_to_sta1_signals_the_close() -> None:
    """LimitedDUL takes entering Sta1 for a signalled close."""
    to_sta1 = {name for name, action in ACTIONS.items() if action[2] == "Sta1"}
    assert to_sta1 == {"AE-4", "AR-3", "AR-5", "AA-2", "AA-3", "AA-4", "AA-5"}
    for name in to_sta1:
        source = inspect.getsource(ACTIONS[name][1])
        assert "evt.EVT_CONN_CLOSE" in source, name


def test_pynetdicom_performs_an_action_as_the_node_does_for_a_peer_pdu() -> None:
    """TolerantStateMachine._peer_action reproduces StateMachine.do_action."""
    source = inspect.getsource(StateMachine.do_action)
    assert "TRANSITION_TABLE[(event, self.current_state)]" in source
    assert "action[1](self.dul)" in source
    assert "evt.EVT_FSM_TRANSITION" in source
    assert "self.transition(next_state)" in source
    assert TRANSITION_TABLE[("Evt10", "Sta6")] == "DT-2"
    assert TRANSITION_TABLE[("Evt19", "Sta6")] == "AA-8"  # the invalid PDU's A-ABORT


@pytest.fixture
def acceptor() -> Iterator[tuple[Association, socket.socket, list[Event]]]:
    """An accepted connection as the node's handlers set it up, its DUL thread
    running; the peer's end of the socket; the EVT_CONN_CLOSE events seen."""
    ours, theirs = socket.socketpair()
    closes: list[Event] = []
    assoc = Association(AE("TEST"), "acceptor")
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 11112)
    assoc.bind(evt.EVT_CONN_CLOSE, closes.append)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    poll_adaptively(assoc)  # as scp/handlers.py's handle_connection_opened does
    tolerate_late_requests(assoc)
    assert isinstance(assoc.dul, AdaptiveDUL) and isinstance(assoc.dul, LimitedDUL)
    assert isinstance(assoc.dul.state_machine, TolerantStateMachine)
    assoc.dul.start()
    assert wait_for(lambda: assoc.dul.state_machine.current_state == "Sta2", timeout=5)
    try:
        yield assoc, theirs, closes
    finally:
        assoc.dul.kill_dul()
        theirs.close()
        ours.close()


def _peer_sees_the_end(theirs: socket.socket) -> bool:
    theirs.settimeout(5)
    try:
        while theirs.recv(4096):  # pynetdicom's A-ABORT, then the end
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_dul_thread_ended_by_an_exception_closes_the_connection_and_signals_it(
    acceptor: tuple[Association, socket.socket, list[Event]],
) -> None:
    assoc, theirs, closes = acceptor
    assoc.dul.state_machine.transition("Sta6")  # as if established
    assert open_associations() == 1
    # anything its reactor cannot handle: pynetdicom sends an A-ABORT and ends the
    # thread ("Exception in DUL.run()"), without closing the connection
    assoc.dul.to_provider_queue.put(object())  # type: ignore[arg-type]
    assert wait_for(lambda: not assoc.dul.is_alive(), timeout=5)
    assert len(closes) == 1
    assert closes[0].address == ("127.0.0.1", 11112)  # type: ignore[attr-defined]
    assert _peer_sees_the_end(theirs)
    assert open_associations() == 0


def test_a_connection_whose_reactor_dies_before_its_request_wakes_the_association_thread(
    acceptor: tuple[Association, socket.socket, list[Event]],
) -> None:
    assoc, theirs, closes = acceptor
    assoc.dul.to_provider_queue.put(object())  # type: ignore[arg-type]
    assert wait_for(lambda: not assoc.dul.is_alive(), timeout=5)
    assert len(closes) == 1
    # what the association thread's wait for its request returns on a timeout:
    # it ends at once instead of after the ACSE timeout
    assert assoc.dul.receive_pdu(wait=False) is None
    assert assoc.dul.to_user_queue.empty()
    assert _peer_sees_the_end(theirs)


def test_a_connection_closed_by_the_state_machine_is_not_closed_twice(
    acceptor: tuple[Association, socket.socket, list[Event]],
) -> None:
    assoc, theirs, closes = acceptor
    theirs.shutdown(socket.SHUT_RDWR)  # the peer goes before its request: AA-5
    assert wait_for(lambda: not assoc.dul.is_alive(), timeout=5)
    assert len(closes) == 1
    assert open_associations() == 0
