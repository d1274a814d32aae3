"""A service account's API key on each request: who it stands for, and its audit.

A key is checked like a sign-in token (one indexed SELECT by its SHA-256) and
gives a Principal whose ``scopes`` narrow what the account's role allows.

Auditing every request made with a key would bury the trail: a viewer opening
one CT study fetches hundreds of frames, each a request. So:

- what the request does is audited by the route as for anyone (the 110103 of
  the studies read, the 110112 of a query, the 110104 of a store...), with the
  service account as actor;
- the use of the key itself is a 110114 ``api_key_used`` event the first time
  the key is used, then at most once per ``USE_RECORD_INTERVAL`` while it is in
  use; ``last_used_at``/``last_used_from`` are written in the same transaction.
  The conditional UPDATE makes this once per interval across every process and
  node sharing the database, not once per process;
- a refused key (unknown, revoked, expired, account deactivated) is a 110114
  ``api_key_refused`` event with failure outcome, at most once per key (the
  same bytes) per ``REFUSAL_RECORD_INTERVAL`` per process: a viewer left
  running with a revoked key must not write one event per frame. The count of
  refusals not recorded is in the next recorded event's details.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import ApiKey, User
from dicom_node.db.types import utcnow
from dicom_node.domain.api_keys import KEY_PATTERN, SHOWN_LENGTH, UserKind, parse_scopes
from dicom_node.domain.api_keys import permissions_of as scope_permissions
from dicom_node.domain.audit import Actor, authentication_event
from dicom_node.domain.enums import AuditOutcome, Role
from dicom_node.domain.errors import AuthenticationFailed
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event

log = logging.getLogger(__name__)

USE_RECORD_INTERVAL = timedelta(minutes=5)
REFUSAL_RECORD_INTERVAL = timedelta(minutes=5)
# keys whose last refusal is remembered per process (oldest forgotten first)
_REFUSALS_REMEMBERED = 4096

REFUSED = "API key unknown, revoked or expired, or its account is deactivated"


class _RefusalThrottle:
    """When each refused key was last recorded, in this process."""

    def __init__(self, interval: timedelta, capacity: int) -> None:
        self._interval = interval.total_seconds()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def due(self, which: str) -> int | None:
        """The refusals skipped since the last one recorded, if this one is to
        be recorded; None if it is not (then it is counted)."""
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(which)
            if last is not None and now - last[0] < self._interval:
                self._seen[which] = (last[0], last[1] + 1)
                return None
            self._seen[which] = (now, 0)
            self._seen.move_to_end(which)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return last[1] if last is not None else 0


_refusals = _RefusalThrottle(REFUSAL_RECORD_INTERVAL, _REFUSALS_REMEMBERED)


@dataclass(frozen=True, slots=True)
class _Accepted:
    principal: Principal
    prefix: str
    # the use to record: never recorded, or last recorded an interval ago
    due: bool
    first: bool


@dataclass(frozen=True, slots=True)
class _Refused:
    actor: Actor
    key_id: int | None
    prefix: str | None
    reason: str


def authenticate_key(
    db: Database, key: str, *, source_address: str | None, now: datetime | None = None
) -> Principal:
    """The service account ``key`` stands for, limited to the key's scopes; or
    AuthenticationFailed (audited, see the module's docstring)."""
    moment = now or utcnow()
    digest = hashlib.sha256(key.encode()).hexdigest()
    with db.read() as session:
        found = _check(session, key, digest, source_address, moment)
    if isinstance(found, _Refused):
        _record_refusal(db, digest, found)
        raise AuthenticationFailed(REFUSED)
    if found.due:
        _record_use(db, found, source_address, moment)
    return found.principal


def key_principal(session: Session, key: str, *, now: datetime | None = None) -> Principal:
    """A key checked again, read-only and unaudited: a long response (the live
    event stream) re-checks its credential on every poll, and the request that
    opened it already went through ``authenticate_key``."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    found = _check(session, key, digest, None, now or utcnow())
    if isinstance(found, _Refused):
        raise AuthenticationFailed(REFUSED)
    return found.principal


def _check(
    session: Session, key: str, digest: str, source_address: str | None, moment: datetime
) -> _Accepted | _Refused:
    if KEY_PATTERN.fullmatch(key) is None:
        # nothing of a malformed key reaches the trail: it may be anything
        return _Refused(Actor.claimant("?", None, source_address), None, None, "malformed key")
    prefix = key[:SHOWN_LENGTH]
    row = session.execute(
        select(User, ApiKey)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.key_sha256 == digest)
    ).first()
    if row is None:
        return _Refused(Actor.claimant(prefix, None, source_address), None, prefix, "unknown key")
    user, row_key = row
    reason = _refusal(user, row_key, moment)
    if reason is not None:
        actor = Actor.claimant(user.username, user.id, source_address)
        return _Refused(actor, row_key.id, prefix, reason)
    principal = Principal(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        display_name=user.display_name,
        scopes=scope_permissions(parse_scopes(row_key.scopes)),
        api_key_id=row_key.id,
    )
    last = row_key.last_used_at
    return _Accepted(
        principal,
        prefix,
        due=last is None or last <= moment - USE_RECORD_INTERVAL,
        first=last is None,
    )


def _refusal(user: User, key: ApiKey, moment: datetime) -> str | None:
    if key.revoked_at is not None:
        return "key revoked"
    if key.expires_at <= moment:
        return "key expired"
    if not user.is_active:
        return "service account deactivated"
    if user.kind != UserKind.SERVICE.value:
        return "not a service account"
    return None


def _record_use(
    db: Database, accepted: _Accepted, source_address: str | None, moment: datetime
) -> None:
    """Last use, and its audit event, unless another request (any process)
    recorded one within the interval meanwhile."""
    principal = accepted.principal
    with db.unit_of_work() as session:
        result = session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == principal.api_key_id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at <= moment - USE_RECORD_INTERVAL,
                ),
            )
            .values(last_used_at=moment, last_used_from=source_address)
        )
        if int(getattr(result, "rowcount", 0) or 0) != 1:
            return
        record_audit_event(
            session,
            authentication_event(
                "api_key_used",
                Actor.user(
                    principal.user_id, principal.username, principal.role.value, source_address
                ),
                principal.user_id,
                details={
                    "key_id": principal.api_key_id,
                    "prefix": accepted.prefix,
                    "first_use": accepted.first,
                },
            ),
        )


def _record_refusal(db: Database, digest: str, refused: _Refused) -> None:
    # per database as well: one process may serve several (the tests do)
    skipped = _refusals.due(f"{db.url} {digest}")
    if skipped is None:
        return
    details: dict[str, object] = {"key_id": refused.key_id, "prefix": refused.prefix}
    if skipped:
        details["refusals_not_recorded"] = skipped
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            authentication_event(
                "api_key_refused",
                refused.actor,
                refused.actor.user_id,
                outcome=AuditOutcome.MINOR_FAILURE,
                reason=refused.reason,
                details=details,
            ),
        )
