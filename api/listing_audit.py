"""Query audit events (PS3.15 A.5.3.2, 110112) for listings that show patient data.

Which GET routes show patient data, and how each is audited:

- ``/api/studies`` (search): one Query per request (services/query/studies.py).
- ``/api/orders``: one Query per request. Narrowed to a patient the service
  writes it (with ``patient_id``); otherwise this module, with the same action
  and the query keys.
- ``/api/reconciliation``: the same as orders.
- ``/api/reports``: one Query per request (services/reporting/reports.py); no patient
  names, but study UIDs and accession numbers.
- ``/api/worklist``: patient names and ids on every item, and polled by every
  reading workstation about once a second. The first listing of a query by a
  user from an address is audited at once; the same listing repeated within
  ``WORKLIST_AUDIT_INTERVAL`` is counted, and the count goes in the next event
  of that listing. A row per poll would be ~86,000 rows a day per screen, each
  a write taking SQLite's one writer lock from C-STORE ingest, for no more
  knowledge: who read which queue, from where, how often, and when.
- Single records (``/api/orders/{id}``, ``/api/studies/{id}``,
  ``/api/worklist/{id}``, ``/api/reports/{id}`` and its versions): audited by
  their services as record accesses. ``/api/audit-events``: Audit Log Used
  (110101).
- No patient data, not audited as queries: ``/api/changes`` and
  ``/api/events`` (ids, states and flags only: db/changes.py), users,
  imaging centers, modalities, turnaround (aggregates), ``/api/me``, health,
  metrics.

Each event carries the query's parameters (what the caller sent; a patient
name only where a patient-narrowed query already recorded it), the number of
matches and the number returned, never the results.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from dicom_node.domain.audit import TargetKind, query_event
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor

WORKLIST_AUDIT_INTERVAL = 300.0
# distinct (user, address, query) listings remembered; the oldest go first
_MAX_REMEMBERED = 10_000


def record_listing(
    session: Session,
    *,
    principal: Principal,
    action: str,
    target_class: str,
    query: Mapping[str, Any],
    matches: int,
    returned: int,
    source_address: str | None,
    repeats: int = 0,
) -> None:
    """One 110112 Query event for a listing: its parameters and counts."""
    details: dict[str, Any] = {
        "query": {name: value for name, value in query.items() if value not in (None, [], ())},
        "matches": matches,
        "returned": returned,
    }
    if repeats:
        details["repeats_since_last_event"] = repeats
    record_audit_event(
        session,
        query_event(
            action,
            user_actor(principal, source_address),
            # a kind the vocabulary names (ValueError otherwise)
            TargetKind(target_class),
            details=details,
        ),
    )


class RepeatedListingAudit:
    """Which repeated listings are due an audit event (per process, in memory).

    ``due(key)`` is None while the key was audited less than ``interval`` ago
    (the call is counted), else the number of calls counted since its last
    event (the caller writes one now, and calls ``not_written`` if it could
    not: the key is due again, with its count).
    """

    def __init__(self, interval: float = WORKLIST_AUDIT_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def due(self, key: Hashable, *, now: float | None = None) -> int | None:
        moment = time.monotonic() if now is None else now
        with self._lock:
            entry = self._last.get(key)
            if entry is not None and moment - entry[0] < self.interval:
                self._last[key] = (entry[0], entry[1] + 1)
                return None
            self._last[key] = (moment, 0)
            self._last.move_to_end(key)
            while len(self._last) > _MAX_REMEMBERED:
                self._last.popitem(last=False)
            return entry[1] if entry is not None else 0

    def not_written(self, key: Hashable, repeats: int) -> None:
        """The event ``due(key)`` asked for (with ``repeats``) was not written:
        the key is due again at its next call, which reports ``repeats`` and
        the calls counted meanwhile (served while the write was under way).
        Otherwise the listings of the next ``interval`` would show patient data
        with no event at all."""
        with self._lock:
            entry = self._last.get(key)
            counted = entry[1] if entry is not None else 0
            self._last[key] = (-math.inf, repeats + counted)
