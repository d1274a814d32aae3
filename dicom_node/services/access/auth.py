"""Sign-in, bearer tokens, lock-out and the purge of spent tokens, for the HTTP API.

Tokens are 256-bit random strings; the database keeps only their SHA-256, so
a leaked backup does not sign anyone in. Every failed sign-in is audited
(110114, failure outcome). Unknown usernames get the same answer and the same
argon2 cost as wrong passwords, so a caller cannot probe which accounts exist.

Lock-out, built so that an attacker cannot turn it against an account:

- Per account and source address (``sign_in_sources``): ``max_failures``
  failures in a row from one address lock the account *for that address* for
  ``lockout``. Failures sent from elsewhere do not lock the owner out at their
  own workstation (before, five requests every 15 minutes from anywhere kept
  any account, admins included, locked). IPv6 addresses count per /64, the
  block one host usually holds, so cycling through a host's addresses does not
  reset the count.
- Per account, for addresses it has not signed in from (a distributed attacker
  has many): failures from an address without a successful sign-in of this
  account in the last ``known_source_window`` count towards
  ``account_max_failures`` (ten times ``max_failures``); reaching it locks the
  account for such addresses for ``account_lockout`` (24 hours), audited as a
  Security Alert (110113). Addresses the account signed in from keep working.
  The count is not reset by a sign-in (the attacker would get a fresh allowance
  after each of the owner's sign-ins); it restarts at each lock and when an
  admin resets the password, which also lifts every lock of the account. So an
  attacker with any number of addresses gets at most ``account_max_failures``
  guesses per ``account_lockout``: 50 a day with the default settings.

Behind a reverse proxy every request comes from the proxy's address, unless
uvicorn is told to trust its X-Forwarded-For: then the per-address lock is a
per-account lock again, as before.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import ApiToken, SignInSource, User
from dicom_node.db.types import utcnow
from dicom_node.domain.api_keys import UserKind, looks_like_key
from dicom_node.domain.audit import Actor, TargetKind, authentication_event, security_event
from dicom_node.domain.enums import AuditOutcome, Role
from dicom_node.domain.errors import AuthenticationFailed, InvalidValue
from dicom_node.domain.permissions import Principal
from dicom_node.services.access.api_keys import key_principal
from dicom_node.services.access.passwords import (
    PasswordHashingBusy,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor

log = logging.getLogger(__name__)

# failures from addresses an account has not signed in from, per max_failures,
# before the account is locked for such addresses
ACCOUNT_FAILURES_PER_ADDRESS_LOCK = 10
ACCOUNT_LOCKOUT = timedelta(hours=24)
# an address the account signed in from this recently is one of its own
KNOWN_SOURCE_WINDOW = timedelta(days=90)
# the column's width; a longer (non-IP) address is cut to it
_SOURCE_LENGTH = 64
_UNKNOWN_SOURCE = "unknown"
# control characters, NUL included: never in a username, replaced in the audit trail
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    token_ttl: timedelta
    max_failures: int
    lockout: timedelta
    # None: ACCOUNT_FAILURES_PER_ADDRESS_LOCK x max_failures
    account_max_failures: int | None = None
    account_lockout: timedelta = ACCOUNT_LOCKOUT
    known_source_window: timedelta = field(default=KNOWN_SOURCE_WINDOW)

    @property
    def account_threshold(self) -> int:
        if self.account_max_failures is not None:
            return self.account_max_failures
        return self.max_failures * ACCOUNT_FAILURES_PER_ADDRESS_LOCK


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime
    principal: Principal


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _principal(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        is_lead=user.is_lead,
        display_name=user.display_name,
    )


def source_key(address: str | None) -> str:
    """The address failures are counted under: an IPv4 address as it is (an
    IPv4-mapped IPv6 one as IPv4), an IPv6 address as its /64."""
    if not address:
        return _UNKNOWN_SOURCE
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_SOURCE_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


SIGN_IN_FAILED = (
    "sign-in failed: wrong username or password, or the account is locked after repeated failures"
)


@dataclass(frozen=True, slots=True)
class _Credentials:
    user_id: int | None
    password_hash: str


def sign_in(
    db: Database,
    *,
    username: str,
    password: str,
    policy: SignInPolicy,
    source_address: str | None,
    now: datetime | None = None,
) -> IssuedToken:
    """A new token for the user, or AuthenticationFailed (audited either way).

    Three steps, so that the argon2 work (tens of milliseconds, on purpose, and
    possibly a wait for a hashing slot: services/access/passwords.py) runs outside any
    transaction: on SQLite a write transaction holds the one writer lock that
    C-STORE ingest queues on too. Every path (unknown user, locked account,
    wrong password) costs one verification and gives the same message, so
    neither the answer nor its timing tells whether an account exists or is
    locked; the audit event records which it was. A failure is committed (its
    count and its audit event must stay) before the error is raised. No free
    hashing slot within the wait: PasswordHashingBusy, nothing recorded.
    """
    name = username.strip().lower()
    if _CONTROL.search(name):
        # no account has such a name (users.py allows a-z, 0-9, . _ -), and
        # PostgreSQL refuses a NUL even in a comparison: an unknown user
        credentials = _Credentials(user_id=None, password_hash=dummy_hash())
    else:
        with db.read() as session:
            credentials = _load_credentials(session, name)
    verified = verify_password(credentials.password_hash, password)
    new_hash = None
    if verified and needs_rehash(credentials.password_hash):
        try:
            new_hash = hash_password(password)
        except PasswordHashingBusy:
            new_hash = None  # re-hashed at a quieter sign-in
    failure: AuthenticationFailed | None = None
    with db.unit_of_work() as session:
        try:
            return _record(
                session,
                name,
                credentials,
                verified=verified,
                new_hash=new_hash,
                policy=policy,
                source_address=source_address,
                moment=now or utcnow(),
            )
        except AuthenticationFailed as exc:
            failure = exc
    raise failure


def _load_credentials(session: Session, name: str) -> _Credentials:
    row = session.execute(
        select(User.id, User.password_hash, User.kind).where(User.username == name)
    ).first()
    if row is None:
        return _Credentials(user_id=None, password_hash=dummy_hash())
    if row[2] == UserKind.SERVICE.value:
        # never signs in (its key is no password either); verified against the
        # dummy so the answer takes as long as for a person
        return _Credentials(user_id=row[0], password_hash=dummy_hash())
    return _Credentials(user_id=row[0], password_hash=row[1])


def _source_row(session: Session, user_id: int, key: str) -> SignInSource:
    """The account's failure record for the address (new if none); the caller
    holds the user row's lock, so no concurrent sign-in inserts the same one.
    A new one is not added to the session: a refused sign-in records nothing
    in it, and an attacker's new addresses must not leave a row each."""
    row = session.scalar(
        select(SignInSource)
        .where(SignInSource.user_id == user_id, SignInSource.source_address == key)
        .with_for_update()
    )
    if row is None:
        # added to the session only once there is something to record in it
        row = SignInSource(user_id=user_id, source_address=key, failed_sign_ins=0)
    return row


def _record(
    session: Session,
    name: str,
    credentials: _Credentials,
    *,
    verified: bool,
    new_hash: str | None,
    policy: SignInPolicy,
    source_address: str | None,
    moment: datetime,
) -> IssuedToken:
    user = (
        session.scalar(select(User).where(User.id == credentials.user_id).with_for_update())
        if credentials.user_id is not None
        else None
    )
    if user is None:
        _audit_failure(session, name, None, source_address, "unknown user")
        raise AuthenticationFailed(SIGN_IN_FAILED)
    source = _source_row(session, user.id, source_key(source_address))
    if source.locked_until is not None and source.locked_until > moment:
        _audit_failure(session, name, user, source_address, "account locked for this address")
        raise AuthenticationFailed(SIGN_IN_FAILED)
    known = (
        source.last_success_at is not None
        and source.last_success_at > moment - policy.known_source_window
    )
    if not known and user.locked_until is not None and user.locked_until > moment:
        _audit_failure(session, name, user, source_address, "account locked for new addresses")
        raise AuthenticationFailed(SIGN_IN_FAILED)
    # a password reset between the check and here: the old password no longer counts
    verified = verified and user.password_hash == credentials.password_hash
    service = user.kind == UserKind.SERVICE.value
    if not verified or not user.is_active or service:
        reason = "inactive account" if user.is_active is False else "wrong password"
        if service:
            reason = "service account: it calls with an API key, never signs in"
        reason += _count_failure(session, user, source, known, policy, source_address, moment)
        _audit_failure(session, name, user, source_address, reason)
        raise AuthenticationFailed(SIGN_IN_FAILED)
    session.add(source)
    source.failed_sign_ins = 0
    source.locked_until = None
    source.last_success_at = moment
    if new_hash is not None:
        user.password_hash = new_hash
    token = secrets.token_urlsafe(32)
    expires_at = moment + policy.token_ttl
    session.add(
        ApiToken(
            token_sha256=_digest(token), user_id=user.id, issued_at=moment, expires_at=expires_at
        )
    )
    record_audit_event(
        session,
        authentication_event(
            "sign_in", Actor.user(user.id, user.username, user.role, source_address), user.id
        ),
    )
    return IssuedToken(token=token, expires_at=expires_at, principal=_principal(user))


def _count_failure(
    session: Session,
    user: User,
    source: SignInSource,
    known: bool,
    policy: SignInPolicy,
    source_address: str | None,
    moment: datetime,
) -> str:
    """Count a failure for the address and, from an address the account has not
    signed in from, for the account; lock what reached its threshold. Returns
    what to add to the audit reason."""
    added = ""
    session.add(source)
    source.failed_sign_ins = (source.failed_sign_ins or 0) + 1
    source.last_failure_at = moment
    if source.failed_sign_ins >= policy.max_failures:
        source.locked_until = moment + policy.lockout
        source.failed_sign_ins = 0
        added += "; account locked for this address"
    if known:
        return added
    user.failed_sign_ins = (user.failed_sign_ins or 0) + 1
    if user.failed_sign_ins >= policy.account_threshold:
        failures = user.failed_sign_ins
        user.locked_until = moment + policy.account_lockout
        user.failed_sign_ins = 0
        added += "; account locked for new addresses"
        log.warning(
            "sign-in: user id %d locked for addresses it has not signed in from, after %d "
            "failures from such addresses",
            user.id,
            failures,
        )
        record_audit_event(
            session,
            security_event(
                "account_locked",
                Actor.claimant(user.username, user.id, source_address),
                TargetKind.USER,
                user.id,
                outcome=AuditOutcome.MINOR_FAILURE,
                reason=(
                    f"{failures} failed sign-ins from addresses the account has not signed "
                    "in from: locked for such addresses"
                ),
                details={"locked_until": user.locked_until.isoformat()},
            ),
        )
    return added


def clear_lockouts(session: Session, user_id: int) -> None:
    """Lift every lock of the account and reset its counts (a password reset)."""
    session.execute(
        update(User).where(User.id == user_id).values(failed_sign_ins=0, locked_until=None)
    )
    session.execute(
        update(SignInSource)
        .where(SignInSource.user_id == user_id)
        .values(failed_sign_ins=0, locked_until=None)
    )


def _audit_failure(
    session: Session, username: str, user: User | None, source: str | None, reason: str
) -> None:
    record_audit_event(
        session,
        authentication_event(
            "sign_in_failed",
            Actor.claimant(_CONTROL.sub("?", username)[:64], user.id if user else None, source),
            user.id if user else None,
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=reason,
        ),
    )


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Principal:
    """The principal a bearer token stands for, or AuthenticationFailed. A
    service account's key is checked too, read-only (``key_principal``): a
    request's first check goes through ``api_keys.authenticate_key``, which
    records the key's use."""
    moment = now or utcnow()
    if looks_like_key(token):
        return key_principal(session, token, now=moment)
    row = session.execute(
        select(User, ApiToken.expires_at, ApiToken.revoked_at)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_sha256 == _digest(token))
    ).first()
    if row is None:
        raise AuthenticationFailed("unknown token")
    user, expires_at, revoked_at = row
    if revoked_at is not None or expires_at <= moment:
        raise AuthenticationFailed("token expired or revoked; sign in again")
    if not user.is_active:
        raise AuthenticationFailed("account disabled")
    return _principal(user)


def sign_out(
    session: Session,
    token: str,
    *,
    principal: Principal,
    source_address: str | None = None,
    now: datetime | None = None,
) -> None:
    if principal.api_key_id is not None:
        # nothing to sign out of; an admin revokes a key (and an audited
        # "sign_out" of a service account would say something that did not happen)
        raise InvalidValue(
            "an API key is not signed out: an admin revokes it", field="Authorization"
        )
    session.execute(
        update(ApiToken)
        .where(ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    record_audit_event(
        session,
        authentication_event("sign_out", user_actor(principal, source_address), principal.user_id),
    )


# --------------------------------------------------------------------------- purge

# rows per DELETE: a purge after months never holds SQLite's write lock for long
PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PurgeResult:
    tokens_deleted: int
    sign_in_records_deleted: int

    def __str__(self) -> str:
        return (
            f"{self.tokens_deleted} expired or revoked tokens deleted, "
            f"{self.sign_in_records_deleted} stale sign-in address records deleted"
        )


def purge_spent_tokens(
    db: Database,
    *,
    now: datetime | None = None,
    known_source_window: timedelta = KNOWN_SOURCE_WINDOW,
    batch_size: int = PURGE_BATCH,
) -> PurgeResult:
    """Delete tokens that expired or were revoked (they can never sign anyone in
    again; sign-in and sign-out stay in the audit trail), and per-address
    sign-in records that no longer count: not locked, and neither a failure nor
    a sign-in within ``known_source_window``. ``batch_size`` rows per unit of
    work."""
    moment = now or utcnow()
    spent = or_(ApiToken.expires_at <= moment, ApiToken.revoked_at.is_not(None))
    tokens = _delete_batches(db, ApiToken.__table__, ApiToken.id, spent, batch_size)
    cutoff = moment - known_source_window
    stale = (
        or_(SignInSource.locked_until.is_(None), SignInSource.locked_until <= moment),
        or_(SignInSource.last_failure_at.is_(None), SignInSource.last_failure_at < cutoff),
        or_(SignInSource.last_success_at.is_(None), SignInSource.last_success_at < cutoff),
    )
    sources = _delete_batches(db, SignInSource.__table__, SignInSource.id, stale, batch_size)
    return PurgeResult(tokens, sources)


def _delete_batches(db: Database, table: Any, key: Any, condition: Any, batch_size: int) -> int:
    deleted = 0
    conditions = condition if isinstance(condition, tuple) else (condition,)
    while True:
        with db.unit_of_work() as session:
            ids = list(session.scalars(select(key).where(*conditions).limit(batch_size)))
            if ids:
                session.execute(delete(table).where(key.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted
