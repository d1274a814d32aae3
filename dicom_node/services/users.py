"""User accounts: creation and password hashing (argon2id)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import User
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import AlreadyExists, InvalidValue
from dicom_node.services.audit import record_audit_event

MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    username: str
    role: Role
    email: str | None
    display_name: str | None
    is_active: bool


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidValue(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    email: str | None = None,
    display_name: str | None = None,
    specialty: str | None = None,
    actor: str,
) -> UserInfo:
    username = username.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidValue(
            "a username is 2-64 characters of a-z, 0-9, '.', '_' or '-', starting alphanumeric"
        )
    try:
        role_value = Role(role)
    except ValueError:
        allowed = ", ".join(member.value for member in Role)
        raise InvalidValue(f"unknown role {role!r} (one of: {allowed})") from None
    password_hash = hash_password(password)
    # The unique constraint is the real guard; this check only gives a clear message.
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=password_hash,
        role=role_value.value,
        email=email,
        display_name=display_name,
        specialty=specialty,
    )
    session.add(user)
    session.flush()
    record_audit_event(
        session,
        AuditRecord(
            event_code=AuditEventCode.USER_AUTHENTICATION,
            action="user_created",
            actor=actor,
            target_class="User",
            target_id=str(user.id),
            details={"after": {"username": username, "role": role_value.value}},
        ),
    )
    return _info(user)


def find_user(session: Session, username: str) -> UserInfo | None:
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    return _info(user) if user is not None else None


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        email=user.email,
        display_name=user.display_name,
        is_active=user.is_active,
    )
