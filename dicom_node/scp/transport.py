"""Socket options for every association, accepted or opened by the node; the
pre-association timeout, the reaper that cuts connections pynetdicom gave up on
but cannot end, and the close of a connection whose DUL thread ended without one."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
import time
import weakref

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, StateMachine
from pynetdicom.pdu_primitives import A_P_ABORT

from dicom_node.log_limit import LogLimiter
from dicom_node.scp.dataset_limit import bound_responses

log = logging.getLogger("dicom_node.scp")


def set_nodelay(event: Event) -> None:
    """No Nagle (EVT_CONN_OPEN): DIMSE is request/response, and a small PDU held
    back for a delayed ACK stalls both ends. pynetdicom leaves Nagle on."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def outgoing_connection_opened(event: Event) -> None:
    """EVT_CONN_OPEN of an association the node requests (C-MOVE's sub-operations,
    storage commitment reports): the same bounds as an accepted one.

    The peer is no more trusted for being a configured destination: one that
    stops in the middle of a PDU (a partial A-ASSOCIATE-AC, a C-STORE-RSP cut
    short) or stops reading leaves pynetdicom's reader, or its sender, blocked
    for good, and ``Association.kill()`` waiting for it: the C-MOVE (or the
    commitment report) never ended, the requester's association and its slot
    with it, and the node could not stop. The reaper cuts such a connection once
    pynetdicom's ACSE or DIMSE timeout has given up on it, as it does for
    accepted ones. A socket timeout was not used: it bounds one ``recv()``, not
    a PDU (a peer sending a byte now and then defeats it), and pynetdicom's own
    timeouts already say when to give up.
    """
    set_nodelay(event)
    limit_pdu_length(event.assoc)
    bound_responses(event.assoc)
    watch_for_stalls(event.assoc)


# --------------------------------------------------------------------------- PDU length

P_DATA_TF = 0x04
_PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
# The longest PDU read that is not a P-DATA-TF. Only an A-ASSOCIATE-RQ/AC comes
# near it: 128 presentation contexts (the most PS3.8 allows) with 32 transfer
# syntaxes of 64 characters each is ~290 KB, plus the user information items.
# The others are 4 bytes long.
CONTROL_PDU_LIMIT = 1_048_576


class LimitedDUL(DULServiceProvider):
    """Refuses a PDU longer than the node said it would receive, before reading it.

    pynetdicom reads a PDU's body as it arrives, whatever length its header
    claims, and never compares a P-DATA-TF with the Maximum Length Received the
    node sent in its A-ASSOCIATE (PS3.8 D.1): a peer could make the node hold up
    to 4 GiB per association. Here the header is checked first; a PDU over the
    limit is an invalid PDU (Event 19): the node sends an A-ABORT and closes
    the connection without reading the rest, and logs why. pynetdicom's
    ``_read_pdu_data`` is otherwise reproduced as it is in 3.0 (its events for a
    short read, an unknown type and a decoding failure);
    ``tests/unit/test_transport.py`` guards the internals it uses.
    """

    refused: str | None = None  # why a PDU was refused, for the abort's log line
    request_read = False  # an A-ASSOCIATE-RQ was read on this connection
    receiving = False  # in the middle of reading a PDU (its bytes are arriving)
    invalid_pdu = False  # an invalid PDU was received: the node aborts (Event 19)
    close_signalled = False  # the connection is closed and EVT_CONN_CLOSE was triggered

    def run(self) -> None:
        """The DUL thread: pynetdicom's reactor, then, if it ended without closing
        the connection, the close (see :func:`_close_unsignalled`)."""
        error: Exception | None = None
        try:
            super().run()
        except Exception as exc:
            # pynetdicom's StateMachine.do_action has logged it, with its traceback
            error = exc
        finally:
            if not self.close_signalled:
                _close_unsignalled(self, error)

    def state_entered(self, state: str) -> None:
        """After each change of state of the state machine
        (:class:`TolerantStateMachine`), on this thread. Each of pynetdicom's
        actions that lead to Sta1 (AE-4, AR-3, AR-5, AA-2 to AA-5) has closed the
        connection and triggered EVT_CONN_CLOSE."""
        if state == "Sta1":
            self.close_signalled = True

    def _read_pdu_data(self) -> None:
        sock = self.socket
        assert sock is not None  # pynetdicom reads only on a connected socket
        if self.refused:
            # the refused body is never read: the connection counts as closed
            # (Event 17) once the A-ABORT has gone out
            self.event_queue.put("Evt17")
            return
        self.receiving = True
        try:
            header = sock.recv(6)
            if len(header) < 6:
                self.event_queue.put("Evt17")  # closed before a whole header
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in _PDU_TYPES:
                self._invalid("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")
                return
            limit = self._limit(pdu_type)
            if limit and length > limit:
                self._refuse(pdu_type, length, limit)
                return
            body = sock.recv(length)
        except (OSError, ValueError):
            # OSError includes TimeoutError and ssl.SSLError; ValueError is an SSL
            # socket the reaper shut down while it was being read
            self.event_queue.put("Evt17")
            return
        finally:
            self.receiving = False
        if len(body) != length:
            self.event_queue.put("Evt17")  # closed in the middle of the PDU
            return
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception as exc:
            # the reason fits one line (pynetdicom's own line, rate-limited by
            # logging_setup, quotes the value); a traceback would say nothing more
            self._invalid("undecodable PDU of type 0x%02X received: %s", pdu_type, _reason(exc))
            self.event_queue.put("Evt19")
            return
        if pdu_type == 0x01:
            self.request_read = True
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _invalid(self, msg: str, *args: object) -> None:
        _invalid_pdu(self, msg, *args)

    def _limit(self, pdu_type: int) -> int:
        """0 is no limit (``max_pdu_size = 0``)."""
        if pdu_type != P_DATA_TF:
            return CONTROL_PDU_LIMIT
        local = self.assoc.acceptor if self.assoc.is_acceptor else self.assoc.requestor
        length = local.maximum_length
        # None once an A-ASSOCIATE-RJ was sent (no user information): not "no limit"
        return CONTROL_PDU_LIMIT if length is None else length

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        kind = "P-DATA-TF" if pdu_type == P_DATA_TF else f"type 0x{pdu_type:02X}"
        self.refused = f"a {kind} PDU of {length} bytes, over the {limit}-byte limit"
        self.event_queue.put("Evt19")  # the state machine sends the A-ABORT
        if self.assoc.is_acceptor and not self.request_read:
            # Before a request the state machine aborts without telling the
            # association thread, which would wait for one (and hold its slot)
            # until the ACSE timeout; None is what that wait returns on a timeout.
            self.to_user_queue.put(None)


def _invalid_pdu(dul: DULServiceProvider, msg: str, *args: object) -> None:
    """A PDU that is not one (PS3.8 9.3), noted for the abort's line: any host can
    send one per connection, so one line per peer address and window, with the count."""
    if isinstance(dul, LimitedDUL):
        dul.invalid_pdu = True
    peer, address = describe_peer(dul.assoc)
    _INVALID_PDU_LOG.warning((msg, address.rsplit(":", 1)[0]), "%s: " + msg, peer, *args)


def _close_unsignalled(dul: LimitedDUL, error: Exception | None) -> None:
    """Close a connection whose DUL thread ended without closing it, as
    pynetdicom's AA-4 would (PS3.8 9.2: transport connection closed).

    pynetdicom ends the DUL thread without closing the socket or triggering
    EVT_CONN_CLOSE when its reactor catches an exception (it sends an A-ABORT
    and stops) or a state machine action raises one. The connection then stayed
    counted for good wherever a close handler counts it (the adaptive polling's
    open associations, the open-associations gauge, the pending connections),
    and the store's close handler never removed the data sets no handler took.
    Called on the DUL thread, its last act, exactly once per connection.
    """
    state = dul.state_machine.current_state
    dul.close_signalled = True
    dul.state_machine.current_state = "Sta1"
    dul.artim_timer.stop()
    raw = getattr(dul.socket, "socket", None)
    if isinstance(raw, socket.socket):
        # apart: shutdown() fails on a connection the peer has reset, close() must not be skipped
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            raw.close()
    assoc = dul.assoc
    peer, address = describe_peer(assoc)
    if error is None and state == "Sta1":
        # stopped (Association.kill) before it took the new connection up
        log.debug("%s: connection closed before its DICOM reactor took it up", peer)
    else:
        why = f": {type(error).__name__}: {_reason(error)}" if error is not None else ""
        _REACTOR_ERROR_LOG.warning(
            ("reactor", address.rsplit(":", 1)[0]),
            "%s: connection closed after an error in its DICOM reactor%s",
            peer,
            why,
        )
    assoc.dimse.msg_queue.put((None, None))  # a wait for a DIMSE message ends (as AA-4)
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    evt.trigger(assoc, evt.EVT_CONN_CLOSE, {"address": (remote.address, remote.port)})
    # The association thread stops waiting on the DUL: an acceptor for its
    # request (None: what the wait returns on a timeout), a requestor for the
    # A-ASSOCIATE response. Once established it sees the DUL thread has ended.
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        dul.to_user_queue.put(None)
    elif assoc.is_requestor and not assoc.is_established:
        abort = A_P_ABORT()
        abort.provider_reason = 0x00
        dul.to_user_queue.put(abort)


def limit_pdu_length(assoc: Association) -> None:
    """On connection open: switch the association's DUL provider to
    :class:`LimitedDUL` (pynetdicom creates it itself)."""
    if type(assoc.dul) is DULServiceProvider:
        assoc.dul.__class__ = LimitedDUL
    tolerate_late_requests(assoc)


# Events of the node's own requests (PS3.8 9.2): an A-ASSOCIATE, a P-DATA (a
# DIMSE message), an A-RELEASE or an A-ABORT primitive from the association thread.
_LOCAL_REQUESTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})
# Events of a PDU received from the peer (PS3.8 9.2), by the PDU's name
_PEER_PDUS = {
    "Evt3": "A-ASSOCIATE-AC",
    "Evt4": "A-ASSOCIATE-RJ",
    "Evt6": "A-ASSOCIATE-RQ",
    "Evt10": "P-DATA-TF",
    "Evt12": "A-RELEASE-RQ",
    "Evt13": "A-RELEASE-RP",
    "Evt16": "A-ABORT",
}


class TolerantStateMachine(StateMachine):
    """Drops a request of the node's own that comes too late instead of dying,
    and tells an acceptor waiting for its A-ASSOCIATE-RQ that none will come.

    When the DUL has aborted (Sta13: awaiting the close) or closed (Sta1), a
    handler still running on the association thread may yet send its response.
    PS3.8 defines no transition for that; pynetdicom raises InvalidEventError in
    the DUL thread, which ends without closing the socket or signalling the
    connection close, so the open-association count and the close handlers
    leak. The request has no association left to go on: it is discarded.

    A connection that ends before its request (the peer closed it: AA-5; or an
    A-ABORT, the ARTIM timer, a refused PDU: AA-2, AR-5) goes back to Sta1
    (PS3.8 9.2) without any primitive for the association thread, which
    pynetdicom leaves waiting for a request until the ACSE timeout: the thread,
    and with it the connection's place among the open ones, outlived the peer
    by up to 30 s. Entering Sta1 before a request reached the thread now wakes
    it at once (``None`` is what its wait returns on a timeout).

    A PDU from the peer that its action cannot process is an invalid PDU
    (Event 19: A-ABORT, PS3.8 9.3.1), logged in one line. pynetdicom decodes a
    DIMSE command set inside the P-DATA-TF action (DT-2), and a command with an
    unknown Command Field raised there: the DUL thread died with two
    tracebacks, without an A-ABORT or the close of the connection.

    Each transition is reported to the DUL (:meth:`LimitedDUL.state_entered`).
    """

    def do_action(self, event: str) -> None:
        if event in _LOCAL_REQUESTS and (event, self.current_state) not in TRANSITION_TABLE:
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get(block=False)  # what the action would take
            log.debug(
                "request %s dropped in %s: the association is gone", event, self.current_state
            )
            return
        # an action may send a PDU: a peer that stops reading blocks it here
        self.dul.acting = True  # type: ignore[attr-defined]
        try:
            if event in _PEER_PDUS and (event, self.current_state) in TRANSITION_TABLE:
                self._peer_action(event)
            else:
                super().do_action(event)
        finally:
            self.dul.acting = False  # type: ignore[attr-defined]
        assoc = self.dul.assoc
        if (
            self.current_state == "Sta1"
            and assoc.is_acceptor
            and assoc.requestor.primitive is None
            and not self.dul.to_user_queue.qsize()
        ):
            self.dul.to_user_queue.put(None)

    def _peer_action(self, event: str) -> None:
        """pynetdicom's ``do_action`` for a PDU from the peer (guarded by
        ``tests/unit/test_association_end.py``), except for an action that fails."""
        name = TRANSITION_TABLE[(event, self.current_state)]
        try:
            next_state = ACTIONS[name][1](self.dul)
        except Exception as exc:
            _invalid_pdu(
                self.dul,
                "%s PDU that could not be processed (%s: %s), aborting",
                _PEER_PDUS[event],
                type(exc).__name__,
                _reason(exc),
            )
            self.dul.event_queue.put("Evt19")
            return
        evt.trigger(
            self.dul.assoc,
            evt.EVT_FSM_TRANSITION,
            {
                "action": name,
                "current_state": self.current_state,
                "fsm_event": event,
                "next_state": next_state,
            },
        )
        self.transition(next_state)

    def transition(self, state: str) -> None:
        before = self.current_state
        super().transition(state)
        entered = getattr(self.dul, "state_entered", None)
        if entered is not None and state != before:  # not on each P-DATA (Sta6 to Sta6)
            entered(state)


def tolerate_late_requests(assoc: Association) -> None:
    if type(assoc.dul.state_machine) is StateMachine:
        assoc.dul.state_machine.__class__ = TolerantStateMachine


# --------------------------------------------------------------------------- stalled reads

REAP_INTERVAL_SECONDS = 0.25
# A kill also ends every released association, right after its A-RELEASE-RP is
# queued: cutting it at once could drop the response before it is sent (seen in
# CI: findscu's release answered by a closed connection). A released or rejected
# one is cut only if still alive this long after; a timed-out or aborted one at once.
RELEASE_GRACE_SECONDS = 1.0


class StalledReadReaper:
    """Cuts the connection of an association pynetdicom has given up on but
    cannot end, and of a connection whose A-ASSOCIATE-RQ is overdue.

    pynetdicom reads a PDU with blocking ``recv()`` calls on a socket without a
    timeout. When its ACSE or network timeout gives up on an association,
    ``Association.kill()`` waits for the reader thread, which waits for bytes
    that never come (a peer gone mid-PDU, a half-sent A-ASSOCIATE-RQ, a peer
    trickling one byte at a time), or for the sender blocked in ``send()`` to a
    peer that stopped reading. The association, its ``max_associations``
    slot and any ``stop()`` would stay stuck for good; shutting the socket down
    wakes the reader (or the sender). One thread per process looks every 0.25 s
    at the associations being killed (pynetdicom's ``_kill`` flag; its name is
    guarded by ``tests/unit/test_polling.py``), until both the association's
    thread and its DUL thread have ended: an association the node requested (a
    C-MOVE's destination) is killed from another thread (the C-MOVE's, on the
    DIMSE timeout), so its own thread ends at once while ``kill()`` still waits.

    The same pass enforces the pre-association timeout
    (``association_request_timeout_seconds``, see :func:`expect_request_within`):
    a connection that has not delivered a whole A-ASSOCIATE-RQ by its deadline
    (silent, or trickling one) is shut down, whatever its reader is doing; the
    end of the connection then wakes the association thread at once
    (:class:`TolerantStateMachine`).
    """

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[Association] = weakref.WeakSet()
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
        now = time.monotonic()
        for assoc in watched:
            # started, and over: its thread and its DUL's (a requestor's thread
            # ends on a kill() from another, which still waits for the DUL)
            if assoc.ident is not None and not assoc.is_alive() and not assoc.dul.is_alive():
                with self._lock:
                    self._watched.discard(assoc)
            elif _request_overdue(assoc, now):
                self._shut_down(assoc)
            elif getattr(assoc, "_kill", False) and assoc.dul.is_alive():
                killed_at = self._killed_at.setdefault(assoc, time.monotonic())
                # a release or a rejection answers the peer: let that answer go out
                ended = assoc.is_released or assoc.is_rejected
                grace = RELEASE_GRACE_SECONDS if ended else 0.0
                if time.monotonic() - killed_at >= grace:
                    self._shut_down(assoc)

    def _shut_down(self, assoc: Association) -> None:
        """Shut the socket down: the reader wakes and the DUL ends the connection,
        with its close handlers (or :class:`LimitedDUL` does, if pynetdicom's
        reader ends on an exception)."""
        sock = getattr(assoc.dul.socket, "socket", None)
        if not isinstance(sock, socket.socket):
            return
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            deadline = _REQUEST_DEADLINES.get(assoc)
            _log_no_request(assoc, deadline[1] if deadline else assoc.acse_timeout)
        else:
            peer, address = describe_peer(assoc)
            level, why = _why_cut(assoc)
            _CUT_LOG.log((address.rsplit(":", 1)[0], why), level, "%s cut: %s", peer, why)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._watched.discard(assoc)
        _REAPED.add(assoc)


def describe_peer(assoc: Association) -> tuple[str, str]:
    """("association from AE at host:port", "host:port") naming the peer: the
    requestor of an accepted association, the acceptor of one the node opened
    (its requestor is the node itself)."""
    if assoc.is_acceptor:
        peer, direction = assoc.requestor, "from"
    else:
        peer, direction = assoc.acceptor, "to"
    address = f"{peer.address}:{peer.port}"
    return f"association {direction} {peer.ae_title} at {address}", address


def _why_cut(assoc: Association) -> tuple[int, str]:
    """What the reaper found, and how much it matters, for its log line.

    Only a reader blocked inside a PDU, or a sender blocked on a peer that no
    longer reads, is a stall (WARNING). Otherwise pynetdicom was done with the
    association (released, rejected, aborted, timed out) and only waiting for
    the connection to end: the peer had not closed it yet, or had just closed
    it (a peer that sent a whole request, got its answer and left). Not a
    stall: a DEBUG line."""
    dul = assoc.dul
    if getattr(dul, "receiving", False):
        return logging.WARNING, "the peer stopped in the middle of a PDU"
    if getattr(dul, "acting", False):
        return logging.WARNING, "the peer stopped reading what the node sends"
    if assoc.is_released:
        ended = "released"
    elif assoc.is_rejected:
        ended = "rejected"
    elif assoc.is_aborted or getattr(assoc, "_sent_abort", False):
        ended = "aborted"
    else:
        ended = "given up"
    return logging.DEBUG, f"{ended}, and the connection had not ended yet"


_REAPER = StalledReadReaper()
_OPENED: weakref.WeakKeyDictionary[Association, float] = weakref.WeakKeyDictionary()
_REAPED: weakref.WeakSet[Association] = weakref.WeakSet()  # cut by the reaper (logged)
# accepted connections: (monotonic deadline, seconds) for their A-ASSOCIATE-RQ
_REQUEST_DEADLINES: weakref.WeakKeyDictionary[Association, tuple[float, float]] = (
    weakref.WeakKeyDictionary()
)
_NO_REQUEST_LOGGED: weakref.WeakSet[Association] = weakref.WeakSet()
# One line per connection that timed out, but never a flood: per peer address and
# kind, the first line at once, then one per window with the count (an attacker
# renewing silent connections would otherwise write max_pending_connections lines
# every association_request_timeout_seconds).
_NO_REQUEST_LOG = LogLimiter(log)
# the reaper's cuts, per peer address: a peer can stall as often as it connects
_CUT_LOG = LogLimiter(log)
# PDUs that are not PDUs (unknown type, undecodable, over the length limit), per
# kind and peer address: an unauthenticated peer sends one per connection
_INVALID_PDU_LOG = LogLimiter(log)
# connections closed after an error in pynetdicom's reactor, per peer address
_REACTOR_ERROR_LOG = LogLimiter(log)
REASON_MAX = 200


def _reason(exc: Exception) -> str:
    """An exception as one bounded line (it may quote the peer's bytes)."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 3] + "..."


def watch_for_stalls(assoc: Association) -> None:
    """EVT_CONN_OPEN: note when the connection opened and let the reaper watch it."""
    _OPENED[assoc] = time.monotonic()
    _REAPER.watch(assoc)


def expect_request_within(assoc: Association, seconds: float) -> None:
    """EVT_CONN_OPEN of an accepted connection: it must deliver its whole
    A-ASSOCIATE-RQ within ``seconds`` or be cut (and logged once) by the reaper.

    Shorter than the ACSE timeout on purpose: a connection without a request
    holds a thread and a place among the pending connections, and a genuine peer
    sends its request the moment it has connected.
    """
    _REQUEST_DEADLINES[assoc] = (time.monotonic() + seconds, seconds)
    _REAPER.watch(assoc)


def _request_overdue(assoc: Association, now: float) -> bool:
    deadline = _REQUEST_DEADLINES.get(assoc)
    return (
        deadline is not None
        and now >= deadline[0]
        and not getattr(assoc.dul, "request_read", True)
        and assoc.requestor.primitive is None
        and assoc.dul.is_alive()
        and assoc not in _REAPED
    )


def _log_no_request(assoc: Association, seconds: float | None) -> None:
    """The one line for a connection that never delivered its A-ASSOCIATE-RQ in
    time, whichever of the reaper, the ARTIM timer or the ACSE timeout ended it."""
    if assoc in _NO_REQUEST_LOGGED:
        return
    _NO_REQUEST_LOGGED.add(assoc)
    requestor = assoc.requestor
    peer = f"{requestor.address}:{requestor.port}"
    if getattr(assoc.dul, "receiving", False):
        kind, what = "incomplete", "association request still incomplete"
    else:
        kind, what = "silent", "no association request"
    _NO_REQUEST_LOG.warning(
        (requestor.address, kind),
        "connection from %s closed: %s after %g s (association_request_timeout_seconds)",
        peer,
        what,
        seconds or 0,
    )


def connection_ended(assoc: Association) -> None:
    """EVT_CONN_CLOSE: say why a connection that never became an association ended.

    A peer that stayed silent until the ACSE timeout gets a warning; a short
    connection (a TCP health check, a port probe) only a debug line.
    """
    if assoc.requestor.primitive is not None or assoc.is_rejected or assoc in _REAPED:
        return
    peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
    refused = getattr(assoc.dul, "refused", None)
    if refused:
        _INVALID_PDU_LOG.warning(
            ("refused", str(assoc.requestor.address)),
            "connection from %s aborted: refused %s",
            peer,
            refused,
        )
        return
    lasted = time.monotonic() - _OPENED.get(assoc, time.monotonic())
    # the ARTIM timer (the ACSE timeout) may close a silent connection first
    if assoc.acse_timeout is not None and lasted >= assoc.acse_timeout * 0.9:
        _log_no_request(assoc, assoc.acse_timeout)
    else:
        log.debug("connection from %s closed before an association request", peer)


def abort_reason(assoc: Association) -> str:
    """Why an association ended by A-ABORT, for EVT_ABORTED's log line."""
    refused = getattr(assoc.dul, "refused", None)
    if refused:
        return f"aborted: refused {refused} (MAX_PDU_SIZE)"
    if getattr(assoc.dul, "invalid_pdu", False):
        # the state machine's own A-ABORT (AA-8), not the association thread's
        return "aborted by the node: invalid PDU received"
    if not getattr(assoc, "_sent_abort", False):
        return "aborted by the peer"
    if assoc.dul.idle_timer_expired():
        return f"aborted: nothing received for {assoc.network_timeout:g} s (network timeout)"
    return "aborted by the node"
