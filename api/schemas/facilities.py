"""Imaging center and modality shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas.orders import Id, ModalityCode, RequiredText, ShortString, Text
from dicom_node.domain.enums import ModalityStatus

CenterCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"),
    Field(examples=["MAIN"]),
]
# PS3.5 VR AE: 16 characters of printable ASCII but backslash, not all spaces
AeTitle = Annotated[
    str,
    StringConstraints(pattern=r"^ *[!-\[\]-~][ -\[\]-~]*$", max_length=16),
    Field(examples=["CT_MAIN_1"]),
]
Name = Annotated[RequiredText, Field(max_length=128)]


class CenterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    code: str
    location: str | None
    contact_number: str | None
    created_at: datetime
    updated_at: datetime


class CenterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    code: CenterCode
    location: Annotated[Text, Field(max_length=256)] | None = None
    contact_number: Annotated[Text, Field(max_length=64)] | None = None


class CenterUpdate(BaseModel):
    """Fields to change; only those sent are changed."""

    model_config = ConfigDict(extra="forbid")

    # null for name or code leaves it as it is
    name: Name | None = None
    code: CenterCode | None = None
    location: Annotated[Text, Field(max_length=256)] | None = None
    contact_number: Annotated[Text, Field(max_length=64)] | None = None


class ModalityPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    imaging_center_id: int
    name: str
    type: str = Field(description="DICOM Modality code (0008,0060), e.g. CT")
    dicom_ae_title: str
    station_name: str | None
    status: ModalityStatus
    created_at: datetime
    updated_at: datetime


class ModalityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imaging_center_id: Id
    name: Name
    type: ModalityCode
    dicom_ae_title: AeTitle
    station_name: ShortString | None = None
    status: ModalityStatus = ModalityStatus.ACTIVE


class ModalityUpdate(BaseModel):
    """Fields to change; only those sent are changed (null for a field that
    cannot be empty leaves it as it is)."""

    model_config = ConfigDict(extra="forbid")

    imaging_center_id: Id | None = None
    name: Name | None = None
    type: ModalityCode | None = None
    dicom_ae_title: AeTitle | None = None
    station_name: ShortString | None = None
    status: ModalityStatus | None = None
