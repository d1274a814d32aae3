"""Adaptive polling for pynetdicom's per-association receive loop.

pynetdicom reads each association's socket in a loop that sleeps a fixed 1 ms
(``DULServiceProvider._run_loop_delay``) whenever a pass found nothing to do.
During a transfer that sleep sits between every PDU and its successor: measured
here, it costs a single storescu client about a third of its throughput. A
shorter sleep for everyone would make each idle association burn CPU, so the
delay is short only while the peer is sending (a PDU arrived in the last
``BUSY_WINDOW`` seconds, which pynetdicom records by restarting its idle timer)
and back to 1 ms once the association goes quiet. With several associations
open in one process the CPU is the bottleneck and the spinning would take it
from the others (measured: a fifth of the throughput at 4 clients), so the short
delay is kept for an association that is alone in its process.

An association counts as open from the moment it is established (the state
machine enters Sta6, PS3.8 9.2) until its connection is closed (Sta1) or its
DUL thread ends, whichever comes first; both happen on the DUL thread itself,
so no close can be missed or counted twice. A connection that never became an
association (a port probe, a silent or rejected peer) is never counted.

pynetdicom creates its DUL provider itself, so the class of each accepted
association's provider is switched to the subclass below; it adds a property
and no state to :class:`~dicom_node.scp.transport.LimitedDUL` (which refuses
over-long PDUs and closes a connection its DUL thread left open).
``tests/unit/test_polling.py`` fails if a pynetdicom upgrade removes the
attributes this relies on.
"""

from __future__ import annotations

import threading
import time

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicom_node.scp.transport import LimitedDUL, tolerate_late_requests

BUSY_DELAY = 0.0001
IDLE_DELAY = 0.001
BUSY_WINDOW = 0.5

_lock = threading.Lock()
# the DUL providers of the associations open in this process; each is removed
# by its own DUL thread, at the latest as that thread ends
_established: set[AdaptiveDUL] = set()
_open = 0  # len(_established), read without the lock on every pass of every loop


class AdaptiveDUL(LimitedDUL):  # and refuses over-long PDUs
    @property
    def _run_loop_delay(self) -> float:
        # pynetdicom restarts the idle timer whenever a PDU arrives (time.time based)
        if _open > 1:
            return IDLE_DELAY
        last_received = self._idle_timer._start_time
        if last_received is not None and time.time() - last_received < BUSY_WINDOW:
            return BUSY_DELAY
        return IDLE_DELAY

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        """The base class's constructor sets a fixed delay; ours is computed."""

    def state_entered(self, state: str) -> None:
        super().state_entered(state)
        if state == "Sta6":  # established: data transfer
            _count(self, open_=True)
        elif state == "Sta1":  # the connection is closed
            _count(self, open_=False)

    def run(self) -> None:
        try:
            super().run()  # closes the connection if pynetdicom did not
        finally:
            _count(self, open_=False)


def _count(dul: AdaptiveDUL, *, open_: bool) -> None:
    global _open
    with _lock:
        if open_:
            _established.add(dul)
        else:
            _established.discard(dul)
        _open = len(_established)


def poll_adaptively(assoc: Association) -> None:
    """On connection open (before pynetdicom starts the DUL thread)."""
    if type(assoc.dul) is DULServiceProvider:
        assoc.dul.__class__ = AdaptiveDUL
    tolerate_late_requests(assoc)  # its transitions are what open_associations counts


def connection_closed(assoc: Association) -> None:
    """On connection close: no longer counted (already done if the DUL closed it)."""
    if isinstance(assoc.dul, AdaptiveDUL):
        _count(assoc.dul, open_=False)


def open_associations() -> int:
    """Associations established in this process whose connection is still open."""
    return _open
