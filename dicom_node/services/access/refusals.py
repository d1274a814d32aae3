"""Refusals of unauthenticated DICOM peers, audited in aggregate.

A rejected association (calling or called AE title not recognised, too many
associations) and a request refused to a calling AE the service does not know
(``known_ae_required_for``) are Security Alerts (PS3.15 A.5.3.11, event type
Node Authentication). Written one row each, a peer retrying in a loop wrote
~78 rows a second without ever authenticating (issue 13, finding 10). Now, per
kind of refusal and peer address (the host: every connection has a new port):

- the first refusal is audited at once, as before (calling AE, called AE or
  service, reason; ``details.count`` = 1), so an operator sees an attack start;
- the ones that follow within the interval
  (``rejected_association_audit_interval_seconds``) are counted, and one event
  at the end of the interval carries their count, the AE titles and reasons
  seen, and the first and last times (``details.aggregated`` = true). The next
  interval starts then, so a sustained flood writes one row per peer and
  interval;
- an interval that ends with nothing counted forgets the peer: its next
  refusal is audited at once again.

Nothing is lost: ``details.count`` summed over the rows is the number of
refusals. Counts held back are written when the node stops (``close``).
Memory is bounded: at most ``max_peers`` peers are tracked at once; refusals
from further peers are counted in one overflow tally per kind (source address
``*``), written at the end of its interval, never at once. Counts are per
process (each DICOM worker process keeps its own).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dicom_node.db.engine import Database
from dicom_node.domain.audit import (
    Actor,
    AuditRecord,
    SecurityAlertType,
    TargetKind,
    security_event,
)
from dicom_node.domain.enums import AuditOutcome
from dicom_node.log_limit import LogLimiter
from dicom_node.services.audit.record import record_audit_event

log = logging.getLogger("dicom_node.audit")

# the two kinds of refusal (the audit event's action)
ASSOCIATION_REJECTED = "association_rejected"
REQUEST_REFUSED = "request_refused"
# an MPPS N-SET from another AE than the step's creator: a known peer asking for
# what only another may do, not a failed authentication
MPPS_SET_REFUSED = "mpps_set_refused"
_EVENT_TYPES = {MPPS_SET_REFUSED: SecurityAlertType.USE_OF_RESTRICTED_FUNCTION}

# peers tracked at once: past it, one overflow tally per kind
DEFAULT_MAX_PEERS = 256
# distinct AE titles (or addresses, in the overflow tally) an aggregated event names;
# the rest are only counted
MAX_LISTED = 8
OVERFLOW = "*"

_failures = LogLimiter(log)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused association or request, as the SCP saw it."""

    action: str  # ASSOCIATION_REJECTED or REQUEST_REFUSED
    host: str  # the peer's IP address
    port: int
    calling_ae: str
    # what was refused: the called AE title (AE), a service (DICOM_SERVICE), an
    # MPPS step (PROCEDURE_STEP)
    target_class: TargetKind
    target_id: str
    reason: str


@dataclass(slots=True)
class _Tally:
    """Refusals of one kind from one peer since its interval started."""

    started: float  # monotonic
    held: int = 0  # counted, not yet audited
    first_at: datetime | None = None
    last_at: datetime | None = None
    target_class: TargetKind | None = None
    # what an aggregated event lists, MAX_LISTED distinct values each; the others
    # are counted in other_*
    calling: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # a few texts of ours
    addresses: dict[str, int] = field(default_factory=dict)  # the overflow tally's
    other_calling: int = 0
    other_targets: int = 0
    other_addresses: int = 0

    def add(self, refusal: Refusal, at: datetime, *, overflow: bool) -> None:
        self.held += 1
        self.first_at = self.first_at or at
        self.last_at = at
        self.target_class = refusal.target_class
        self.other_calling += not _count(self.calling, refusal.calling_ae)
        self.other_targets += not _count(self.targets, refusal.target_id)
        _count(self.reasons, refusal.reason)
        if overflow:
            self.other_addresses += not _count(self.addresses, refusal.host)


def _count(counter: dict[str, int], key: str) -> bool:
    """Count ``key``, if it is listed or there is room to list it; False if not."""
    if key in counter or len(counter) < MAX_LISTED:
        counter[key] = counter.get(key, 0) + 1
        return True
    return False


class RefusalAudit:
    """Audits refusals as the module doc says; safe to share between threads."""

    def __init__(
        self,
        db: Database,
        *,
        interval_seconds: float,
        max_peers: int = DEFAULT_MAX_PEERS,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``background``: a thread writes each interval's count when it ends; without
        it (tests with their own ``clock``) ``release_due`` does, when called."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._db = db
        self._interval = interval_seconds
        self._max_peers = max_peers
        self._clock = clock
        self._background = background
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._next_due = math.inf  # earliest end of an interval holding a count
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def record(self, refusal: Refusal) -> None:
        """Count one refusal; audit it at once if it is its peer's first."""
        now, at = self._clock(), datetime.now(UTC)
        with self._cond:
            # once closed (the node stops) each is written as it comes, never dropped
            immediate = self._closed or self._count(refusal, now, at)
        if immediate:
            self._write([_first_event(refusal, at)], refusals=1)

    def _count(self, refusal: Refusal, now: float, at: datetime) -> bool:
        key = (refusal.action, refusal.host)
        tally = self._tallies.get(key)
        if tally is not None and not tally.held and now - tally.started >= self._interval:
            # its last interval ended quiet (not forgotten yet): a new first refusal
            tally.started = now
            return True
        if tally is None and len(self._tallies) >= self._max_peers:
            self._forget_ended(now)
        if tally is None and len(self._tallies) < self._max_peers:
            # a new peer, or one whose last interval ended quiet: audited at once
            self._tallies[key] = _Tally(started=now)
            return True
        overflow = tally is None
        if tally is None:
            # too many peers tracked: counted in the kind's overflow tally (never
            # at once, or a spread of addresses would write a row each again)
            overflow_key = (refusal.action, OVERFLOW)
            tally = self._tallies.get(overflow_key)
            if tally is None:
                tally = self._tallies[overflow_key] = _Tally(started=now)
        tally.add(refusal, at, overflow=overflow)
        due = tally.started + self._interval
        if due < self._next_due:
            self._next_due = due
            self._start_or_wake()
        return False

    def _forget_ended(self, now: float) -> None:
        """Drop peers whose interval ended with nothing counted (room for new ones)."""
        for key, tally in list(self._tallies.items()):
            if not tally.held and now - tally.started >= self._interval:
                del self._tallies[key]

    def _start_or_wake(self) -> None:
        if not self._background:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="refusal-audit", daemon=True)
            self._thread.start()
        else:
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self._clock()
                if now < self._next_due:
                    wait = None if math.isinf(self._next_due) else self._next_due - now
                    self._cond.wait(wait)
                    continue
            self.release_due()

    def release_due(self) -> int:
        """Audit the counts of intervals that have ended; forget quiet peers.
        Returns the number of events written."""
        now, events = self._clock(), []
        with self._cond:
            next_due = math.inf
            for key, tally in list(self._tallies.items()):
                ended = now - tally.started >= self._interval
                if tally.held and ended:
                    events.append(self._release(key, tally, now))
                elif tally.held:
                    next_due = min(next_due, tally.started + self._interval)
                elif ended:
                    del self._tallies[key]
            self._next_due = next_due
        return self._write_released(events)

    def flush(self) -> int:
        """Audit every count held, whether its interval has ended or not."""
        now, events = self._clock(), []
        with self._cond:
            for key, tally in list(self._tallies.items()):
                if tally.held:
                    events.append(self._release(key, tally, now))
            self._next_due = math.inf
        return self._write_released(events)

    def close(self) -> int:
        """Stop the background thread and audit every count held (the node stops).
        Refusals recorded after this are audited one row each."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        return self.flush()

    def _release(self, key: tuple[str, str], tally: _Tally, now: float) -> tuple[AuditRecord, int]:
        """The tally's event; a new interval starts (an interval that then ends
        with nothing counted forgets the peer)."""
        event = _aggregated_event(key, tally, self._interval)
        held = tally.held
        if key[1] == OVERFLOW:
            del self._tallies[key]
        else:
            self._tallies[key] = _Tally(started=now)
        return event, held

    def _write_released(self, released: list[tuple[AuditRecord, int]]) -> int:
        if released:
            self._write([event for event, _ in released], refusals=sum(n for _, n in released))
        return len(released)

    def _write(self, events: list[AuditRecord], *, refusals: int) -> None:
        try:
            with self._db.unit_of_work() as session:
                for event in events:
                    record_audit_event(session, event)
        except Exception as exc:
            # the refusal has been answered; losing its audit must not crash a thread
            _failures.error(
                "audit-write",
                "could not write the audit events of %d refused associations or requests: %s",
                refusals,
                type(exc).__name__,
            )


def _event_type(action: str) -> str:
    """PS3.15 A.5.3.11: the Security Alert's event type for this kind of refusal."""
    return _EVENT_TYPES.get(action, SecurityAlertType.NODE_AUTHENTICATION).value


def _first_event(refusal: Refusal, at: datetime) -> AuditRecord:
    return security_event(
        refusal.action,
        Actor.peer(refusal.calling_ae, f"{refusal.host}:{refusal.port}"),
        refusal.target_class,
        refusal.target_id,
        outcome=AuditOutcome.MINOR_FAILURE,
        reason=refusal.reason,
        details={
            "event_type": _event_type(refusal.action),
            "count": 1,
            "at": at.isoformat(),
        },
    )


def _aggregated_event(key: tuple[str, str], tally: _Tally, interval: float) -> AuditRecord:
    action, host = key

    def only(counter: dict[str, int], others: int) -> str | None:
        return next(iter(counter)) if len(counter) == 1 and not others else None

    details: dict[str, object] = {
        "event_type": _event_type(action),
        "count": tally.held,
        "aggregated": True,
        "interval_seconds": interval,
        "first_at": tally.first_at.isoformat() if tally.first_at else None,
        "last_at": tally.last_at.isoformat() if tally.last_at else None,
        "calling_ae_titles": tally.calling,
        "targets": tally.targets,
        "reasons": tally.reasons,
    }
    if host == OVERFLOW:
        details["addresses"] = tally.addresses
    for name, others in (
        ("other_calling_ae_titles", tally.other_calling),
        ("other_targets", tally.other_targets),
        ("other_addresses", tally.other_addresses),
    ):
        if others:
            details[name] = others
    assert tally.target_class is not None  # a tally is made by its first refusal
    return security_event(
        action,
        # one AE title seen: the peer's; several: in the details, none named here
        Actor.peer(only(tally.calling, tally.other_calling), host),
        tally.target_class,
        only(tally.targets, tally.other_targets),
        outcome=AuditOutcome.MINOR_FAILURE,
        reason=only(tally.reasons, 0),
        details=details,
    )
