"""User account shapes. No shape carries a password hash; a password is only
ever sent in (create, reset), never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas.orders import WS, Text
from dicom_node.domain.enums import Role
from dicom_node.services.access.users import MIN_PASSWORD_LENGTH

Email = Annotated[
    str,
    StringConstraints(pattern=rf"^[^@{WS}\x00-\x1f\x7f]+@[^@{WS}\x00-\x1f\x7f]+$", max_length=254),
]
# only its argon2 hash is kept: any characters
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]
Username = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"),
    Field(examples=["jane.doe"], description="stored in lower case"),
]
Name = Annotated[Text, Field(max_length=128)]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    email: str | None
    display_name: str | None
    specialty: str | None
    is_active: bool
    is_lead: bool
    created_at: datetime | None
    updated_at: datetime | None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    password: Password
    role: Role
    email: Email | None = None
    display_name: Name | None = None
    specialty: Name | None = None
    is_lead: bool = False


class UserUpdate(BaseModel):
    """Fields to change; only those sent are changed."""

    model_config = ConfigDict(extra="forbid")

    # null for role or a flag leaves it as it is
    role: Role | None = None
    email: Email | None = None
    display_name: Name | None = None
    specialty: Name | None = None
    is_active: bool | None = None
    is_lead: bool | None = None


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password
