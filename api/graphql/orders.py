"""Orders (ImagingRequest) (REST: /api/orders).

Every root field calls the service function the matching REST route calls,
with the same permission, visibility, inputs and audit events
(api/routes/orders.py); reconciliation is ``api/graphql/reconciliation.py``.

Inputs are checked by the REST request models (api/schemas/orders.py) through
``validated`` (reconciliation.py uses it too), so a value REST answers 422 is
BAD_USER_INPUT here, naming the same field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import strawberry
from pydantic import BaseModel, Field
from strawberry.types import Info

from api.graphql.access import requires
from api.graphql.answers import audited_page
from api.graphql.context import GraphQLContext
from api.graphql.inputs import given, record_id, validated
from api.graphql.relay import Connection, connection, page_window
from api.schemas.common import MAX_ID
from api.schemas.orders import (
    ModalityCode,
    OrderCancel,
    OrderCreate,
    OrderSchedule,
    OrderUpdate,
    Text,
    UtcDatetime,
)
from dicom_node.domain.enums import Priority, RequestStatus
from dicom_node.domain.permissions import Permission
from dicom_node.services.workflow import order_steps
from dicom_node.services.workflow import orders as order_service
from dicom_node.services.workflow.order_listing import (
    OrderFilter,
    list_orders,
    orders_by_ids,
    read_order,
    record_order_reads,
    study_ids_of_orders,
)
from dicom_node.services.workflow.orders import NewOrder, OrderInfo

if TYPE_CHECKING:
    from api.graphql.admin import User
    from api.graphql.studies import DicomStudy

# an order field that cannot be empty: null in an update leaves it as it is (as REST)
_REQUIRED = ("priority", "study_description", "requested_modality", "patient_name")


@strawberry.type(description="An order (REST: /api/orders/{id}).")
class ImagingRequest:
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
    referring_physician_id: int | None = strawberry.field(
        description="the referring physician as a user: chosen by the scheduler, or matched "
        "from referringPhysicianName; they see the order, its study and reports"
    )
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

    @classmethod
    def of(cls, info: OrderInfo) -> ImagingRequest:
        return cls(**{name: getattr(info, name) for name in OrderInfo.__slots__})

    @strawberry.field(
        description="The studies linked to this order (those the caller may see).",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def studies(
        self, info: Info[GraphQLContext, None]
    ) -> list[Annotated[DicomStudy, strawberry.lazy("api.graphql.studies")]]:
        # imported here, as the other areas' loaders below: their modules
        # import this one (a study's order), and a cycle must not depend on
        # which module is imported first
        from api.graphql.studies import study_by_id

        ids = await info.context.loader(_study_ids).load(self.id)
        found = await asyncio.gather(*(study_by_id(info.context, i) for i in ids))
        return [study for study in found if study is not None]

    # as every edge to a user (a report's radiologist, an item's holder): who
    # they are (id, username, name, role) for whoever may read the order; the
    # account itself (email, active...) only for user managers (admin.User)
    @strawberry.field(
        description="The user who placed the order.",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def requested_by(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[User, strawberry.lazy("api.graphql.admin")] | None:
        from api.graphql.admin import user_by_id

        if self.requested_by_id is None:
            return None
        return await user_by_id(info.context, self.requested_by_id)

    @strawberry.field(
        description="The referring physician as a user, if known.",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def referring_physician(
        self, info: Info[GraphQLContext, None]
    ) -> Annotated[User, strawberry.lazy("api.graphql.admin")] | None:
        from api.graphql.admin import user_by_id

        if self.referring_physician_id is None:
            return None
        return await user_by_id(info.context, self.referring_physician_id)


async def _orders(context: GraphQLContext, ids: Sequence[int]) -> Sequence[ImagingRequest | None]:
    found = await context.read(orders_by_ids, ids, principal=context.user)
    return [ImagingRequest.of(found[i]) if i in found else None for i in ids]


async def _study_ids(context: GraphQLContext, order_ids: Sequence[int]) -> Sequence[list[int]]:
    found = await context.read(study_ids_of_orders, order_ids, principal=context.user)
    return [found.get(order_id, []) for order_id in order_ids]


async def order_by_id(context: GraphQLContext, order_id: int) -> ImagingRequest | None:
    """An order by id, batched per operation; None when there is none the
    caller may see (the visibility rule)."""
    return await context.loader(_orders).load(order_id)


async def _order_reads(context: GraphQLContext, ids: Sequence[int]) -> Sequence[None]:
    await context.write(
        record_order_reads, ids, principal=context.user, source_address=context.address
    )
    return [None] * len(ids)


async def order_read_by_id(context: GraphQLContext, order_id: int) -> ImagingRequest | None:
    """``order_by_id`` audited as REST's order detail (``order_read``), once per
    order and operation: for an order shown on its own, not as a link from a
    record whose own read is audited (a study's order, a worklist page's)."""
    order = await order_by_id(context, order_id)
    if order is not None:
        await context.loader(_order_reads).load(order_id)
    return order


# --------------------------------------------------------------------------- inputs


class OrderQuery(BaseModel):
    """The REST listing's query constraints (api/routes/orders.py's parameters),
    so a filter REST refuses is refused here too."""

    patient_id: Annotated[Text, Field(max_length=64)] | None = None
    issuer_of_patient_id: Annotated[Text, Field(max_length=64)] | None = None
    patient_name: Annotated[Text, Field(max_length=324)] | None = None
    modality: ModalityCode | None = None
    accession_number: Annotated[Text, Field(max_length=16)] | None = None
    imaging_center_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    requested_by_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    referring_physician_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    scheduled_from: UtcDatetime | None = None
    scheduled_to: UtcDatetime | None = None
    created_from: UtcDatetime | None = None
    created_to: UtcDatetime | None = None
    sort: Annotated[Text, Field(max_length=200)] | None = None


@strawberry.input(description="A new order (REST: POST /api/orders).")
class CreateOrderInput:
    patient_id: str
    patient_name: str
    requested_modality: str
    study_description: str = strawberry.field(description="the procedure")
    issuer_of_patient_id: str = ""
    patient_birth_date: str | None = strawberry.field(default=None, description="YYYYMMDD")
    patient_sex: str | None = strawberry.field(default=None, description="M, F or O")
    priority: Priority = Priority.ROUTINE
    clinical_indication: str | None = None
    referring_physician_name: str | None = None
    referring_physician_id: int | None = strawberry.field(
        default=None,
        description="an active user of role referring_physician; fills "
        "referringPhysicianName when that is not given",
    )
    requesting_physician: str | None = None
    scheduled_performing_physician_name: str | None = None
    imaging_center_id: int | None = None
    force: bool = strawberry.field(
        default=False,
        description="create it although the patient has an open order for the same "
        "procedure (needs forceReason, audited)",
    )
    force_reason: str | None = None


@strawberry.input(description="Fields to change; only those sent are changed.")
class UpdateOrderInput:
    priority: Priority | None = strawberry.UNSET
    clinical_indication: str | None = strawberry.UNSET
    study_description: str | None = strawberry.UNSET
    referring_physician_name: str | None = strawberry.UNSET
    referring_physician_id: int | None = strawberry.field(
        default=strawberry.UNSET, description="null unlinks the referring physician"
    )
    requesting_physician: str | None = strawberry.UNSET
    scheduled_performing_physician_name: str | None = strawberry.UNSET
    requested_modality: str | None = strawberry.UNSET
    imaging_center_id: int | None = strawberry.UNSET
    patient_name: str | None = strawberry.UNSET
    patient_birth_date: str | None = strawberry.UNSET
    patient_sex: str | None = strawberry.UNSET


@strawberry.input(description="A modality of the requested type and a time with a time zone.")
class ScheduleOrderInput:
    modality_id: int
    scheduled_at: datetime


# --------------------------------------------------------------------------- root fields


@strawberry.type
class Query:
    @strawberry.field(
        description="Orders the caller may see (a referring physician: those they requested "
        "or are the referrer of), newest first unless sort says otherwise (REST: GET "
        "/api/orders; audited as a Query).",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def orders(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        status: list[RequestStatus] | None = None,
        priority: list[Priority] | None = None,
        patient_id: str | None = None,
        issuer_of_patient_id: str | None = None,
        patient_name: Annotated[
            str | None, strawberry.argument(description="prefix, case-insensitive")
        ] = None,
        modality: str | None = None,
        accession_number: str | None = None,
        imaging_center_id: int | None = None,
        requested_by_id: int | None = None,
        referring_physician_id: int | None = None,
        scheduled_from: datetime | None = None,
        scheduled_to: datetime | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        sort: Annotated[
            str | None, strawberry.argument(description="comma-separated; '-' for descending")
        ] = None,
    ) -> Connection[ImagingRequest]:
        context = info.context
        offset, limit = page_window(first, after)
        query = validated(
            OrderQuery,
            {
                "patient_id": patient_id,
                "issuer_of_patient_id": issuer_of_patient_id,
                "patient_name": patient_name,
                "modality": modality,
                "accession_number": accession_number,
                "imaging_center_id": imaging_center_id,
                "requested_by_id": requested_by_id,
                "referring_physician_id": referring_physician_id,
                "scheduled_from": scheduled_from,
                "scheduled_to": scheduled_to,
                "created_from": created_from,
                "created_to": created_to,
                "sort": sort,
            },
        )
        filters = OrderFilter(
            status=tuple(s.value for s in status or ()),
            priority=tuple(p.value for p in priority or ()),
            patient_id=query.patient_id,
            issuer_of_patient_id=query.issuer_of_patient_id,
            patient_name=query.patient_name,
            modality=query.modality,
            accession_number=query.accession_number,
            imaging_center_id=query.imaging_center_id,
            requested_by_id=query.requested_by_id,
            referring_physician_id=query.referring_physician_id,
            scheduled_from=query.scheduled_from,
            scheduled_to=query.scheduled_to,
            created_from=query.created_from,
            created_to=query.created_to,
        )
        listed = await audited_page(
            context,
            list_orders,
            narrowed=query.patient_id is not None or bool(query.patient_name),
            action="orders_queried",
            target_class="ImagingRequest",
            query={**filters.query_keys(), "sort": query.sort, "offset": offset, "limit": limit},
            filters=filters,
            sort=query.sort,
            offset=offset,
            limit=limit,
        )
        return connection(
            [ImagingRequest.of(o) for o in listed.items], total=listed.total, offset=offset
        )

    @strawberry.field(
        description="One order (REST: GET /api/orders/{id}; audited as a patient record "
        "read). NOT_FOUND for an order the caller may not see.",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def order(self, info: Info[GraphQLContext, None], id: int) -> ImagingRequest | None:
        context = info.context
        found = await context.write(
            read_order, record_id(id), principal=context.user, source_address=context.address
        )
        return ImagingRequest.of(found)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A new order (requested), requested by the caller. An open order of the "
        "same patient for the same modality and procedure within the duplicate window is "
        "CONFLICT with that order in extensions.existing, unless force with a forceReason "
        "(audited). REST: POST /api/orders.",
        extensions=[requires(Permission.ORDERS_CREATE)],
    )
    async def create_order(
        self, info: Info[GraphQLContext, None], input: CreateOrderInput
    ) -> ImagingRequest:
        context = info.context
        body = validated(OrderCreate, vars(input))
        new = NewOrder(
            patient_id=body.patient_id,
            issuer_of_patient_id=body.issuer_of_patient_id,
            patient_name=body.patient_name,
            patient_birth_date=body.patient_birth_date,
            patient_sex=body.patient_sex,
            requested_modality=body.requested_modality,
            study_description=body.study_description,
            priority=body.priority.value,
            clinical_indication=body.clinical_indication,
            referring_physician_name=body.referring_physician_name,
            referring_physician_id=body.referring_physician_id,
            requesting_physician=body.requesting_physician,
            scheduled_performing_physician_name=body.scheduled_performing_physician_name,
            imaging_center_id=body.imaging_center_id,
        )
        created = await context.write(
            order_service.create_order,
            new,
            principal=context.user,
            duplicate_window=timedelta(hours=context.settings.duplicate_order_window_hours),
            force=body.force,
            force_reason=body.force_reason,
            source_address=context.address,
        )
        return ImagingRequest.of(created)

    @strawberry.mutation(
        description="Edit an order while it is requested or scheduled (CONFLICT otherwise); "
        "a referring physician only orders they placed, only while requested. Audited with "
        "the changed fields before and after. REST: PATCH /api/orders/{id}.",
        extensions=[requires(Permission.ORDERS_CREATE)],
    )
    async def update_order(
        self, info: Info[GraphQLContext, None], id: int, input: UpdateOrderInput
    ) -> ImagingRequest:
        context = info.context
        body = validated(OrderUpdate, given(vars(input)))
        changes = {
            name: value
            for name, value in body.model_dump(exclude_unset=True, mode="json").items()
            # null for a field that cannot be empty leaves it as it is (as REST)
            if value is not None or name not in _REQUIRED
        }
        updated = await context.write(
            order_service.update_order,
            record_id(id),
            changes=changes,
            principal=context.user,
            source_address=context.address,
        )
        return ImagingRequest.of(updated)

    @strawberry.mutation(
        description="Schedule, or reschedule, on a modality of the requested type. The "
        "accession number and StudyInstanceUID are assigned the first time and kept on "
        "reschedule. CONFLICT unless requested or scheduled. REST: POST "
        "/api/orders/{id}/schedule.",
        extensions=[requires(Permission.ORDERS_SCHEDULE)],
    )
    async def schedule_order(
        self, info: Info[GraphQLContext, None], id: int, input: ScheduleOrderInput
    ) -> ImagingRequest:
        context = info.context
        body = validated(OrderSchedule, vars(input))
        scheduled = await context.write(
            order_service.schedule_order_by_id,
            record_id(id),
            modality_id=body.modality_id,
            scheduled_at=body.scheduled_at,
            principal=context.user,
            source_address=context.address,
        )
        return ImagingRequest.of(scheduled)

    @strawberry.mutation(
        description="requested/scheduled -> cancelled with a reason (CONFLICT otherwise). A "
        "referring physician cancels only an order they placed, only while requested. REST: "
        "POST /api/orders/{id}/cancel.",
        extensions=[requires(Permission.ORDERS_CANCEL)],
    )
    async def cancel_order(
        self, info: Info[GraphQLContext, None], id: int, reason: str
    ) -> ImagingRequest:
        context = info.context
        body = validated(OrderCancel, {"reason": reason})
        cancelled = await context.write(
            order_steps.cancel_order,
            record_id(id),
            reason=body.reason,
            principal=context.user,
            source_address=context.address,
        )
        return ImagingRequest.of(cancelled)

    @strawberry.mutation(
        description="scheduled -> in_progress (sets examStartedAt); CONFLICT otherwise. "
        "REST: POST /api/orders/{id}/start.",
        extensions=[requires(Permission.ORDERS_PERFORM)],
    )
    async def start_order(self, info: Info[GraphQLContext, None], id: int) -> ImagingRequest:
        context = info.context
        started = await context.write(
            order_steps.start_order,
            record_id(id),
            principal=context.user,
            source_address=context.address,
        )
        return ImagingRequest.of(started)

    @strawberry.mutation(
        description="in_progress -> performed (sets examCompletedAt); CONFLICT otherwise. "
        "REST: POST /api/orders/{id}/complete.",
        extensions=[requires(Permission.ORDERS_PERFORM)],
    )
    async def complete_order(self, info: Info[GraphQLContext, None], id: int) -> ImagingRequest:
        context = info.context
        completed = await context.write(
            order_steps.complete_order,
            record_id(id),
            principal=context.user,
            source_address=context.address,
        )
        return ImagingRequest.of(completed)
