"""Order (ImagingRequest) shapes, and the value types every resource schema shares.

Every rule a value must meet is in the OpenAPI document (patterns, enums,
lengths), so what the schema allows the API accepts: no string carries NUL
(PostgreSQL cannot store it), DICOM values carry no backslash or control
characters, required text has a visible character, ids stay within 2**53,
datetimes carry a time zone. The services check the same rules again for
their other callers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from api.schemas.common import MAX_ID
from dicom_node.db.types import as_utc
from dicom_node.domain.enums import Priority, RequestStatus
from dicom_node.domain.vr import MODALITY_CODES

# Blank characters spelled out: regex \s differs between JSON Schema (ECMA),
# pydantic (Rust) and Python (U+0085, U+FEFF), and str.strip() uses Python's.
WS = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# a character of a DICOM string value, and one that is also visible (not blank)
_DICOM = r"[^\\\x00-\x1f\x7f]"
_DICOM_VISIBLE = rf"[^{WS}\\\x00-\x1f\x7f]"
# PN (PS3.5 6.2.1): up to 3 groups of up to 5 '^'-separated components of at
# most 64 characters; the family name (first component) is required here
_PN_PART = r"[^\\^=\x00-\x1f\x7f]{0,64}"
_PN_GROUP = rf"{_PN_PART}(?:\^{_PN_PART}){{0,4}}"
_PN = (
    rf"[^{WS}\\^=\x00-\x1f\x7f][^\\^=\x00-\x1f\x7f]{{0,63}}(?:\^{_PN_PART}){{0,4}}"
    rf"(?:={_PN_GROUP}){{0,2}}"
)
_YEAR = r"(?:1[89]|2[0-9])[0-9][0-9]"
_DATE = (
    rf"{_YEAR}(?:(?:0[13578]|1[02])(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)"
    r"(?:0[1-9]|[12][0-9]|30)|02(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:1[89]|2[0-9])(?:0[48]|[2468][048]|[13579][26])0229|(?:20|24|28)000229"
)


def _modality_code(value: str) -> str:
    if value not in MODALITY_CODES:
        raise ValueError("is not a DICOM modality code")
    return value


def sort_pattern(allowed: Any) -> str:
    """``field,-other`` over the allow-list, as a pattern for the OpenAPI doc."""
    names = "|".join(sorted(allowed, key=lambda name: (-len(name), name)))
    return rf"^-?(?:{names})(?:,-?(?:{names}))*$"


# any text without NUL; text with a visible character
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
_REQUIRED_TEXT = rf"^[^\x00]*[^{WS}\x00-\x1f\x7f][^\x00]*$"
RequiredText = Annotated[str, StringConstraints(pattern=_REQUIRED_TEXT, min_length=1)]
# DICOM LO (64 characters) / SH (16), optional or required
LongString = Annotated[str, StringConstraints(pattern=rf"^{_DICOM}*$", max_length=64)]
RequiredLongString = Annotated[
    str,
    StringConstraints(
        pattern=rf"^{_DICOM}*{_DICOM_VISIBLE}{_DICOM}*$", min_length=1, max_length=64
    ),
]
ShortString = Annotated[str, StringConstraints(pattern=rf"^{_DICOM}*$", max_length=16)]
PersonName = Annotated[str, StringConstraints(pattern=rf"^{_PN}$", min_length=1, max_length=324)]
OptionalPersonName = Annotated[str, StringConstraints(pattern=rf"^(?:{_PN})?$", max_length=324)]
# DICOM DA, a real calendar date YYYYMMDD (years 1800-2999)
DicomDate = Annotated[
    str, StringConstraints(pattern=rf"^(?:{_DATE})$"), Field(examples=["19800131"])
]
ModalityCode = Annotated[
    str,
    AfterValidator(_modality_code),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(MODALITY_CODES),
            "description": "DICOM Modality (0008,0060) defined term",
        }
    ),
]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda value: as_utc(value, clamp=True))]
Sex = Literal["M", "F", "O"]


class OrderPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: RequestStatus
    priority: Priority
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str | None
    patient_sex: str | None
    requested_modality: str | None
    study_description: str | None
    clinical_indication: str | None
    referring_physician_name: str | None
    requesting_physician: str | None
    scheduled_performing_physician_name: str | None
    requested_by_id: int | None
    # the referring physician as a user: chosen by the scheduler, or matched
    # from referring_physician_name; they see the order, its study and reports
    referring_physician_id: int | None
    imaging_center_id: int | None
    scheduled_modality_id: int | None
    scheduled_at: datetime | None
    accession_number: str | None
    accession_issuer: str
    study_instance_uid: str | None
    requested_procedure_id: str | None
    scheduled_procedure_step_id: str | None
    cancel_reason: str | None
    scheduled_on: datetime | None
    exam_started_at: datetime | None
    exam_completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class _OrderFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: RequiredLongString
    issuer_of_patient_id: LongString = ""
    patient_name: PersonName = Field(examples=["DOE^JANE"])
    patient_birth_date: DicomDate | None = None
    patient_sex: Sex | None = None
    requested_modality: ModalityCode
    study_description: RequiredLongString = Field(description="the procedure")
    priority: Priority = Priority.ROUTINE
    clinical_indication: Annotated[Text, Field(max_length=4000)] | None = None
    referring_physician_name: OptionalPersonName | None = None
    referring_physician_id: Id | None = Field(
        None,
        description="the referring physician from the user list (an active user of role "
        "referring_physician); fills referring_physician_name when that is not given. Without "
        "it, a referring_physician_name equal to exactly one such user's display name links them",
    )
    # the worklist's RequestingPhysician (0032,1032) and, in the scheduled step,
    # ScheduledPerformingPhysicianName (0040,0006)
    requesting_physician: OptionalPersonName | None = None
    scheduled_performing_physician_name: OptionalPersonName | None = None
    imaging_center_id: Id | None = None


_FORCE_NEEDS_REASON: dict[str, Any] = {
    "if": {"properties": {"force": {"const": True}}, "required": ["force"]},
    "then": {
        "required": ["force_reason"],
        "properties": {"force_reason": {"type": "string", "pattern": _REQUIRED_TEXT}},
    },
}


class OrderCreate(_OrderFields):
    """A new order. ``force: true`` (with a ``force_reason``, audited) creates it
    even though the same patient has an open order for the same procedure."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_FORCE_NEEDS_REASON)

    force: bool = False
    force_reason: Annotated[Text, Field(max_length=1000)] | None = Field(
        None, validate_default=True, description="required with force"
    )

    @field_validator("force_reason")
    @classmethod
    def _reason_with_force(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("force") and not re.match(_REQUIRED_TEXT, value or ""):
            raise ValueError("force needs a force_reason")
        return value


class OrderUpdate(BaseModel):
    """Fields to change; only those sent are changed."""

    model_config = ConfigDict(extra="forbid")

    # null for a field that cannot be empty leaves it as it is
    priority: Priority | None = None
    clinical_indication: Annotated[Text, Field(max_length=4000)] | None = None
    study_description: RequiredLongString | None = None
    referring_physician_name: OptionalPersonName | None = None
    # null unlinks the referring physician; a new referring_physician_name alone
    # links the physician it matches
    referring_physician_id: Id | None = None
    requesting_physician: OptionalPersonName | None = None
    scheduled_performing_physician_name: OptionalPersonName | None = None
    requested_modality: ModalityCode | None = None
    imaging_center_id: Id | None = None
    patient_name: PersonName | None = None
    patient_birth_date: DicomDate | None = None
    patient_sex: Sex | None = None


class OrderSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality_id: Id
    scheduled_at: UtcDatetime = Field(description="with a time zone, e.g. 2026-01-05T09:30:00Z")


class OrderCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[RequiredText, Field(max_length=1000)]
