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

pynetdicom creates its DUL provider itself, so the class of each accepted
association's provider is switched to the subclass below; it adds a property
and no state to :class:`~dicom_node.scp.transport.LimitedDUL` (which refuses
over-long PDUs). ``tests/unit/test_polling.py`` fails if a pynetdicom upgrade
removes the attributes this relies on.
"""

from __future__ import annotations

import threading
import time

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicom_node.scp.transport import LimitedDUL

BUSY_DELAY = 0.0001
IDLE_DELAY = 0.001
BUSY_WINDOW = 0.5

_lock = threading.Lock()
_open = 0  # associations open in this process


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


def poll_adaptively(assoc: Association) -> None:
    """On connection open."""
    global _open
    if type(assoc.dul) is DULServiceProvider:
        assoc.dul.__class__ = AdaptiveDUL
        with _lock:
            _open += 1


def connection_closed(assoc: Association) -> None:
    global _open
    if isinstance(assoc.dul, AdaptiveDUL):
        with _lock:
            _open = max(0, _open - 1)


def open_associations() -> int:
    """Connections this process counts as open (each must end in ``connection_closed``)."""
    return _open
