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

from dicom_node.db.engine import Database
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.metrics import ASSOCIATIONS, ASSOCIATIONS_ABORTED, ASSOCIATIONS_ACTIVE
from dicom_node.scp import status
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
from dicom_node.services.audit import record_audit_event

log = logging.getLogger("dicom_node.scp")

HandlerList = list[
    tuple[evt.EventType, Callable[..., Any]] | tuple[evt.EventType, Callable[..., Any], list[Any]]
]


def build_handlers(
    db: Database,
    store: StoreHandler,
    find: FindHandler,
    retrieve: RetrieveHandler,
    mpps: MppsHandler,
    commitment: CommitmentHandler,
) -> HandlerList:
    associations = AssociationMetrics()
    return [
        (evt.EVT_CONN_OPEN, handle_connection_opened),
        (evt.EVT_CONN_OPEN, store.handle_connection_opened),  # bounded C-STORE data sets
        (evt.EVT_ABORTED, handle_aborted),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, store.handle_store),
        (evt.EVT_C_FIND, find.handle_find),
        (evt.EVT_C_MOVE, retrieve.handle_move),
        (evt.EVT_C_GET, retrieve.handle_get),
        (evt.EVT_N_CREATE, mpps.handle_create),
        (evt.EVT_N_SET, mpps.handle_set),
        (evt.EVT_N_ACTION, commitment.handle_action),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_ACCEPTED, associations.accepted),
        (evt.EVT_REJECTED, handle_rejected, [db]),
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


def handle_rejected(event: Event, db: Database) -> None:
    """Audit a refused association (security alert: node authentication failed)."""
    assoc = event.assoc
    calling, address = _peer(event)
    called = assoc.acceptor.ae_title
    requested = getattr(assoc.requestor.primitive, "called_ae_title", None) or ""
    allowed = assoc.ae.require_calling_aet
    if allowed and calling not in allowed:
        reason = "calling AE title not recognised"
    elif requested.strip() != called.strip():
        reason = "called AE title not recognised"
    else:
        reason = "too many associations"
    log.warning(
        "association rejected from %s at %s (called %r): %s", calling, address, requested, reason
    )
    try:
        with db.unit_of_work() as session:
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.SECURITY_ALERT,
                    action="association_rejected",
                    outcome=AuditOutcome.MINOR_FAILURE,
                    actor=calling,
                    source_address=address,
                    target_class="AE",
                    target_id=requested.strip(),
                    reason=reason,
                ),
            )
    except Exception:
        # The rejection has already been sent; failing to audit it must not crash the thread.
        log.exception("could not write the audit event for a rejected association")
