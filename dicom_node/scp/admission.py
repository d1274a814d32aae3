"""Which connections and associations a receiving process takes on.

A connection is *pending* from the moment it is accepted until its whole
A-ASSOCIATE-RQ has arrived (on the TLS port, its handshake included); from then
on it is a *negotiated* association. The two are counted apart, per process
(each DICOM worker has its own counts):

- ``max_associations`` counts negotiated associations only. A request beyond it
  is rejected with A-ASSOCIATE-RJ rejected-transient, service-provider
  (presentation), local-limit-exceeded (PS3.8 9.3.4; the modality retries).
  pynetdicom's own limit counted every connection thread, so connections that
  never sent a byte took every slot.
- ``max_pending_connections`` bounds the connections still waiting for their
  request, and one peer address may hold at most a quarter of them
  (``PER_ADDRESS_SHARE``), so one host cannot take every place alone. A
  connection beyond either is closed at once on the accept thread, before any
  thread is started for it; the line saying so is rate-limited.
- A pending connection gets ``association_request_timeout_seconds`` (or the ACSE
  timeout, if shorter) to deliver its request; the reaper in ``transport.py``
  closes it then. A connection that ends frees its place at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from weakref import WeakKeyDictionary, WeakSet

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from dicom_node.scp.transport import expect_request_within

# one peer address may hold at most 1/PER_ADDRESS_SHARE of max_pending_connections
PER_ADDRESS_SHARE = 4
# PS3.8 9.3.4: rejected-transient, DUL service-provider (presentation related
# function), local-limit-exceeded
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


class ConnectionGate:
    """The counts of one receiving process, shared by its plain and TLS listeners."""

    def __init__(
        self,
        *,
        max_associations: int,
        max_pending: int,
        request_timeout: float,
    ) -> None:
        self.max_associations = max_associations
        self.max_pending = max_pending
        self.max_pending_per_address = max(1, max_pending // PER_ADDRESS_SHARE)
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        # admitted connections with no association yet (TLS handshake, thread start)
        self._unattached: Counter[str] = Counter()
        # associations waiting for their A-ASSOCIATE-RQ -> peer address
        self._waiting: WeakKeyDictionary[Association, str] = WeakKeyDictionary()
        self._negotiated: WeakSet[Association] = WeakSet()
        # on a connection's own thread: its address while its place is unattached
        self._thread = threading.local()

    # ---------------------------------------------------------------- accept thread

    def admit(self, address: str) -> str | None:
        """Take a pending place for a new connection from ``address``; None if
        taken, otherwise why the connection must be closed."""
        with self._lock:
            self._forget_ended()
            total = sum(self._unattached.values()) + len(self._waiting)
            if total >= self.max_pending:
                return (
                    f"{total} connections are waiting for their association request "
                    "(max_pending_connections)"
                )
            mine = self._unattached[address] + sum(
                1 for peer in self._waiting.values() if peer == address
            )
            if mine >= self.max_pending_per_address:
                return (
                    f"{mine} connections from this address are waiting for their association "
                    f"request (1/{PER_ADDRESS_SHARE} of max_pending_connections)"
                )
            self._unattached[address] += 1
            return None

    def abandon(self, address: str) -> None:
        """An admitted connection that got no thread of its own."""
        with self._lock:
            self._release(address)

    @contextlib.contextmanager
    def serving(self, address: str) -> Iterator[None]:
        """Around the work of an admitted connection's own thread (TLS handshake,
        pynetdicom's association set-up). Its place passes to its association at
        EVT_CONN_OPEN (on this thread, see :meth:`connection_opened`); if no
        association came of it, the place is freed on the way out."""
        self._thread.address = address
        try:
            yield
        finally:
            with self._lock:
                if self._thread.address is not None:
                    self._release(self._thread.address)
                self._thread.address = None

    def _release(self, address: str) -> None:
        self._unattached[address] -= 1
        if self._unattached[address] <= 0:
            del self._unattached[address]

    # ---------------------------------------------------------------- event handlers

    def connection_opened(self, event: Event) -> None:
        """EVT_CONN_OPEN of an accepted connection: it waits for its request."""
        assoc = event.assoc
        # the peer's address as accepted (pynetdicom sets the event's attributes)
        address = event.address  # type: ignore[attr-defined]
        with self._lock:
            # the same place, moved from the connection to its association
            unattached = getattr(self._thread, "address", None)
            if unattached is not None:
                self._release(unattached)
                self._thread.address = None
            self._waiting[assoc] = str(address[0])
        timeout = self.request_timeout
        if assoc.acse_timeout is not None:
            # past the ACSE timeout pynetdicom stops waiting for the request anyway
            timeout = min(timeout, assoc.acse_timeout)
        expect_request_within(assoc, timeout)

    def association_requested(self, event: Event) -> None:
        """EVT_REQUESTED: the A-ASSOCIATE-RQ arrived; take a negotiated slot or
        reject the request. pynetdicom skips its negotiation for a request
        rejected here."""
        assoc = event.assoc
        with self._lock:
            self._waiting.pop(assoc, None)
            taken = sum(1 for other in self._negotiated if other.is_alive())
            admitted = taken < self.max_associations
            if admitted:
                self._negotiated.add(assoc)
        if not admitted:
            _reject(assoc, *LOCAL_LIMIT_EXCEEDED)

    def connection_closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: whatever the connection held is free."""
        with self._lock:
            self._waiting.pop(event.assoc, None)
            self._negotiated.discard(event.assoc)

    # ---------------------------------------------------------------- counts

    def pending(self) -> int:
        with self._lock:
            self._forget_ended()
            return sum(self._unattached.values()) + len(self._waiting)

    def negotiated(self) -> int:
        with self._lock:
            return sum(1 for assoc in self._negotiated if assoc.is_alive())

    def _forget_ended(self) -> None:
        """A connection whose association thread is over holds nothing, even if
        its close was never signalled (a DUL that died of an exception)."""
        for assoc in list(self._waiting):
            if assoc.ident is not None and not assoc.is_alive():
                del self._waiting[assoc]


def _reject(assoc: Association, result: int, source: int, diagnostic: int) -> None:
    """What pynetdicom's own negotiation does on a rejection (acse.py), from an
    EVT_REQUESTED handler: send the A-ASSOCIATE-RJ, signal EVT_REJECTED (audited
    and counted by the node's handlers) and end the association."""
    requestor = assoc.requestor
    if requestor.primitive is not None:
        # set by the negotiation this rejection skips; the rejection's log line
        # and audit event name the calling AE
        with contextlib.suppress(ValueError, TypeError):
            requestor.ae_title = requestor.primitive.calling_ae_title
    assoc.acse.send_reject(result, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
