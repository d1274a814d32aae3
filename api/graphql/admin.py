"""Users, imaging centers and modalities (REST: /api/users, /api/imaging-centers,
/api/modalities), and ``me``: the caller.

A ``User`` is reached from other records (a report's radiologist) by any
signed-in caller who may read that record: its id, username, display name,
role and lead flag are what every page of the node shows about a colleague.
The account's details (email, specialty, active, times) are what REST's
/api/users shows to admins only, so those fields require users:manage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry
from fastapi.concurrency import run_in_threadpool
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.inputs import given_fields, plain_text, validated
from api.graphql.relay import Connection
from api.schemas.facilities import CenterCreate, CenterUpdate, ModalityCreate, ModalityUpdate
from api.schemas.users import PasswordReset, UserCreate, UserUpdate
from dicom_node.domain.enums import ModalityStatus, Role
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.users import (
    UserInfo,
    create_user,
    get_user,
    hash_password,
    list_users,
    reset_password,
    update_user,
    users_by_id,
)
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.workflow.facilities import (
    CenterInfo,
    ModalityInfo,
    create_center,
    create_modality,
    get_center,
    get_modality,
    list_centers,
    list_modalities,
    update_center,
    update_modality,
)


@strawberry.type
class User:
    id: int
    username: str
    role: str
    display_name: str | None
    is_lead: bool
    # the account's details: shown only under users:manage (the resolvers below)
    account: strawberry.Private[UserInfo | None] = None

    @classmethod
    def of_principal(cls, principal: Principal) -> User:
        return cls(
            id=principal.user_id,
            username=principal.username,
            role=principal.role.value,
            display_name=principal.display_name,
            is_lead=principal.is_lead,
        )

    @classmethod
    def of(cls, info: UserInfo) -> User:
        return cls(
            id=info.id,
            username=info.username,
            role=info.role.value,
            display_name=info.display_name,
            is_lead=info.is_lead,
            account=info,
        )

    @strawberry.field(extensions=[requires(Permission.USERS_MANAGE)])
    def email(self) -> str | None:
        return self.account.email if self.account else None

    @strawberry.field(extensions=[requires(Permission.USERS_MANAGE)])
    def specialty(self) -> str | None:
        return self.account.specialty if self.account else None

    @strawberry.field(extensions=[requires(Permission.USERS_MANAGE)])
    def is_active(self) -> bool | None:
        return self.account.is_active if self.account else None

    @strawberry.field(extensions=[requires(Permission.USERS_MANAGE)])
    def created_at(self) -> datetime | None:
        return self.account.created_at if self.account else None

    @strawberry.field(extensions=[requires(Permission.USERS_MANAGE)])
    def updated_at(self) -> datetime | None:
        return self.account.updated_at if self.account else None


@strawberry.type
class ImagingCenter:
    id: int
    name: str
    code: str
    location: str | None
    contact_number: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: CenterInfo) -> ImagingCenter:
        return cls(
            id=info.id,
            name=info.name,
            code=info.code,
            location=info.location,
            contact_number=info.contact_number,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


@strawberry.type
class Modality:
    id: int
    imaging_center_id: int
    name: str
    type: str = strawberry.field(description="DICOM Modality code (0008,0060), e.g. CT")
    dicom_ae_title: str
    station_name: str | None
    status: ModalityStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: ModalityInfo) -> Modality:
        return cls(
            id=info.id,
            imaging_center_id=info.imaging_center_id,
            name=info.name,
            type=info.type,
            dicom_ae_title=info.dicom_ae_title,
            station_name=info.station_name,
            status=info.status,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


async def _users(context: GraphQLContext, ids: Sequence[int]) -> Sequence[User | None]:
    found = await context.read(users_by_id, ids)
    return [User.of(found[key]) if key in found else None for key in ids]


async def user_by_id(context: GraphQLContext, user_id: int) -> User | None:
    """A user by id, batched per operation (None: no such user)."""
    return await context.loader(_users).load(user_id)


@strawberry.type
class Query:
    @strawberry.field(description="The caller: who the token signs in as.")
    def me(self, info: Info[GraphQLContext, None]) -> User:
        return User.of_principal(info.context.user)

    @strawberry.field(
        description="User accounts (people), filtered and sorted as REST's /api/users "
        "(default by username).",
        extensions=[requires(Permission.USERS_MANAGE)],
    )
    async def users(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        role: Role | None = None,
        is_active: bool | None = None,
        q: Annotated[str | None, strawberry.argument(description="in username or name")] = None,
        sort: Annotated[
            str | None, strawberry.argument(description="comma-separated; '-' for descending")
        ] = None,
    ) -> Connection[User]:
        offset, limit = relay.page_window(first, after)
        listed = await info.context.read(
            list_users,
            role=role.value if role else None,
            is_active=is_active,
            search=plain_text(q, field="q", max_length=64),
            sort=plain_text(sort, field="sort", max_length=200),
            offset=offset,
            limit=limit,
        )
        return relay.connection(
            [User.of(item) for item in listed.items], total=listed.total, offset=offset
        )

    @strawberry.field(
        description="One user account (REST's /api/users/{id}).",
        extensions=[requires(Permission.USERS_MANAGE)],
    )
    async def user(self, info: Info[GraphQLContext, None], id: int) -> User:
        return User.of(await info.context.read(get_user, id))

    @strawberry.field(
        description="One imaging center.", extensions=[requires(Permission.FACILITIES_READ)]
    )
    async def imaging_center(self, info: Info[GraphQLContext, None], id: int) -> ImagingCenter:
        return ImagingCenter.of(await info.context.read(get_center, id))

    @strawberry.field(
        description="One modality.", extensions=[requires(Permission.FACILITIES_READ)]
    )
    async def modality(self, info: Info[GraphQLContext, None], id: int) -> Modality:
        return Modality.of(await info.context.read(get_modality, id))

    @strawberry.field(
        description="Imaging centers, as REST's /api/imaging-centers (default by name).",
        extensions=[requires(Permission.FACILITIES_READ)],
    )
    async def imaging_centers(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        q: Annotated[str | None, strawberry.argument(description="in name or code")] = None,
        sort: str | None = None,
    ) -> Connection[ImagingCenter]:
        offset, limit = relay.page_window(first, after)
        listed = await info.context.read(
            list_centers,
            search=plain_text(q, field="q", max_length=128),
            sort=sort,
            offset=offset,
            limit=limit,
        )
        return relay.connection(
            [ImagingCenter.of(item) for item in listed.items], total=listed.total, offset=offset
        )

    @strawberry.field(
        description="Modality devices, as REST's /api/modalities (default by name).",
        extensions=[requires(Permission.FACILITIES_READ)],
    )
    async def modalities(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        imaging_center_id: int | None = None,
        type: str | None = None,
        status: ModalityStatus | None = None,
        dicom_ae_title: str | None = None,
        sort: str | None = None,
    ) -> Connection[Modality]:
        offset, limit = relay.page_window(first, after)
        listed = await info.context.read(
            list_modalities,
            imaging_center_id=imaging_center_id,
            type=type,
            status=status.value if status else None,
            dicom_ae_title=plain_text(dicom_ae_title, field="dicomAeTitle", max_length=64),
            sort=plain_text(sort, field="sort", max_length=200),
            offset=offset,
            limit=limit,
        )
        return relay.connection(
            [Modality.of(item) for item in listed.items], total=listed.total, offset=offset
        )


# --------------------------------------------------------------------------- mutations
# Inputs are checked by REST's own request models (api/schemas/users.py,
# facilities.py); only the fields sent change in an update, and null for a
# field that cannot be empty leaves it as it is, as on REST.


@strawberry.input
class CreateUserInput:
    username: str
    password: str = strawberry.field(description="at least 10 characters; never returned")
    role: Role
    email: str | None = None
    display_name: str | None = None
    specialty: str | None = None
    is_lead: bool = False


@strawberry.input
class UpdateUserInput:
    role: Role | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    display_name: str | None = strawberry.UNSET
    specialty: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    is_lead: bool | None = strawberry.UNSET


@strawberry.input
class CreateImagingCenterInput:
    name: str
    code: str
    location: str | None = None
    contact_number: str | None = None


@strawberry.input
class UpdateImagingCenterInput:
    name: str | None = strawberry.UNSET
    code: str | None = strawberry.UNSET
    location: str | None = strawberry.UNSET
    contact_number: str | None = strawberry.UNSET


@strawberry.input
class CreateModalityInput:
    imaging_center_id: int
    name: str
    type: str = strawberry.field(description="DICOM Modality code (0008,0060), e.g. CT")
    dicom_ae_title: str
    station_name: str | None = None
    status: ModalityStatus = ModalityStatus.ACTIVE


@strawberry.input
class UpdateModalityInput:
    imaging_center_id: int | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    type: str | None = strawberry.UNSET
    dicom_ae_title: str | None = strawberry.UNSET
    station_name: str | None = strawberry.UNSET
    status: ModalityStatus | None = strawberry.UNSET


def _without_nulls(changes: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """null for a field that cannot be empty leaves it as it is (REST's rule)."""
    return {k: v for k, v in changes.items() if v is not None or k not in required}


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A new account (password at least 10 characters, stored as argon2id); "
        "CONFLICT if the username is taken. Audited without the password.",
        extensions=[requires(Permission.USERS_MANAGE)],
    )
    async def create_user(self, info: Info[GraphQLContext, None], input: CreateUserInput) -> User:
        context = info.context
        body = validated(UserCreate, {**given_fields(input), "role": input.role.value})
        # hashed before the transaction, off the event loop: argon2 (and a wait
        # for a hashing slot) must hold neither the write lock nor the loop
        password_hash = await run_in_threadpool(hash_password, body.password)
        created = await context.write(
            create_user,
            username=body.username,
            password_hash=password_hash,
            role=body.role.value,
            email=body.email,
            display_name=body.display_name,
            specialty=body.specialty,
            is_lead=body.is_lead,
            actor=user_actor(context.user, context.address),
        )
        return User.of(created)

    @strawberry.mutation(
        description="Change role, names, email, active or lead flag (only the fields sent). "
        "Deactivating revokes the user's tokens; the last active admin stays (CONFLICT).",
        extensions=[requires(Permission.USERS_MANAGE)],
    )
    async def update_user(
        self, info: Info[GraphQLContext, None], id: int, input: UpdateUserInput
    ) -> User:
        context = info.context
        sent = given_fields(input)
        if isinstance(sent.get("role"), Role):
            sent["role"] = sent["role"].value
        body = validated(UserUpdate, sent)
        changes = _without_nulls(
            body.model_dump(exclude_unset=True, mode="json"), ("role", "is_active", "is_lead")
        )
        updated = await context.write(
            update_user, id, changes=changes, actor=context.user, source_address=context.address
        )
        return User.of(updated)

    @strawberry.mutation(
        description="Set a new password; every token of the user is revoked and the "
        "account's sign-in locks are lifted. Audited, no secret.",
        extensions=[requires(Permission.USERS_MANAGE)],
    )
    async def reset_user_password(
        self, info: Info[GraphQLContext, None], id: int, password: str
    ) -> User:
        context = info.context
        body = validated(PasswordReset, {"password": password})
        password_hash = await run_in_threadpool(hash_password, body.password)
        reset = await context.write(
            reset_password,
            id,
            password_hash=password_hash,
            actor=context.user,
            source_address=context.address,
        )
        return User.of(reset)

    @strawberry.mutation(
        description="A new imaging center; CONFLICT if its code is taken.",
        extensions=[requires(Permission.FACILITIES_MANAGE)],
    )
    async def create_imaging_center(
        self, info: Info[GraphQLContext, None], input: CreateImagingCenterInput
    ) -> ImagingCenter:
        context = info.context
        body = validated(CenterCreate, given_fields(input))
        created = await context.write(
            create_center,
            name=body.name,
            code=body.code,
            location=body.location,
            contact_number=body.contact_number,
            principal=context.user,
            source_address=context.address,
        )
        return ImagingCenter.of(created)

    @strawberry.mutation(
        description="Change an imaging center (only the fields sent).",
        extensions=[requires(Permission.FACILITIES_MANAGE)],
    )
    async def update_imaging_center(
        self, info: Info[GraphQLContext, None], id: int, input: UpdateImagingCenterInput
    ) -> ImagingCenter:
        context = info.context
        body = validated(CenterUpdate, given_fields(input))
        updated = await context.write(
            update_center,
            id,
            changes=_without_nulls(body.model_dump(exclude_unset=True), ("name", "code")),
            principal=context.user,
            source_address=context.address,
        )
        return ImagingCenter.of(updated)

    @strawberry.mutation(
        description="A new modality; the AE title must be a valid DICOM AE and unused (CONFLICT).",
        extensions=[requires(Permission.FACILITIES_MANAGE)],
    )
    async def create_modality(
        self, info: Info[GraphQLContext, None], input: CreateModalityInput
    ) -> Modality:
        context = info.context
        body = validated(ModalityCreate, {**given_fields(input), "status": input.status.value})
        created = await context.write(
            create_modality,
            imaging_center_id=body.imaging_center_id,
            name=body.name,
            type=body.type,
            dicom_ae_title=body.dicom_ae_title,
            station_name=body.station_name,
            status=body.status.value,
            principal=context.user,
            source_address=context.address,
        )
        return Modality.of(created)

    @strawberry.mutation(
        description="Change a modality (only the fields sent).",
        extensions=[requires(Permission.FACILITIES_MANAGE)],
    )
    async def update_modality(
        self, info: Info[GraphQLContext, None], id: int, input: UpdateModalityInput
    ) -> Modality:
        context = info.context
        sent = given_fields(input)
        if isinstance(sent.get("status"), ModalityStatus):
            sent["status"] = sent["status"].value
        body = validated(ModalityUpdate, sent)
        updated = await context.write(
            update_modality,
            id,
            changes=_without_nulls(
                body.model_dump(exclude_unset=True, mode="json"),
                ("imaging_center_id", "name", "type", "dicom_ae_title", "status"),
            ),
            principal=context.user,
            source_address=context.address,
        )
        return Modality.of(updated)
