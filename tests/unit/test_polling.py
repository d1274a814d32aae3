"""The adaptive poll relies on pynetdicom internals: these tests fail on an upgrade
that removes them, instead of the node silently losing its speed or breaking."""

from __future__ import annotations

import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicom_node.scp.polling import (
    BUSY_DELAY,
    IDLE_DELAY,
    AdaptiveDUL,
    connection_closed,
    open_associations,
    poll_adaptively,
)
from tests.support import wait_for


@pytest.fixture(autouse=True)
def _no_other_association_in_the_process() -> None:
    # the count is per process: an association of an earlier test in this worker
    # (a node's peer still closing) would make every delay "shared"
    assert wait_for(lambda: open_associations() == 0, timeout=15), open_associations()


def _association() -> Association:
    return Association(AE("TEST"), "acceptor")


def test_pynetdicom_still_has_the_fixed_delay_and_idle_timer_we_replace() -> None:
    dul = _association().dul
    assert type(dul) is DULServiceProvider
    assert dul.__dict__["_run_loop_delay"] == 0.001
    assert hasattr(dul._idle_timer, "_start_time")


def test_pynetdicom_still_has_the_private_flags_the_stall_reaper_reads() -> None:
    assoc = _association()
    # scp/transport.py: kill() sets _kill; abort() sets _sent_abort
    assert assoc.__dict__["_kill"] is False
    assert assoc.__dict__["_sent_abort"] is False
    assert callable(assoc.dul.idle_timer_expired)


def test_delay_is_short_right_after_a_pdu_and_long_when_quiet() -> None:
    assoc = _association()
    poll_adaptively(assoc)
    dul = assoc.dul
    assert isinstance(dul, AdaptiveDUL)
    assert dul._run_loop_delay == IDLE_DELAY  # idle timer not started: no PDU yet
    dul._idle_timer.start()  # what pynetdicom does when a PDU arrives
    assert dul._run_loop_delay == BUSY_DELAY
    dul._idle_timer._start_time = time.time() - 5
    assert dul._run_loop_delay == IDLE_DELAY
    connection_closed(assoc)


def test_delay_stays_long_while_other_associations_share_the_process() -> None:
    first, second = _association(), _association()
    poll_adaptively(first)
    poll_adaptively(second)
    first.dul.state_machine.transition("Sta6")  # both established (AE-7)
    second.dul.state_machine.transition("Sta6")
    first.dul._idle_timer.start()
    assert first.dul._run_loop_delay == IDLE_DELAY
    connection_closed(second)
    assert first.dul._run_loop_delay == BUSY_DELAY
    connection_closed(first)


def test_only_an_established_association_counts_and_each_close_counts_once() -> None:
    """A connection still waiting for its request (Sta2), or being negotiated
    (Sta3), is no association yet; a close signalled twice (EVT_CONN_CLOSE, then
    the DUL thread's end) must not uncount another association."""
    first, second = _association(), _association()
    poll_adaptively(first)
    poll_adaptively(second)
    first.dul.state_machine.transition("Sta2")  # connection accepted (AE-5)
    first.dul.state_machine.transition("Sta3")  # request received (AE-6)
    assert open_associations() == 0
    first.dul.state_machine.transition("Sta6")
    first.dul.state_machine.transition("Sta6")  # a P-DATA (DT-2): no change
    second.dul.state_machine.transition("Sta6")
    assert open_associations() == 2
    first.dul.state_machine.transition("Sta13")  # aborted, awaiting the close: still open
    assert open_associations() == 2
    first.dul.state_machine.transition("Sta1")  # closed (AR-5)
    connection_closed(first)  # and the close handler
    assert open_associations() == 1
    connection_closed(second)
    assert open_associations() == 0
