"""Service account and API key shapes. A key's secret appears in one answer
only (``ApiKeyIssued``, when it is made); no shape carries its hash."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.orders import Text
from api.schemas.users import Username
from dicom_node.domain.api_keys import KeyScope
from dicom_node.domain.enums import Role

Description = Annotated[Text, Field(max_length=128)]


class ServiceRole(StrEnum):
    """The roles a service account may hold: every role but admin (a machine
    never manages users; the service refuses it too)."""

    SCHEDULER = Role.SCHEDULER.value
    TECHNOLOGIST = Role.TECHNOLOGIST.value
    RADIOLOGIST = Role.RADIOLOGIST.value
    REFERRING_PHYSICIAN = Role.REFERRING_PHYSICIAN.value
    AUDITOR = Role.AUDITOR.value


class ServiceAccountPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    description: str | None
    is_active: bool
    created_at: datetime | None
    active_keys: int = Field(description="keys neither revoked nor expired")


class ServiceAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Username
    role: ServiceRole = Field(description="any role but admin")
    description: Description | None = None


class ServiceAccountUpdate(BaseModel):
    """Fields to change; only those sent are changed."""

    model_config = ConfigDict(extra="forbid")

    description: Description | None = None
    # false: every key of the account is refused until it is true again
    is_active: bool | None = None


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: int
    prefix: str = Field(description="the key's first characters, to recognise it")
    scopes: list[KeyScope]
    label: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="recorded at most every 5 minutes")
    last_used_from: str | None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[KeyScope] = Field(min_length=1, max_length=len(KeyScope))
    expires_in_days: int | None = Field(
        None, ge=1, le=3650, description="default api_key_default_days, at most api_key_max_days"
    )
    label: Description | None = None


class ApiKeyIssued(ApiKeyPublic):
    key: str = Field(
        description="the key, shown this once: send it as 'Authorization: Bearer <key>'"
    )
