"""User accounts: creation, listing, changes and password resets (argon2id).

Every change is audited with before and after; passwords and their hashes never
appear in an answer or an audit event. A password reset revokes the user's
bearer tokens, so a leaked password stops working at once, and lifts the
account's sign-in locks (services/access/auth.py).

A caller holding a write transaction hashes first (``hash_password``) and
passes ``password_hash``: the argon2 work, and any wait for a hashing slot
(services/access/passwords.py), then happens before the transaction, not while it
holds SQLite's one writer lock or a row lock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import ApiToken, User
from dicom_node.db.types import utcnow
from dicom_node.domain.api_keys import UserKind
from dicom_node.domain.audit import Actor, authentication_event
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import AlreadyExists, Conflict, InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.services.access import passwords
from dicom_node.services.access.auth import clear_lockouts
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.listing import Listed, escape_like, order_by

MIN_PASSWORD_LENGTH = 10
# a service account holds a role short of admin: its keys never manage the node
SERVICE_ADMIN = "a service account cannot hold the admin role"
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    username: str
    role: Role
    email: str | None
    display_name: str | None
    is_active: bool
    is_lead: bool = False
    specialty: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


# what an audit event shows of a user: never the password hash
_AUDITED = ("username", "role", "email", "display_name", "specialty", "is_active", "is_lead")


def hash_password(password: str) -> str:
    """The argon2id hash of a new password (refused if too short)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidValue(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    return passwords.hash_password(password)


def checked_username(username: str, *, field: str = "username") -> str:
    """The account name as stored (lower case), or InvalidValue; people and
    service accounts share one namespace."""
    username = username.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidValue(
            f"a {field} is 2-64 characters of a-z, 0-9, '.', '_' or '-', starting alphanumeric",
            field=field,
        )
    return username


def _new_hash(password: str | None, password_hash: str | None) -> str:
    if (password is None) == (password_hash is None):
        raise ValueError("give either password or password_hash")
    return password_hash if password_hash is not None else hash_password(password or "")


def create_user(
    session: Session,
    *,
    username: str,
    password: str | None = None,
    password_hash: str | None = None,
    role: str,
    email: str | None = None,
    display_name: str | None = None,
    specialty: str | None = None,
    is_lead: bool = False,
    actor: Actor,
) -> UserInfo:
    """A new account, audited (110114 ``user_created``) without the password.

    ``actor``: who creates it (``user_actor`` of the admin and their address,
    or ``Actor.system(SystemActor.CLI)``)."""
    username = checked_username(username)
    role_value = _role(role)
    new_hash = _new_hash(password, password_hash)
    # The unique constraint is the real guard; this check only gives a clear message.
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=new_hash,
        role=role_value.value,
        email=email,
        display_name=display_name,
        specialty=specialty,
        is_active=True,
        is_lead=is_lead,
    )
    session.add(user)
    session.flush()
    record_audit_event(
        session,
        authentication_event("user_created", actor, user.id, details={"after": _audited(user)}),
    )
    return _info(user)


def find_user(session: Session, username: str) -> UserInfo | None:
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    return _info(user) if user is not None else None


USER_SORTS = {
    "id": User.id,
    "username": User.username,
    "role": User.role,
    "created_at": User.created_at,
    "display_name": User.display_name,
}


def list_users(
    session: Session,
    *,
    role: str | None = None,
    is_active: bool | None = None,
    search: str | None = None,
    sort: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Listed[UserInfo]:
    """Users matching every given filter; ``search`` is a substring of the
    username or display name (case-insensitive for ASCII). People only:
    service accounts have their own listing (services/access/service_accounts.py)."""
    query = select(User).where(User.kind == UserKind.PERSON.value)
    if role is not None:
        query = query.where(User.role == _role(role, field="role").value)
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    if search:
        pattern = f"%{escape_like(search.strip().lower())}%"
        query = query.where(
            User.username.like(pattern, escape="\\")
            | func.lower(User.display_name).like(pattern, escape="\\")
        )
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = session.scalars(
        query.order_by(*order_by(sort, USER_SORTS, default="username", tiebreak=User.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return Listed(items=[_info(user) for user in rows], total=total)


def get_user(session: Session, user_id: int) -> UserInfo:
    return _info(_load(session, user_id))


def users_by_id(session: Session, user_ids: Sequence[int]) -> dict[int, UserInfo]:
    """The users of ``user_ids`` (people and service accounts) in one
    statement; ids with no user are left out."""
    if not user_ids:
        return {}
    rows = session.scalars(select(User).where(User.id.in_(list(set(user_ids))))).all()
    return {user.id: _info(user) for user in rows}


def update_user(
    session: Session,
    user_id: int,
    *,
    changes: dict[str, Any],
    actor: Principal,
    source_address: str | None = None,
) -> UserInfo:
    """Change role, display_name, email, specialty, is_active or is_lead.

    ``changes`` holds only the fields the caller sent. The last active admin
    cannot be demoted or deactivated (nobody could manage users any more).
    """
    unknown = set(changes) - {"role", "display_name", "email", "specialty", "is_active", "is_lead"}
    if unknown:
        raise InvalidValue(f"not editable: {', '.join(sorted(unknown))}", field=min(unknown))
    for name in ("role", "is_active", "is_lead"):
        if name in changes and changes[name] is None:
            raise InvalidValue(f"{name} cannot be null", field=name)
    user = _load(session, user_id, lock=True)
    before = _audited(user)
    role = _role(changes["role"], field="role") if "role" in changes else Role(user.role)
    is_active = bool(changes.get("is_active", user.is_active))
    is_lead = bool(changes.get("is_lead", user.is_lead))
    if user.kind == UserKind.SERVICE.value and role is Role.ADMIN:
        raise InvalidValue(SERVICE_ADMIN, field="role")
    if "role" in changes and "is_lead" not in changes and role is not Role.RADIOLOGIST:
        is_lead = False  # a lead who stops being a radiologist stops being lead
    if (
        Role(user.role) is Role.ADMIN
        and user.is_active
        and (role is not Role.ADMIN or not is_active)
    ):
        others = session.scalar(
            select(func.count(User.id)).where(
                User.role == Role.ADMIN.value,
                User.is_active.is_(True),
                User.kind == UserKind.PERSON.value,
                User.id != user.id,
            )
        )
        if not others:
            raise Conflict(
                "the last active admin cannot be demoted or deactivated", current="admin"
            )
    user.role = role.value
    user.is_active = is_active
    user.is_lead = is_lead
    for name in ("display_name", "email", "specialty"):
        if name in changes:
            value = changes[name]
            setattr(user, name, value.strip() or None if isinstance(value, str) else None)
    after = _audited(user)
    if after != before:
        session.flush()
        if not is_active:
            _revoke_tokens(session, user.id)
        record_audit_event(
            session,
            authentication_event(
                "user_updated",
                user_actor(actor, source_address),
                user.id,
                details=_diff(before, after),
            ),
        )
    return _info(user)


def reset_password(
    session: Session,
    user_id: int,
    *,
    password: str | None = None,
    password_hash: str | None = None,
    actor: Principal,
    source_address: str | None = None,
) -> UserInfo:
    """Set a new password, revoke every token of the user and lift the
    account's sign-in locks (audited, no secret)."""
    new_hash = _new_hash(password, password_hash)
    user = _load(session, user_id, lock=True)
    if user.kind == UserKind.SERVICE.value:
        # a password would let the account sign in, which a service account never does
        raise InvalidValue(
            "a service account has no password: it calls with an API key", field="user_id"
        )
    user.password_hash = new_hash
    session.flush()
    clear_lockouts(session, user.id)
    revoked = _revoke_tokens(session, user.id)
    record_audit_event(
        session,
        authentication_event(
            "user_password_reset",
            user_actor(actor, source_address),
            user.id,
            details={"tokens_revoked": revoked},
        ),
    )
    return _info(user)


def _revoke_tokens(session: Session, user_id: int) -> int:
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _load(session: Session, user_id: int, *, lock: bool = False) -> User:
    query = select(User).where(User.id == user_id)
    user = session.scalar(query.with_for_update() if lock else query)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def _role(value: str, *, field: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(member.value for member in Role)
        raise InvalidValue(f"unknown role {value!r} (one of: {allowed})", field=field) from None


def _audited(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in _AUDITED}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    changed = [name for name in after if before.get(name) != after[name]]
    return {
        "before": {name: before.get(name) for name in changed},
        "after": {name: after[name] for name in changed},
    }


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        email=user.email,
        display_name=user.display_name,
        is_active=user.is_active,
        is_lead=user.is_lead,
        specialty=user.specialty,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )
