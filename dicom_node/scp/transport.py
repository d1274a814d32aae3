"""Socket options for every association, accepted or opened by the node, and the
reaper that cuts connections pynetdicom gave up on but cannot end."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

log = logging.getLogger("dicom_node.scp")


def set_nodelay(event: Event) -> None:
    """No Nagle (EVT_CONN_OPEN): DIMSE is request/response, and a small PDU held
    back for a delayed ACK stalls both ends. pynetdicom leaves Nagle on."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------------------- stalled reads

REAP_INTERVAL_SECONDS = 0.25
# A kill also ends every released association, right after its A-RELEASE-RP is
# queued: cutting it at once could drop the response before it is sent (seen in
# CI: findscu's release answered by a closed connection). A released one is cut
# only if still alive this long after; a timed-out or aborted one at once.
RELEASE_GRACE_SECONDS = 1.0


class StalledReadReaper:
    """Cuts the connection of an association pynetdicom has given up on but
    cannot end.

    pynetdicom reads a PDU with blocking ``recv()`` calls on a socket without a
    timeout. When its ACSE or network timeout gives up on an association,
    ``Association.kill()`` waits for the reader thread, which waits for bytes
    that never come (a peer gone mid-PDU, a half-sent A-ASSOCIATE-RQ, a peer
    trickling one byte at a time). The association, its ``max_associations``
    slot and any ``stop()`` would stay stuck for good; shutting the socket down
    wakes the reader. One thread per process looks every 0.25 s at the
    associations being killed (pynetdicom's ``_kill`` flag; its name is guarded
    by ``tests/unit/test_polling.py``).
    """

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[Association] = weakref.WeakSet()
        # cut, waiting for their reader thread to end
        self._cut: weakref.WeakSet[Association] = weakref.WeakSet()
        # when the reaper first saw each association being killed
        self._killed_at: weakref.WeakKeyDictionary[Association, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, assoc: Association) -> None:
        with self._lock:
            self._watched.add(assoc)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dicom-reaper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(REAP_INTERVAL_SECONDS)
            try:
                self._pass()
            except Exception:  # the reaper must outlive any one association
                log.exception("stalled-read reaper pass failed")

    def _pass(self) -> None:
        with self._lock:
            watched = list(self._watched)
            cut = list(self._cut)
        for assoc in watched:
            if not assoc.is_alive():
                with self._lock:
                    self._watched.discard(assoc)
            elif getattr(assoc, "_kill", False) and assoc.dul.is_alive():
                killed_at = self._killed_at.setdefault(assoc, time.monotonic())
                grace = RELEASE_GRACE_SECONDS if assoc.is_released else 0.0
                if time.monotonic() - killed_at >= grace:
                    self._shut_down(assoc)
        for assoc in cut:
            if not assoc.dul.is_alive():
                with self._lock:
                    self._cut.discard(assoc)
                # the close handlers may write to the database (the store's
                # audit event): never let them hold up the next cut
                threading.Thread(
                    target=_finish_cut, args=(assoc,), name="dicom-reaped", daemon=True
                ).start()

    def _shut_down(self, assoc: Association) -> None:
        sock = getattr(assoc.dul.socket, "socket", None)
        if not isinstance(sock, socket.socket):
            return
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        if assoc.requestor.primitive is None:
            log.warning(
                "connection from %s cut: no complete association request within %g s "
                "(ACSE timeout)",
                peer,
                assoc.acse_timeout,
            )
        else:
            log.warning(
                "association from %s at %s cut: the peer stopped in the middle of a PDU",
                assoc.requestor.ae_title,
                peer,
            )
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._watched.discard(assoc)
            self._cut.add(assoc)
        _REAPED.add(assoc)


def _finish_cut(assoc: Association) -> None:
    """After a cut, pynetdicom's reader ends on the half-read PDU (often with an
    exception of its own) without closing the socket or signalling
    EVT_CONN_CLOSE: close it and signal it here, so the handlers that count open
    associations (adaptive polling, metrics) and clean up after them still run."""
    if assoc in _CLOSED:
        return
    sock = getattr(assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.close()
    evt.trigger(
        assoc, evt.EVT_CONN_CLOSE, {"address": (assoc.requestor.address, assoc.requestor.port)}
    )


_REAPER = StalledReadReaper()
_OPENED: weakref.WeakKeyDictionary[Association, float] = weakref.WeakKeyDictionary()
_CLOSED: weakref.WeakSet[Association] = weakref.WeakSet()
_REAPED: weakref.WeakSet[Association] = weakref.WeakSet()  # cut by the reaper (logged)


def watch_for_stalls(assoc: Association) -> None:
    """EVT_CONN_OPEN: note when the connection opened and let the reaper watch it."""
    _OPENED[assoc] = time.monotonic()
    _REAPER.watch(assoc)


def connection_ended(assoc: Association) -> None:
    """EVT_CONN_CLOSE: note it, and say why a connection that never became an
    association ended.

    A peer that stayed silent until the ACSE timeout gets a warning; a short
    connection (a TCP health check, a port probe) only a debug line.
    """
    _CLOSED.add(assoc)
    if assoc.requestor.primitive is not None or assoc.is_rejected or assoc in _REAPED:
        return
    peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
    lasted = time.monotonic() - _OPENED.get(assoc, time.monotonic())
    if assoc.acse_timeout is not None and lasted >= assoc.acse_timeout * 0.9:
        log.warning(
            "connection from %s closed: no complete association request within %g s (ACSE timeout)",
            peer,
            assoc.acse_timeout,
        )
    else:
        log.debug("connection from %s closed before an association request", peer)


def abort_reason(assoc: Association) -> str:
    """Why an association ended by A-ABORT, for EVT_ABORTED's log line."""
    if not getattr(assoc, "_sent_abort", False):
        return "aborted by the peer"
    if assoc.dul.idle_timer_expired():
        return f"aborted: nothing received for {assoc.network_timeout:g} s (network timeout)"
    return "aborted by the node"
