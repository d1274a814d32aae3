"""A fix for a race in pynetdicom's association reactor.

Each association thread loops: ``_is_paused = True``, ``checkpoint.wait()``,
``_is_paused = False``, then takes any DIMSE message off the queue. A thread
that sends (``send_c_store`` in a C-MOVE sub-operation, an N-EVENT-REPORT)
clears the checkpoint, waits for ``_is_paused``, sends, and reads the reply.
If the reactor had set ``_is_paused`` but had not yet reached ``wait()`` when
the sender cleared the checkpoint, it sails through, and the reply is taken by
the reactor ("Received unexpected C-STORE service message") while the sender
waits out the DIMSE timeout. Seen in this project's C-MOVE test under load: a
60 s stall, then a lost sub-operation.

:class:`ReactorGate` replaces the checkpoint: ``clear()`` returns only once
the reactor is parked inside ``wait()`` (or, as a safety net, after a short
timeout; or at once when the reactor itself calls it), so the reactor cannot
be past the gate when the sender goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association

# the reactor parks within ~1 ms; never let a missing reactor block a sender long
_PARK_TIMEOUT_SECONDS = 0.5


class ReactorGate:
    """A ``threading.Event`` look-alike whose ``clear()`` waits for the reactor."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._parked = False
        self._reactor: int | None = None
        # ends the reactor's sleep between passes (scp/wakeup.py), so that it
        # parks now instead of after up to 1 ms
        self.wake: Callable[[], None] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._open = False
            if self._reactor == threading.get_ident():
                return  # the reactor pausing itself (network-timeout release)
            if self.wake is not None and not self._parked:
                self.wake()
            self._cond.wait_for(lambda: self._parked, timeout=_PARK_TIMEOUT_SECONDS)

    def wait(self, timeout: float | None = None) -> bool:
        """Called by the reactor only: park here while the gate is closed."""
        with self._cond:
            self._reactor = threading.get_ident()
            self._parked = True
            self._cond.notify_all()
            opened = self._cond.wait_for(lambda: self._open, timeout=timeout)
            self._parked = False
            return opened


_installed = False


def install_reactor_gate() -> None:
    """Give every Association created from now on a :class:`ReactorGate`."""
    global _installed
    if _installed:
        return
    original = Association.__init__

    def init(self: Association, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._reactor_checkpoint = ReactorGate()  # type: ignore[assignment]

    Association.__init__ = init  # type: ignore[method-assign]
    _installed = True
