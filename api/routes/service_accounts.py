"""Service accounts and their API keys (admin only): a viewer, a pipeline or a
portal calls the API and /dicomweb with a key instead of a password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.service_accounts import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyPublic,
    ServiceAccountCreate,
    ServiceAccountPublic,
    ServiceAccountUpdate,
)
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.service_accounts import (
    ApiKeyInfo,
    ServiceAccountInfo,
    create_service_account,
    get_service_account,
    issue_key,
    list_keys,
    list_service_accounts,
    revoke_key,
    update_service_account,
)
from dicom_node.services.audit.subjects import user_actor

router = APIRouter(prefix="/api", tags=["service accounts"])

Admin = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
KeyId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _account(info: ServiceAccountInfo) -> ServiceAccountPublic:
    return ServiceAccountPublic.model_validate(info, from_attributes=True)


def _key(info: ApiKeyInfo) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(info, from_attributes=True)


@router.get("/service-accounts", response_model=Page[ServiceAccountPublic], responses=AUTH_ERRORS)
def list_accounts(
    context: Context,
    _admin: Admin,
    is_active: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[ServiceAccountPublic]:
    """Service accounts by name."""
    with context.db.read() as session:
        listed = list_service_accounts(session, is_active=is_active, offset=offset, limit=limit)
    return Page[ServiceAccountPublic](
        items=[_account(a) for a in listed.items], total=listed.total, offset=offset, limit=limit
    )


@router.post(
    "/service-accounts",
    response_model=ServiceAccountPublic,
    status_code=201,
    responses={**AUTH_ERRORS, **CONFLICT},
)
def create_account(
    context: Context, admin: Admin, body: ServiceAccountCreate, request: Request
) -> ServiceAccountPublic:
    """A new service account: a role (not admin), no password; 409 if the name
    is taken by a user or another account. Audited (110114)."""
    with context.db.unit_of_work() as session:
        info = create_service_account(
            session,
            name=body.name,
            role=body.role.value,
            description=body.description,
            actor=user_actor(admin, client_address(request)),
        )
    return _account(info)


@router.get(
    "/service-accounts/{account_id}",
    response_model=ServiceAccountPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def read_account(context: Context, _admin: Admin, account_id: AccountId) -> ServiceAccountPublic:
    with context.db.read() as session:
        return _account(get_service_account(session, account_id))


@router.patch(
    "/service-accounts/{account_id}",
    response_model=ServiceAccountPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def update_account(
    context: Context,
    admin: Admin,
    account_id: AccountId,
    body: ServiceAccountUpdate,
    request: Request,
) -> ServiceAccountPublic:
    """Change the description, or deactivate (``is_active: false``: every key of
    the account is refused until it is reactivated). Audited (110114)."""
    changes = body.model_dump(exclude_unset=True)
    with context.db.unit_of_work() as session:
        info = update_service_account(
            session, account_id, changes=changes, actor=user_actor(admin, client_address(request))
        )
    return _account(info)


@router.get(
    "/service-accounts/{account_id}/keys",
    response_model=list[ApiKeyPublic],
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def list_account_keys(context: Context, _admin: Admin, account_id: AccountId) -> list[ApiKeyPublic]:
    """The account's keys, newest first, revoked and expired ones included;
    never the key itself."""
    with context.db.read() as session:
        return [_key(info) for info in list_keys(session, account_id)]


@router.post(
    "/service-accounts/{account_id}/keys",
    response_model=ApiKeyIssued,
    status_code=201,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def create_account_key(
    context: Context, admin: Admin, account_id: AccountId, body: ApiKeyCreate, request: Request
) -> ApiKeyIssued:
    """A new key with the given scopes (each must be within the account's role),
    shown in this answer only: the node keeps its SHA-256. 409 if the account
    is deactivated. Audited (110113), without the key."""
    settings = context.settings
    with context.db.unit_of_work() as session:
        issued = issue_key(
            session,
            account_id,
            scopes=list(body.scopes),
            expires_in_days=body.expires_in_days,
            default_days=settings.api_key_default_days,
            max_days=settings.api_key_max_days,
            label=body.label,
            actor=user_actor(admin, client_address(request)),
        )
    return ApiKeyIssued(**_key(issued.info).model_dump(), key=issued.key)


@router.delete(
    "/service-accounts/{account_id}/keys/{key_id}",
    status_code=204,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def revoke_account_key(
    context: Context, admin: Admin, account_id: AccountId, key_id: KeyId, request: Request
) -> Response:
    """Revoke the key: refused from the next request on. Audited (110113)."""
    with context.db.unit_of_work() as session:
        revoke_key(session, account_id, key_id, actor=user_actor(admin, client_address(request)))
    return Response(status_code=204)
