"""Study search results, detail, corrections and rejection."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchableMetadataStatus(StrEnum):
    """Rejected studies are withdrawn from search (as from C-FIND): not a filter value."""

    PENDING = "pending"
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    CONFLICT = "conflict"
    CORRECTED = "corrected"


class StudyPublic(BaseModel):
    id: int
    study_instance_uid: str
    accession_number: str | None
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    referring_physician_name: str | None
    body_part_examined: str | None
    modalities: list[str]
    series_count: int
    instance_count: int
    status: str
    metadata_status: str
    completeness: str
    order_id: int | None
    first_received_at: datetime | None
    last_received_at: datetime | None


class SeriesPublic(BaseModel):
    id: int
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    station_name: str | None
    instance_count: int


class InstancePublic(BaseModel):
    id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    file_size: int
    received_at: datetime
    calling_ae_title: str | None
    # held for reconciliation: arrived under this study for another patient
    quarantined: bool


class StudyOrderPublic(BaseModel):
    id: int
    status: str
    priority: str
    accession_number: str | None
    requested_modality: str | None
    study_description: str | None
    requested_by_id: int | None
    # the referring physician as a user (they see the study and its signed reports)
    referring_physician_id: int | None
    referring_physician_name: str | None
    scheduled_at: datetime | None


class StudyDetailPublic(BaseModel):
    study: StudyPublic
    series: list[SeriesPublic]
    # one page of the study's instances (instance_offset / instance_limit)
    instances: list[InstancePublic]
    instance_total: int
    instance_offset: int
    instance_limit: int
    order: StudyOrderPublic | None
    report_ids: list[int]


# one value, no control characters, no backslash (the DICOM value separator)
_VALUE = r"^[^\\\x00-\x1f\x7f-\x9f]*$"
# a reason: no control characters but tab and line breaks; not blank
_REASON_CHAR = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_REASON = rf"^{_REASON_CHAR}*[^\s\x00-\x1f\x7f-\x9f]{_REASON_CHAR}*$"
_ID = r"^[^\\\x00-\x1f\x7f-\x9f]*[^\\\s\x00-\x1f\x7f-\x9f][^\\\x00-\x1f\x7f-\x9f]*$"
# documented only: the dates the service surely accepts (it checks the calendar)
_DATE = r"^((19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8]))?$"


def _reason() -> Any:
    return Field(min_length=1, max_length=2000, pattern=_REASON, description="why (audited)")


class StudyCorrection(BaseModel):
    """Only the fields given are corrected; ``null`` or "" clears one.
    ``patient_id`` cannot be cleared: ``null`` leaves it as it is."""

    model_config = ConfigDict(extra="forbid")

    reason: str = _reason()
    patient_name: str | None = Field(None, max_length=324, pattern=_VALUE)
    patient_id: str | None = Field(None, max_length=64, pattern=_ID)
    issuer_of_patient_id: str | None = Field(None, max_length=64, pattern=_VALUE)
    patient_birth_date: str | None = Field(
        None, max_length=8, description="YYYYMMDD", json_schema_extra={"pattern": _DATE}
    )
    patient_sex: str | None = Field(None, pattern=r"^(M|F|O)?$", description="M, F or O")
    accession_number: str | None = Field(None, max_length=16, pattern=_VALUE)
    study_description: str | None = Field(None, max_length=64, pattern=_VALUE)
    body_part_examined: str | None = Field(None, max_length=16, pattern=r"^[A-Z0-9 _]*$")
    referring_physician_name: str | None = Field(None, max_length=324, pattern=_VALUE)


class StudyRejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = _reason()
