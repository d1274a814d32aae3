"""The association thread woken by the message it waits for.

pynetdicom's association thread (``Association._run_reactor``) sleeps a fixed
1 ms on every pass of its loop, then looks for a DIMSE message the DUL thread
has decoded and queued. So every request (each C-STORE, each C-FIND) waits on
average half that sleep, and on a busy machine the whole of it (a 1 ms sleep
takes 1.05-1.1 ms), before its handler runs: measured at 0.35 ms of a
one-answer C-FIND's ~6 ms (docs/performance.md), about as much per C-STORE.

Here that one sleep becomes a wait on an ``Event`` that the association's
DIMSE message queue sets whenever something is put on it (a decoded message,
or pynetdicom's own end-of-association marker). A pass then runs as soon as a
message arrives, and still at least every 1 ms otherwise, so the release,
abort, DUL-thread and idle-timer checks that follow it keep their old pace.
Nothing else in the loop changes: the same pass, in the same order, only
without waiting out a sleep when there is work. A thread that wants the
reactor parked (``send_c_store`` on one of the node's own associations, each
C-MOVE or C-GET sub-operation) closes its gate (scp/reactor.py), which wakes
it too: the reactor parks at once instead of after its sleep. Every other ``time.sleep`` in
``pynetdicom.association`` (the send loops' 0.1 ms waits for the reactor to
pause, the requestor's waits) sleeps as before: the reactor's is recognised by
its duration, ``REACTOR_SLEEP``, on an association's own thread.

``tests/unit/test_wakeup.py`` fails when pynetdicom changes what this relies
on: the reactor's ``time.sleep(0.001)`` through the module's ``time`` name (and
no other call of that duration there), and the DIMSE provider's ``msg_queue``
filled by ``put``.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Any

import pynetdicom.association as association_module
from pynetdicom.association import Association

from dicom_node.scp.reactor import ReactorGate, install_reactor_gate

# the fixed sleep of Association._run_reactor, its only sleep of that length
REACTOR_SLEEP = 0.001
# each association's wakeup, looked up by its thread (an Association is its thread)
_wakeups: weakref.WeakKeyDictionary[threading.Thread, threading.Event] = weakref.WeakKeyDictionary()


class WakingQueue(queue.Queue[Any]):
    """The DIMSE message queue: a ``put`` also wakes the association's reactor."""

    def __init__(self, wakeup: threading.Event) -> None:
        super().__init__()
        self.wakeup = wakeup

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wakeup.set()


def reactor_sleep(seconds: float) -> None:
    """``time.sleep`` as ``pynetdicom.association`` sees it (see the module docstring)."""
    thread = threading.current_thread()
    wakeup = _wakeups.get(thread) if seconds == REACTOR_SLEEP else None
    if wakeup is None:
        time.sleep(seconds)
        return
    # Cleared before looking at the queue: a message put after the look sets it
    # again, so the wait below cannot miss it.
    wakeup.clear()
    assert isinstance(thread, Association)
    if thread.dimse.msg_queue.qsize() or not thread._reactor_checkpoint.is_set():
        return  # work is waiting, or a sender waits for the reactor to park: go on now
    wakeup.wait(seconds)


class _AssociationClock:
    """Stands in for the ``time`` module inside ``pynetdicom.association``: its
    ``sleep`` is ``reactor_sleep``, everything else is ``time``'s own."""

    sleep = staticmethod(reactor_sleep)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_installed = False


def install_reactor_wakeup() -> None:
    """Wake every Association created from now on when a message arrives."""
    global _installed
    if _installed:
        return
    install_reactor_gate()  # first: each new association's gate is then there to link
    original = Association.__init__

    def init(self: Association, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        wakeup = threading.Event()
        self.dimse.msg_queue = WakingQueue(wakeup)
        _wakeups[self] = wakeup
        if isinstance(self._reactor_checkpoint, ReactorGate):
            self._reactor_checkpoint.wake = wakeup.set

    Association.__init__ = init  # type: ignore[method-assign]
    association_module.time = _AssociationClock()  # type: ignore[attr-defined,assignment]
    _installed = True
