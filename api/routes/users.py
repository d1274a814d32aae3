"""User accounts (admin only): list, read, create, change, reset a password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.orders import Text, sort_pattern
from api.schemas.users import PasswordReset, UserCreate, UserPublic, UserUpdate
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.users import (
    USER_SORTS,
    UserInfo,
    create_user,
    get_user,
    hash_password,
    list_users,
    reset_password,
    update_user,
)
from dicom_node.services.audit.subjects import user_actor

router = APIRouter(prefix="/api", tags=["users"])

Admin = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
SORT_HELP = "comma-separated; '-' for descending; one of: " + ", ".join(sorted(USER_SORTS))


def _public(info: UserInfo) -> UserPublic:
    return UserPublic.model_validate(info, from_attributes=True)


@router.get("/users", response_model=Page[UserPublic], responses=AUTH_ERRORS)
def list_user_accounts(
    context: Context,
    _admin: Admin,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[Text | None, Query(max_length=64, description="in username or name")] = None,
    sort: Annotated[
        str | None, Query(max_length=200, pattern=sort_pattern(USER_SORTS), description=SORT_HELP)
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[UserPublic]:
    """User accounts, filtered and sorted (default by username)."""
    with context.db.read() as session:
        listed = list_users(
            session,
            role=role.value if role else None,
            is_active=is_active,
            search=q,
            sort=sort,
            offset=offset,
            limit=limit,
        )
    return Page[UserPublic](
        items=[_public(u) for u in listed.items], total=listed.total, offset=offset, limit=limit
    )


@router.get("/users/{user_id}", response_model=UserPublic, responses={**AUTH_ERRORS, **NOT_FOUND})
def read_user_account(context: Context, _admin: Admin, user_id: UserId) -> UserPublic:
    with context.db.read() as session:
        return _public(get_user(session, user_id))


@router.post(
    "/users", response_model=UserPublic, status_code=201, responses={**AUTH_ERRORS, **CONFLICT}
)
def create_user_account(
    context: Context, admin: Admin, body: UserCreate, request: Request
) -> UserPublic:
    """A new account (password at least 10 characters, stored as argon2id); 409 if
    the username is taken. Audited without the password."""
    # hashed before the transaction: argon2 (and a wait for a hashing slot) must
    # not hold the write lock
    password_hash = hash_password(body.password)
    with context.db.unit_of_work() as session:
        info = create_user(
            session,
            username=body.username,
            password_hash=password_hash,
            role=body.role.value,
            email=body.email,
            display_name=body.display_name,
            specialty=body.specialty,
            is_lead=body.is_lead,
            actor=user_actor(admin, client_address(request)),
        )
    return _public(info)


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def update_user_account(
    context: Context, admin: Admin, user_id: UserId, body: UserUpdate, request: Request
) -> UserPublic:
    """Change role, names, email, active or lead flag (only the fields sent).
    Deactivating revokes the user's tokens; the last active admin stays (409)."""
    changes = body.model_dump(exclude_unset=True, mode="json")
    for name in ("role", "is_active", "is_lead"):
        if changes.get(name, "") is None:
            del changes[name]  # null leaves it as it is
    with context.db.unit_of_work() as session:
        info = update_user(
            session,
            user_id,
            changes=changes,
            actor=admin,
            source_address=client_address(request),
        )
    return _public(info)


@router.post(
    "/users/{user_id}/password",
    response_model=UserPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def reset_user_password(
    context: Context, admin: Admin, user_id: UserId, body: PasswordReset, request: Request
) -> UserPublic:
    """Set a new password; every token of the user is revoked and the account's
    sign-in locks are lifted. Audited, no secret."""
    password_hash = hash_password(body.password)
    with context.db.unit_of_work() as session:
        info = reset_password(
            session,
            user_id,
            password_hash=password_hash,
            actor=admin,
            source_address=client_address(request),
        )
    return _public(info)
