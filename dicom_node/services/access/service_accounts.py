"""Service accounts and their API keys, as an admin manages them.

A service account is a ``users`` row of kind ``service`` (domain/api_keys.py):
it holds a role of the permission table (never admin), so everything that
names a user (the audit trail's actor, ownership rules) works for it as for a
person; it has no password (sign-in refuses it) and calls the API with keys.

A key is made here and shown once: the database keeps its SHA-256 and its
first characters (``prefix``), so neither a backup nor this listing gives it
back. It expires (``api_key_default_days`` when the admin gives no lifetime,
at most ``api_key_max_days``) and can be revoked. Making and revoking a key
are Security Alerts (110113); creating and changing an account are User
Authentication events (110114), like a person's account. How a key is checked
on each request: services/access/api_keys.py.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import ApiKey, User
from dicom_node.db.types import utcnow
from dicom_node.domain.api_keys import (
    KEY_PREFIX,
    SCOPE_PERMISSIONS,
    SHOWN_LENGTH,
    KeyScope,
    UserKind,
    parse_scopes,
)
from dicom_node.domain.audit import Actor, TargetKind, authentication_event, security_event
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import AlreadyExists, Conflict, InvalidValue, NotFound
from dicom_node.domain.permissions import allowed
from dicom_node.services.access.users import SERVICE_ADMIN, checked_username
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.listing import Listed

# not an argon2 hash: no password verifies against it (and sign-in refuses
# service accounts before trying, services/access/auth.py)
NO_PASSWORD = "!service-account"  # noqa: S105 (a marker that is no hash)


@dataclass(frozen=True, slots=True)
class ServiceAccountInfo:
    id: int
    name: str
    role: Role
    description: str | None
    is_active: bool
    created_at: datetime | None
    active_keys: int = 0


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: int
    account_id: int
    prefix: str
    scopes: tuple[KeyScope, ...]
    label: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_from: str | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``key`` is the secret, returned this once and never stored."""

    key: str
    info: ApiKeyInfo


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_service_account(
    session: Session, *, name: str, role: str, description: str | None = None, actor: Actor
) -> ServiceAccountInfo:
    """A new service account (no password), audited as 110114 ``service_account_created``."""
    username = checked_username(name, field="name")
    role_value = _role(role)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists(f"an account named {username!r} already exists")
    user = User(
        username=username,
        password_hash=NO_PASSWORD,
        role=role_value.value,
        display_name=(description or "").strip() or None,
        is_active=True,
        kind=UserKind.SERVICE.value,
    )
    session.add(user)
    session.flush()
    record_audit_event(
        session,
        authentication_event(
            "service_account_created", actor, user.id, details={"after": _audited(user)}
        ),
    )
    return _account_info(session, user)


def list_service_accounts(
    session: Session, *, is_active: bool | None = None, offset: int = 0, limit: int = 50
) -> Listed[ServiceAccountInfo]:
    query = select(User).where(User.kind == UserKind.SERVICE.value)
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    users = session.scalars(query.order_by(User.username).offset(offset).limit(limit)).all()
    return Listed(items=[_account_info(session, user) for user in users], total=total)


def get_service_account(session: Session, account_id: int) -> ServiceAccountInfo:
    return _account_info(session, _load(session, account_id))


def find_service_account(session: Session, name: str) -> ServiceAccountInfo:
    user = session.scalar(
        select(User).where(
            User.username == name.strip().lower(), User.kind == UserKind.SERVICE.value
        )
    )
    if user is None:
        raise NotFound(f"no service account {name!r}")
    return _account_info(session, user)


def update_service_account(
    session: Session, account_id: int, *, changes: dict[str, Any], actor: Actor
) -> ServiceAccountInfo:
    """Change ``description`` or ``is_active``. A deactivated account's keys
    are refused until it is active again (they are not revoked: deactivating
    is the switch an admin flips while looking into an incident)."""
    unknown = set(changes) - {"description", "is_active"}
    if unknown:
        raise InvalidValue(f"not editable: {', '.join(sorted(unknown))}", field=min(unknown))
    user = _load(session, account_id, lock=True)
    before = _audited(user)
    if "description" in changes:
        value = changes["description"]
        user.display_name = value.strip() or None if isinstance(value, str) else None
    if changes.get("is_active") is not None:
        user.is_active = bool(changes["is_active"])
    after = _audited(user)
    if after != before:
        session.flush()
        changed = [name for name in after if before[name] != after[name]]
        record_audit_event(
            session,
            authentication_event(
                "service_account_updated",
                actor,
                user.id,
                details={
                    "before": {name: before[name] for name in changed},
                    "after": {name: after[name] for name in changed},
                },
            ),
        )
    return _account_info(session, user)


def issue_key(
    session: Session,
    account_id: int,
    *,
    scopes: list[KeyScope] | list[str],
    expires_in_days: int | None,
    default_days: int,
    max_days: int,
    label: str | None = None,
    actor: Actor,
    now: datetime | None = None,
) -> IssuedKey:
    """A new key for an active account: 256 random bits after ``dnk_``.

    Every scope must name permissions the account's role holds (a scope the
    role cannot use would be a key that silently does nothing); at least one.
    Audited as a Security Alert (110113 ``api_key_created``), without the key.
    """
    moment = now or utcnow()
    user = _load(session, account_id, lock=True)
    if not user.is_active:
        raise Conflict("the service account is deactivated", current="inactive")
    wanted = _scopes(scopes, Role(user.role))
    days = default_days if expires_in_days is None else expires_in_days
    if not 1 <= days <= max_days:
        raise InvalidValue(
            f"a key lives 1 to {max_days} days (api_key_max_days)", field="expires_in_days"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        user_id=user.id,
        key_sha256=key_digest(key),
        prefix=key[:SHOWN_LENGTH],
        scopes=" ".join(scope.value for scope in wanted),
        label=(label or "").strip() or None,
        created_at=moment,
        created_by_user_id=actor.user_id,
        expires_at=moment + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    info = _key_info(row)
    record_audit_event(
        session,
        security_event(
            "api_key_created",
            actor,
            TargetKind.USER,
            user.id,
            details=_key_details(info) | {"expires_at": info.expires_at.isoformat()},
        ),
    )
    return IssuedKey(key=key, info=info)


def list_keys(session: Session, account_id: int) -> list[ApiKeyInfo]:
    """Every key of the account, newest first, revoked and expired ones included."""
    _load(session, account_id)
    rows = session.scalars(
        select(ApiKey).where(ApiKey.user_id == account_id).order_by(ApiKey.id.desc())
    ).all()
    return [_key_info(row) for row in rows]


def revoke_key(
    session: Session,
    account_id: int,
    key_id: int,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> ApiKeyInfo:
    """Revoke the key: refused from the next request on. Revoking a revoked key
    changes nothing and records nothing. Audited (110113 ``api_key_revoked``)."""
    row = session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == account_id).with_for_update()
    )
    if row is None:
        raise NotFound(f"no key {key_id} of service account {account_id}")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.flush()
        record_audit_event(
            session,
            security_event(
                "api_key_revoked",
                actor,
                TargetKind.USER,
                account_id,
                details=_key_details(_key_info(row)),
            ),
        )
    return _key_info(row)


def _scopes(scopes: list[KeyScope] | list[str], role: Role) -> tuple[KeyScope, ...]:
    wanted: list[KeyScope] = []
    for value in scopes:
        try:
            scope = KeyScope(value)
        except ValueError:
            known = ", ".join(member.value for member in KeyScope)
            raise InvalidValue(
                f"unknown scope {value!r} (one of: {known})", field="scopes"
            ) from None
        if scope not in wanted:
            wanted.append(scope)
    if not wanted:
        raise InvalidValue("a key needs at least one scope", field="scopes")
    for scope in wanted:
        missing = [p.value for p in SCOPE_PERMISSIONS[scope] if not allowed(role, p)]
        if missing:
            raise InvalidValue(
                f"scope {scope.value} needs {', '.join(missing)}, which role {role.value} "
                "does not hold",
                field="scopes",
            )
    return tuple(wanted)


def _role(value: str) -> Role:
    try:
        role = Role(value)
    except ValueError:
        known = ", ".join(member.value for member in Role if member is not Role.ADMIN)
        raise InvalidValue(f"unknown role {value!r} (one of: {known})", field="role") from None
    if role is Role.ADMIN:
        raise InvalidValue(SERVICE_ADMIN, field="role")
    return role


def _load(session: Session, account_id: int, *, lock: bool = False) -> User:
    query = select(User).where(User.id == account_id, User.kind == UserKind.SERVICE.value)
    user = session.scalar(query.with_for_update() if lock else query)
    if user is None:
        raise NotFound(f"no service account {account_id}")
    return user


def _audited(user: User) -> dict[str, Any]:
    return {
        "name": user.username,
        "role": user.role,
        "description": user.display_name,
        "is_active": user.is_active,
    }


def _key_details(info: ApiKeyInfo) -> dict[str, Any]:
    return {
        "key_id": info.id,
        "prefix": info.prefix,
        "scopes": [scope.value for scope in info.scopes],
        "label": info.label,
    }


def _account_info(session: Session, user: User) -> ServiceAccountInfo:
    moment = utcnow()
    active = session.scalar(
        select(func.count(ApiKey.id)).where(
            ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None), ApiKey.expires_at > moment
        )
    )
    return ServiceAccountInfo(
        id=user.id,
        name=user.username,
        role=Role(user.role),
        description=user.display_name,
        is_active=user.is_active,
        created_at=user.created_at,
        active_keys=int(active or 0),
    )


def _key_info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        account_id=row.user_id,
        prefix=row.prefix,
        scopes=parse_scopes(row.scopes),
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        last_used_from=row.last_used_from,
    )
