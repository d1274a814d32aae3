"""DICOM event handlers: decode, call one service, map the result to a status.

Registered in one place, ``build_handlers``, so what the SCP does is readable
at a glance.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from dicom_node.domain.audit import TargetKind
from dicom_node.metrics import ASSOCIATIONS, ASSOCIATIONS_ABORTED, ASSOCIATIONS_ACTIVE
from dicom_node.scp import status
from dicom_node.scp.access import AccessControl
from dicom_node.scp.admission import ConnectionGate
from dicom_node.scp.commitment import CommitmentHandler
from dicom_node.scp.find import FindHandler
from dicom_node.scp.mpps import MppsHandler
from dicom_node.scp.polling import connection_closed, poll_adaptively
from dicom_node.scp.retrieve import RetrieveHandler
from dicom_node.scp.store import StoreHandler
from dicom_node.scp.transport import (
    abort_reason,
    connection_ended,
    set_nodelay,
    tolerate_late_requests,
    watch_for_stalls,
)
from dicom_node.services.access.refusals import ASSOCIATION_REJECTED, Refusal

log = logging.getLogger("dicom_node.scp")

HandlerList = list[
    tuple[evt.EventType, Callable[..., Any]] | tuple[evt.EventType, Callable[..., Any], list[Any]]
]


def build_handlers(
    store: StoreHandler,
    find: FindHandler,
    retrieve: RetrieveHandler,
    mpps: MppsHandler,
    commitment: CommitmentHandler,
    *,
    access: AccessControl,
    gate: ConnectionGate,
) -> HandlerList:
    """Every handler of the SCP. The services ``known_ae_required_for`` names are
    wrapped by ``access`` (scp/access.py), the one place their calling AE is checked."""
    associations = AssociationMetrics()
    return [
        (evt.EVT_CONN_OPEN, handle_connection_opened),
        # pending connections, the request timeout and negotiated slots (admission.py)
        (evt.EVT_CONN_OPEN, gate.connection_opened),
        (evt.EVT_REQUESTED, gate.association_requested),
        (evt.EVT_CONN_CLOSE, gate.connection_closed),
        (evt.EVT_CONN_OPEN, store.handle_connection_opened),  # bounded C-STORE data sets
        (evt.EVT_ABORTED, handle_aborted),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, access.guard("storage", "C-STORE", store.handle_store)),
        (evt.EVT_C_FIND, access.guard_find(find.handle_find)),
        (evt.EVT_C_MOVE, access.guard_move(retrieve.handle_move)),
        (evt.EVT_C_GET, access.guard_get(retrieve.handle_get)),
        (evt.EVT_N_CREATE, access.guard("mpps", "N-CREATE", mpps.handle_create)),
        (evt.EVT_N_SET, access.guard("mpps", "N-SET", mpps.handle_set)),
        (evt.EVT_N_ACTION, access.guard("commitment", "N-ACTION", commitment.handle_action)),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_ACCEPTED, associations.accepted),
        (evt.EVT_REJECTED, handle_rejected, [access]),
        (evt.EVT_REJECTED, associations.rejected),
        (evt.EVT_ABORTED, associations.aborted),
        (evt.EVT_CONN_CLOSE, store.handle_closed),
        (evt.EVT_CONN_CLOSE, handle_connection_closed),
        (evt.EVT_CONN_CLOSE, associations.closed),
    ]


class AssociationMetrics:
    """Association counters and the open-associations gauge.

    pynetdicom may signal one abort twice (a local ``abort()`` and the reactor
    noticing it) and fires the connection-close event on another thread than
    the abort, in either order: each association's state is kept until it is
    garbage, so it counts once whatever the order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # association -> [still counted as active, abort counted]
        self._state: WeakKeyDictionary[Association, list[bool]] = WeakKeyDictionary()

    def accepted(self, event: Event) -> None:
        with self._lock:
            self._state[event.assoc] = [True, False]
        ASSOCIATIONS.labels(result="accepted").inc()
        ASSOCIATIONS_ACTIVE.inc()

    def rejected(self, event: Event) -> None:
        ASSOCIATIONS.labels(result="rejected").inc()

    def aborted(self, event: Event) -> None:
        with self._lock:
            state = self._state.get(event.assoc)
            if state is None or state[1]:
                return  # never accepted (counted as rejected), or counted already
            state[1] = True
        ASSOCIATIONS_ABORTED.inc()

    def closed(self, event: Event) -> None:
        with self._lock:
            state = self._state.get(event.assoc)
            if state is None or not state[0]:
                return
            state[0] = False
        ASSOCIATIONS_ACTIVE.dec()


def _peer(event: Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return requestor.ae_title, f"{requestor.address}:{requestor.port}"


def handle_connection_opened(event: Event) -> None:
    set_nodelay(event)
    poll_adaptively(event.assoc)
    tolerate_late_requests(event.assoc)
    watch_for_stalls(event.assoc)


def handle_connection_closed(event: Event) -> None:
    connection_closed(event.assoc)
    connection_ended(event.assoc)


def handle_aborted(event: Event) -> None:
    calling, address = _peer(event)
    log.warning("association from %s at %s %s", calling, address, abort_reason(event.assoc))


def handle_echo(event: Event) -> int:
    """Verification (PS3.4 A.4): nothing to do but answer."""
    return status.SUCCESS


def handle_accepted(event: Event) -> None:
    calling, address = _peer(event)
    log.info("association accepted from %s at %s", calling, address)


def handle_rejected(event: Event, access: AccessControl) -> None:
    """A refused association: one log line (rate limited per peer address) and a
    Security Alert (Node Authentication), aggregated per peer and interval."""
    assoc = event.assoc
    requestor = assoc.requestor
    calling, host, port = requestor.ae_title, str(requestor.address), int(requestor.port)
    called = assoc.acceptor.ae_title
    requested = getattr(requestor.primitive, "called_ae_title", None) or ""
    allowed = assoc.ae.require_calling_aet
    if allowed and calling not in allowed:
        reason = "calling AE title not recognised"
    elif requested.strip() != called.strip():
        reason = "called AE title not recognised"
    else:
        reason = "too many associations"
    access.lines.warning(
        ("association", host),
        "association rejected from %s at %s:%s (called %r): %s",
        calling,
        host,
        port,
        requested,
        reason,
    )
    access.refusals.record(
        Refusal(
            action=ASSOCIATION_REJECTED,
            host=host,
            port=port,
            calling_ae=calling,
            target_class=TargetKind.AE,
            target_id=requested.strip(),
            reason=reason,
        )
    )
