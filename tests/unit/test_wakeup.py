"""The association thread's wakeup (scp/wakeup.py): a message put on the DIMSE
queue ends the reactor's sleep; these tests also fail when pynetdicom changes
what the wakeup relies on."""

from __future__ import annotations

import inspect
import re
import threading
import time

import pynetdicom.association as association_module
import pynetdicom.dimse
import pynetdicom.fsm
import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.scp import wakeup
from dicom_node.scp.reactor import ReactorGate
from dicom_node.scp.wakeup import REACTOR_SLEEP, WakingQueue, install_reactor_wakeup


def test_pynetdicom_still_sleeps_its_reactor_through_the_time_module() -> None:
    source = inspect.getsource(association_module)
    reactor = inspect.getsource(Association._run_reactor)
    assert "time.sleep(0.001)" in reactor
    assert REACTOR_SLEEP == 0.001
    # the reactor's call is the module's only sleep of that length: the wakeup
    # recognises it by its duration
    assert len(re.findall(r"time\.sleep\(0\.001\)", source)) == 1
    assert "import time\n" in source


def test_pynetdicom_still_takes_a_message_on_every_open_pass() -> None:
    # reactor_sleep returns at once while a message is queued: safe only because
    # every pass past the gate takes one (else it would spin)
    reactor = inspect.getsource(Association._run_reactor)
    sleep = reactor.index("time.sleep(0.001)")
    gate = reactor.index("self._reactor_checkpoint.wait()")
    take = reactor.index("self.dimse.get_msg(block=False)")
    assert sleep < gate < take
    assert reactor.count("self.dimse.get_msg(") == 1
    assert "while not self._kill:" in reactor[:sleep]


def test_pynetdicom_still_fills_the_dimse_queue_with_put() -> None:
    dimse = inspect.getsource(pynetdicom.dimse.DIMSEServiceProvider.receive_primitive)
    assert "self.msg_queue.put(" in dimse
    assert "assoc.dimse.msg_queue.put((None, None))" in inspect.getsource(pynetdicom.fsm)
    assert "self.msg_queue.get(" in inspect.getsource(pynetdicom.dimse.DIMSEServiceProvider)


def test_new_associations_get_a_waking_queue_and_the_module_clock() -> None:
    install_reactor_wakeup()
    assoc = Association(AE(), "requestor")
    assert isinstance(assoc.dimse.msg_queue, WakingQueue)
    assert association_module.time.sleep is wakeup.reactor_sleep
    assert association_module.time.monotonic is time.monotonic  # the rest is time's


@pytest.fixture
def long_reactor_sleep(monkeypatch: pytest.MonkeyPatch) -> float:
    # a reactor sleep long enough that returning early can only be the wakeup
    monkeypatch.setattr(wakeup, "REACTOR_SLEEP", 60.0)
    return 60.0


def _sleep_on_association_thread(assoc: Association, seconds: float) -> threading.Event:
    """Runs the reactor's sleep on the association's own thread; set when it returns."""
    returned = threading.Event()

    def run() -> None:
        association_module.time.sleep(seconds)
        returned.set()

    assoc.run = run  # type: ignore[method-assign]
    assoc.daemon = True
    assoc.start()
    return returned


def test_a_message_put_on_the_queue_ends_the_reactor_sleep(long_reactor_sleep: float) -> None:
    install_reactor_wakeup()
    assoc = Association(AE(), "acceptor")
    returned = _sleep_on_association_thread(assoc, long_reactor_sleep)
    assert not returned.wait(0.2)  # asleep: nothing queued
    assoc.dimse.msg_queue.put((1, None))
    assert returned.wait(10), "the reactor slept on with a message waiting"


def test_a_message_already_queued_skips_the_sleep(long_reactor_sleep: float) -> None:
    install_reactor_wakeup()
    assoc = Association(AE(), "acceptor")
    assoc.dimse.msg_queue.put((1, None))
    returned = _sleep_on_association_thread(assoc, long_reactor_sleep)
    assert returned.wait(10), "the reactor slept with a message already waiting"


def test_other_threads_sleep_as_before(long_reactor_sleep: float) -> None:
    install_reactor_wakeup()
    assoc = Association(AE(), "acceptor")
    assoc.dimse.msg_queue.put((1, None))
    started = time.monotonic()
    association_module.time.sleep(0.05)  # not an association's thread: a real sleep
    assert time.monotonic() - started >= 0.05


def test_closing_the_gate_ends_the_reactor_sleep(long_reactor_sleep: float) -> None:
    # a thread that sends on the association (a C-MOVE sub-operation) closes the
    # gate and waits for the reactor to park: it must not wait out the sleep
    install_reactor_wakeup()
    assoc = Association(AE(), "requestor")
    gate = assoc._reactor_checkpoint
    assert isinstance(gate, ReactorGate)
    returned = _sleep_on_association_thread(assoc, long_reactor_sleep)
    assert not returned.wait(0.2)
    gate.clear()  # our stand-in never parks: clear() gives up after its 0.5 s
    assert returned.wait(10), "the reactor slept on behind a closed gate"
    gate.set()
