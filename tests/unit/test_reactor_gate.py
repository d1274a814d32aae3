"""The reactor gate: once clear() returns, the reactor is parked, not past the gate."""

from __future__ import annotations

import threading
import time

from pynetdicom.association import Association

from dicom_node.scp.reactor import ReactorGate, install_reactor_gate


def test_clear_returns_only_when_the_reactor_is_parked_and_set_lets_it_go() -> None:
    gate = ReactorGate()
    passes = 0
    stop = False

    def reactor() -> None:
        nonlocal passes
        while not stop:
            gate.wait()
            passes += 1  # where pynetdicom's reactor would take a message off the queue
            time.sleep(0.002)

    thread = threading.Thread(target=reactor, daemon=True)
    thread.start()
    for _ in range(50):
        gate.clear()
        seen = passes
        time.sleep(0.01)
        assert passes == seen, "the reactor went past a closed gate"
        gate.set()
        deadline = time.monotonic() + 5
        while passes == seen and time.monotonic() < deadline:
            time.sleep(0.001)  # let it through at least once, however busy the machine
        assert passes > seen, "the reactor stayed parked behind an open gate"
    stop = True
    gate.set()
    thread.join(timeout=5)
    assert passes >= 50


def test_the_reactor_clearing_its_own_gate_does_not_wait_for_itself() -> None:
    gate = ReactorGate()
    gate.wait(timeout=0)  # this thread is now the reactor
    started = time.monotonic()
    gate.clear()
    assert time.monotonic() - started < 0.4  # the safety-net timeout is 0.5 s


def test_new_associations_get_the_gate() -> None:
    install_reactor_gate()
    from pynetdicom import AE

    assoc = Association(AE(), "requestor")
    assert isinstance(assoc._reactor_checkpoint, ReactorGate)
