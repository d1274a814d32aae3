"""Reconciliation (REST: /api/reconciliation): studies no order claims or that
disagree with their order, and unscheduled exams known from their MPPS; link a
study to an order, release it to reading, create an order from it, close an
MPPS-only item.

Every field calls the service the matching REST route calls
(api/routes/reconciliation.py), with the same permission (reconciliation:manage),
inputs (checked by the REST request models) and audit events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import strawberry
from pydantic import BaseModel, Field
from strawberry.types import Info

from api.graphql.access import requires
from api.graphql.answers import audited_page
from api.graphql.context import GraphQLContext
from api.graphql.inputs import record_id, validated
from api.graphql.orders import ImagingRequest, order_by_id
from api.graphql.relay import Connection, connection, page_window
from api.schemas.orders import Text
from api.schemas.reconciliation import (
    CreateOrderRequest,
    LinkRequest,
    ReleaseRequest,
    ResolveRequest,
)
from dicom_node.domain.enums import Priority, WorklistStatus
from dicom_node.domain.permissions import Permission
from dicom_node.services.workflow import reconciliation as service
from dicom_node.services.workflow.reconciliation_listing import (
    ReconciliationEntry as EntryInfo,
)
from dicom_node.services.workflow.reconciliation_listing import list_reconciliation

if TYPE_CHECKING:
    from api.graphql.studies import DicomStudy


@strawberry.type(description="One thing to reconcile (REST: an item of GET /api/reconciliation).")
class ReconciliationEntry:
    kind: str = strawberry.field(
        description="study, or procedure_step: an unscheduled exam known only from its MPPS"
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
    linked_order_id: int | None = strawberry.field(
        description="the order a conflicting study claims"
    )
    worklist_item_id: int | None
    worklist_status: str | None
    performed_procedure_step_id: int | None
    performed_station_ae_title: str | None
    created_at: datetime
    released_to_reading: bool | None = strawberry.field(
        description="an unmatched study put on the reading worklist before its order"
    )

    @classmethod
    def of(cls, entry: EntryInfo) -> ReconciliationEntry:
        return cls(**{name: getattr(entry, name) for name in EntryInfo.__slots__})

    @strawberry.field(
        description="The order a conflicting study claims.",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def linked_order(self, info: Info[GraphQLContext, None]) -> ImagingRequest | None:
        if self.linked_order_id is None:
            return None
        return await order_by_id(info.context, self.linked_order_id)

    @strawberry.field(
        description="The study, when the entry is one.",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def study(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[DicomStudy, strawberry.lazy("api.graphql.studies")] | None:
        # imported here: the studies area may import this module's types
        from api.graphql.studies import study_by_id

        if self.study_id is None:
            return None
        return await study_by_id(info.context, self.study_id)


@strawberry.type(description="A study linked to an order.")
class ReconciledStudy:
    study: ReconciliationEntry
    order: ImagingRequest
    reading_item_id: int | None = strawberry.field(
        description="the reading worklist item, when the study is complete"
    )

    @classmethod
    def of(cls, result: service.ReconciledStudy) -> ReconciledStudy:
        return cls(
            study=ReconciliationEntry.of(result.entry),
            order=ImagingRequest.of(result.order),
            reading_item_id=result.reading_item_id,
        )


@strawberry.type(description="An unmatched study put on the reading worklist.")
class ReleasedStudy:
    study: ReconciliationEntry
    reading_item_id: int | None = strawberry.field(
        description="the study's reading item; none until the acquisition is complete"
    )


@strawberry.input
class LinkStudyInput:
    order_id: int
    reason: str
    force: bool = strawberry.field(
        default=False,
        description="link even though the order is for another patient, or was cancelled "
        "(the cancelled order is reinstated: cancelled -> in_progress, audited)",
    )


@strawberry.input
class ReleaseStudyInput:
    reason: str
    priority: Priority = Priority.ROUTINE


@strawberry.input
class CreateOrderFromStudyInput:
    reason: str
    priority: Priority = Priority.ROUTINE
    imaging_center_id: int | None = None
    force: bool = strawberry.field(
        default=False,
        description="create it even though an open order of the same patient and modality "
        "exists (the override is audited)",
    )


@strawberry.input
class ResolveItemInput:
    reason: str
    outcome: str = strawberry.field(
        default="cancelled",
        description="cancelled: nothing to reconcile (e.g. a test exam, images never sent); "
        "completed: handled another way",
    )


class ReconciliationQuery(BaseModel):
    """The REST listing's query constraints (api/routes/reconciliation.py)."""

    patient_id: Annotated[Text, Field(max_length=64)] | None = None
    sort: Annotated[Text, Field(max_length=200)] | None = None


@strawberry.type
class Query:
    @strawberry.field(
        description="Unmatched and conflicting studies (oldest first unless sort), then open "
        "reconciliation items without such a study (REST: GET /api/reconciliation; audited "
        "as a Query). metadataStatus: unmatched or conflict.",
        extensions=[requires(Permission.RECONCILE)],
    )
    async def reconciliation(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        metadata_status: str | None = None,
        patient_id: str | None = None,
        sort: str | None = None,
    ) -> Connection[ReconciliationEntry]:
        context = info.context
        offset, limit = page_window(first, after)
        query = validated(ReconciliationQuery, {"patient_id": patient_id, "sort": sort})
        listed = await audited_page(
            context,
            list_reconciliation,
            narrowed=query.patient_id is not None,
            action="reconciliation_queried",
            target_class="DicomStudy",
            query={
                "metadata_status": metadata_status,
                "sort": query.sort,
                "offset": offset,
                "limit": limit,
            },
            metadata_status=metadata_status,
            patient_id=query.patient_id,
            sort=query.sort,
            offset=offset,
            limit=limit,
        )
        return connection(
            [ReconciliationEntry.of(e) for e in listed.items], total=listed.total, offset=offset
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Link the study to an order (metadata matched, audited), as REST POST "
        "/api/reconciliation/{studyId}/link: CONFLICT if the study is not unmatched/conflict, "
        "or, unless force, the order was cancelled or is another patient's (existing).",
        extensions=[requires(Permission.RECONCILE)],
    )
    async def link_study_to_order(
        self, info: Info[GraphQLContext, None], study_id: int, input: LinkStudyInput
    ) -> ReconciledStudy:
        context = info.context
        body = validated(LinkRequest, vars(input))
        result = await context.write(
            service.link_study,
            record_id(study_id, field="studyId"),
            order_id=body.order_id,
            reason=body.reason,
            force=body.force,
            principal=context.user,
            sla=context.settings.sla(),
            source_address=context.address,
        )
        return ReconciledStudy.of(result)

    @strawberry.mutation(
        description="Put an unmatched study on the reading worklist before an order claims "
        "it (audited with the reason), as REST POST /api/reconciliation/{studyId}/release.",
        extensions=[requires(Permission.RECONCILE)],
    )
    async def release_study_to_reading(
        self, info: Info[GraphQLContext, None], study_id: int, input: ReleaseStudyInput
    ) -> ReleasedStudy:
        context = info.context
        body = validated(ReleaseRequest, vars(input))
        result = await context.write(
            service.release_to_reading,
            record_id(study_id, field="studyId"),
            reason=body.reason,
            priority=body.priority,
            principal=context.user,
            sla=context.settings.sla(),
            source_address=context.address,
        )
        return ReleasedStudy(
            study=ReconciliationEntry.of(result.entry), reading_item_id=result.reading_item_id
        )

    @strawberry.mutation(
        description="Create an order from the study and link it, as REST POST "
        "/api/reconciliation/{studyId}/create-order: CONFLICT if an order holds its UID or "
        "accession, or, unless force, an open order of the patient and modality exists "
        "(existing).",
        extensions=[requires(Permission.RECONCILE)],
    )
    async def create_order_from_study(
        self, info: Info[GraphQLContext, None], study_id: int, input: CreateOrderFromStudyInput
    ) -> ReconciledStudy:
        context = info.context
        body = validated(CreateOrderRequest, vars(input))
        result = await context.write(
            service.create_order_from_study,
            record_id(study_id, field="studyId"),
            reason=body.reason,
            priority=body.priority,
            imaging_center_id=body.imaging_center_id,
            duplicate_window=timedelta(hours=context.settings.duplicate_order_window_hours),
            force=body.force,
            principal=context.user,
            sla=context.settings.sla(),
            source_address=context.address,
        )
        return ReconciledStudy.of(result)

    @strawberry.mutation(
        description="Close a reconciliation item only an MPPS opened: cancelled or completed, "
        "with the reason (audited), as REST POST /api/reconciliation/items/{itemId}/resolve.",
        extensions=[requires(Permission.RECONCILE)],
    )
    async def resolve_reconciliation_item(
        self, info: Info[GraphQLContext, None], item_id: int, input: ResolveItemInput
    ) -> ReconciliationEntry:
        context = info.context
        body = validated(ResolveRequest, vars(input))
        entry = await context.write(
            service.resolve_reconciliation_item,
            record_id(item_id, field="itemId"),
            reason=body.reason,
            outcome=WorklistStatus(body.outcome),
            principal=context.user,
            source_address=context.address,
        )
        return ReconciliationEntry.of(entry)
