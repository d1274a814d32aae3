"""Sign-in, bearer tokens and lock-out for the HTTP API.

Tokens are 256-bit random strings; the database keeps only their SHA-256, so
a leaked backup does not sign anyone in. Every failed sign-in is audited
(110114, failure outcome); ``max_failures`` failures in a row lock the account
for ``lockout``, during which even the right password is refused. Unknown
usernames get the same answer and the same argon2 cost as wrong passwords, so a
caller cannot probe which accounts exist.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import ApiToken, User
from dicom_node.db.types import utcnow
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome, Role
from dicom_node.domain.errors import AuthenticationFailed
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit import record_audit_event
from dicom_node.services.passwords import dummy_hash, hash_password, needs_rehash, verify_password


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    token_ttl: timedelta
    max_failures: int
    lockout: timedelta


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

    Three steps, so that the argon2 verification (tens of milliseconds, on
    purpose) runs outside any transaction: on SQLite a write transaction holds
    the one writer lock that C-STORE ingest queues on too. Every path (unknown
    user, locked account, wrong password) costs one verification and gives the
    same message, so neither the answer nor its timing tells whether an account
    exists or is locked; the audit event records which it was. A failure is
    committed (its count and its audit event must stay) before the error is
    raised.
    """
    name = username.strip().lower()
    with db.read() as session:
        credentials = _load_credentials(session, name)
    verified = verify_password(credentials.password_hash, password)
    failure: AuthenticationFailed | None = None
    with db.unit_of_work() as session:
        try:
            return _record(
                session,
                name,
                credentials,
                verified=verified,
                password=password,
                policy=policy,
                source_address=source_address,
                moment=now or utcnow(),
            )
        except AuthenticationFailed as exc:
            failure = exc
    raise failure


def _load_credentials(session: Session, name: str) -> _Credentials:
    row = session.execute(select(User.id, User.password_hash).where(User.username == name)).first()
    if row is None:
        return _Credentials(user_id=None, password_hash=dummy_hash())
    return _Credentials(user_id=row[0], password_hash=row[1])


def _record(
    session: Session,
    name: str,
    credentials: _Credentials,
    *,
    verified: bool,
    password: str,
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
    if user.locked_until is not None and user.locked_until > moment:
        _audit_failure(session, name, user, source_address, "account locked")
        raise AuthenticationFailed(SIGN_IN_FAILED)
    # a password reset between the check and here: the old password no longer counts
    verified = verified and user.password_hash == credentials.password_hash
    if not verified or not user.is_active:
        user.failed_sign_ins = (user.failed_sign_ins or 0) + 1
        reason = "inactive account" if user.is_active is False else "wrong password"
        if user.failed_sign_ins >= policy.max_failures:
            user.locked_until = moment + policy.lockout
            user.failed_sign_ins = 0
            reason += "; account locked"
        _audit_failure(session, name, user, source_address, reason)
        raise AuthenticationFailed(SIGN_IN_FAILED)
    user.failed_sign_ins = 0
    user.locked_until = None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    token = secrets.token_urlsafe(32)
    expires_at = moment + policy.token_ttl
    session.add(
        ApiToken(
            token_sha256=_digest(token), user_id=user.id, issued_at=moment, expires_at=expires_at
        )
    )
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.USER_AUTHENTICATION,
            action="sign_in",
            actor=user.username,
            actor_user_id=user.id,
            actor_role=user.role,
            source_address=source_address,
            target_class="User",
            target_id=str(user.id),
        ),
    )
    return IssuedToken(token=token, expires_at=expires_at, principal=_principal(user))


def _audit_failure(
    session: Session, username: str, user: User | None, source: str | None, reason: str
) -> None:
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.USER_AUTHENTICATION,
            action="sign_in_failed",
            outcome=AuditOutcome.MINOR_FAILURE,
            actor=username[:64],
            actor_user_id=user.id if user else None,
            source_address=source,
            target_class="User",
            target_id=str(user.id) if user else None,
            reason=reason,
        ),
    )


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Principal:
    """The principal a bearer token stands for, or AuthenticationFailed."""
    moment = now or utcnow()
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
    session.execute(
        update(ApiToken)
        .where(ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.USER_AUTHENTICATION,
            action="sign_out",
            actor=principal.username,
            actor_user_id=principal.user_id,
            actor_role=principal.role.value,
            source_address=source_address,
            target_class="User",
            target_id=str(principal.user_id),
        ),
    )
