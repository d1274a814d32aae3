"""ConnectionGate: the pending limits per process and per peer address, and the
hand-over of a connection's place to its association."""

from __future__ import annotations

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from dicom_node.scp.admission import PER_ADDRESS_SHARE, ConnectionGate


def _gate(max_pending: int = 8) -> ConnectionGate:
    return ConnectionGate(max_associations=2, max_pending=max_pending, request_timeout=5.0)


def test_one_address_gets_a_share_and_all_addresses_the_limit() -> None:
    gate = _gate(8)
    assert gate.max_pending_per_address == 8 // PER_ADDRESS_SHARE == 2
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.1") is None
    refused = gate.admit("10.0.0.1")
    assert refused is not None and "from this address" in refused
    for address in ("10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.4", "10.0.0.4"):
        assert gate.admit(address) is None
    refused = gate.admit("10.0.0.5")
    assert refused is not None and "max_pending_connections" in refused
    assert gate.pending() == 8
    gate.abandon("10.0.0.4")
    assert gate.admit("10.0.0.5") is None


def test_a_small_limit_still_admits_one_connection_per_address() -> None:
    gate = _gate(1)
    assert gate.max_pending_per_address == 1
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.2") is not None


def test_a_connection_place_passes_to_its_association_then_frees_with_it() -> None:
    gate = _gate(8)
    assoc = Association(AE("TEST"), "acceptor")
    assert gate.admit("10.0.0.1") is None
    with gate.serving("10.0.0.1"):
        # pynetdicom's EVT_CONN_OPEN, on the connection's own thread
        gate.connection_opened(Event(assoc, evt.EVT_CONN_OPEN, {"address": ("10.0.0.1", 1)}))
        assert gate.pending() == 1  # counted once, not twice
    assert gate.pending() == 1  # the association holds it until its request
    gate.connection_closed(Event(assoc, evt.EVT_CONN_CLOSE, {}))
    assert gate.pending() == 0


def test_a_connection_that_never_became_an_association_frees_its_place() -> None:
    gate = _gate(8)
    assert gate.admit("10.0.0.1") is None
    with gate.serving("10.0.0.1"):
        pass  # the TLS handshake failed: no association
    assert gate.pending() == 0


def test_an_ended_association_thread_frees_its_place_even_unsignalled() -> None:
    gate = _gate(8)
    assoc = Association(AE("TEST"), "acceptor")
    assert gate.admit("10.0.0.1") is None
    with gate.serving("10.0.0.1"):
        gate.connection_opened(Event(assoc, evt.EVT_CONN_OPEN, {"address": ("10.0.0.1", 1)}))
    assoc.run = lambda: None  # type: ignore[method-assign]  # a thread that ends at once
    assoc.start()
    assoc.join()
    assert gate.pending() == 0  # no EVT_CONN_CLOSE came (a DUL that died)
