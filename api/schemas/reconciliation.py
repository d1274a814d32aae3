"""Reconciliation shapes: what is left to reconcile, and the two ways to resolve it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.orders import Id, OrderPublic, RequiredText
from dicom_node.domain.enums import Priority

Reason = Annotated[RequiredText, Field(max_length=1000)]


class ReconciliationEntryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: Literal["study", "procedure_step"] = Field(
        description="a study, or an unscheduled exam known only from its MPPS"
    )
    study_id: int | None
    study_instance_uid: str | None
    metadata_status: str | None
    completeness: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    modality: str | None
    study_date: str | None
    study_description: str | None
    instance_count: int | None
    linked_order_id: int | None = Field(description="the order a conflicting study claims")
    worklist_item_id: int | None
    worklist_status: str | None
    performed_procedure_step_id: int | None
    performed_station_ae_title: str | None
    created_at: datetime
    released_to_reading: bool | None = Field(
        None, description="an unmatched study put on the reading worklist before its order"
    )


class ReconciledPublic(BaseModel):
    study: ReconciliationEntryPublic
    order: OrderPublic
    reading_item_id: int | None = Field(
        description="the reading worklist item, when the study is complete"
    )


class ReleasedPublic(BaseModel):
    study: ReconciliationEntryPublic
    reading_item_id: int | None = Field(
        description="the study's reading item; none until the acquisition is complete"
    )


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    priority: Priority = Priority.ROUTINE


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: Id
    reason: Reason
    force: bool = Field(
        False,
        description="link even though the order is for another patient, or was cancelled "
        "(the cancelled order is reinstated: cancelled -> in_progress, audited)",
    )


class CreateOrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    priority: Priority = Priority.ROUTINE
    imaging_center_id: Id | None = None
    force: bool = Field(
        False,
        description="create it even though an open order of the same patient and modality "
        "exists (the override is audited)",
    )


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    outcome: Literal["cancelled", "completed"] = Field(
        "cancelled",
        description="cancelled: nothing to reconcile (e.g. a test exam, images never sent); "
        "completed: handled another way",
    )
