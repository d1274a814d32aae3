"""Worklist shapes: a queue entry with its study summary, claim and reassign bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from api.schemas.common import MAX_ID
from dicom_node.services.workflow.worklist_listing import (
    WorklistEntry,
    WorklistItemDetail,
    WorklistStudy,
)

RecordId = Annotated[int, Field(ge=1, le=MAX_ID)]


class StudySummaryPublic(BaseModel):
    id: int
    study_instance_uid: str
    accession_number: str | None
    modality: str | None
    description: str | None
    status: str
    patient_name: str | None
    patient_id: str | None
    series_count: int
    instance_count: int
    study_date: str | None = Field(description="StudyDate as sent (DA: YYYYMMDD)")
    body_part: str | None = Field(description="BodyPartExamined")

    @classmethod
    def of(cls, study: WorklistStudy) -> StudySummaryPublic:
        return cls(
            id=study.id,
            study_instance_uid=study.study_instance_uid,
            accession_number=study.accession_number,
            modality=study.modality,
            description=study.description,
            status=study.status,
            patient_name=study.patient_name,
            patient_id=study.patient_id,
            series_count=study.series_count,
            instance_count=study.instance_count,
            study_date=study.study_date,
            body_part=study.body_part,
        )


class WorklistItemPublic(BaseModel):
    id: int
    queue_type: str
    status: str
    priority: str
    due_at: datetime | None
    overdue: bool = Field(description="past due_at now (open items), completed late, or escalated")
    assigned_to_id: int | None
    assigned_to: str | None = Field(description="username of the holder")
    claimed_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    version: int = Field(description="send it back with a claim to claim only this state")
    order_id: int | None
    performed_procedure_step_id: int | None
    notes: str | None
    study: StudySummaryPublic | None

    @classmethod
    def of(cls, entry: WorklistEntry) -> WorklistItemPublic:
        return cls(
            id=entry.id,
            queue_type=entry.queue_type,
            status=entry.status,
            priority=entry.priority,
            due_at=entry.due_at,
            overdue=entry.overdue,
            assigned_to_id=entry.assigned_to_id,
            assigned_to=entry.assigned_to_username,
            claimed_at=entry.claimed_at,
            completed_at=entry.completed_at,
            created_at=entry.created_at,
            version=entry.version,
            order_id=entry.order_id,
            performed_procedure_step_id=entry.performed_procedure_step_id,
            notes=entry.notes,
            study=StudySummaryPublic.of(entry.study) if entry.study else None,
        )


class WorklistItemDetailPublic(WorklistItemPublic):
    patient_birth_date: str | None
    patient_sex: str | None
    issuer_of_patient_id: str | None
    report_id: int | None
    report_status: str | None

    @classmethod
    def of_detail(cls, detail: WorklistItemDetail) -> WorklistItemDetailPublic:
        return cls(
            **WorklistItemPublic.of(detail.entry).model_dump(),
            patient_birth_date=detail.patient_birth_date,
            patient_sex=detail.patient_sex,
            issuer_of_patient_id=detail.issuer_of_patient_id,
            report_id=detail.report_id,
            report_status=detail.report_status,
        )


class ClaimRequest(BaseModel):
    version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, description="claim only if the item is still at this version"
    )


class ReassignRequest(BaseModel):
    user_id: RecordId = Field(description="an active radiologist")
