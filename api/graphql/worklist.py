"""The reading worklist (REST: /api/worklist).

The same services as REST: the listing (worklist_listing.list_worklist, with
REST's filters, sort and totals; audited as REST's listing, once per interval
for a repeated one, throttled apart from REST's), one item opened (audited as
a patient record access), claim / release / reassign (audited by the
services).

A page is built from the listing's one statement: each entry already carries
its study's summary, which is the item's ``study`` (no statement, no await),
so ``study { ... }`` of a page costs nothing more unless it asks for a field
the summary lacks (then one statement for the whole page).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.relay import Connection
from api.graphql.studies import (
    DicomStudy,
    Patient,
    patient_of_study,
    worklist_study,
)
from api.listing_audit import RepeatedListingAudit, record_listing
from api.schemas.common import MAX_ID
from dicom_node.domain.enums import Priority, QueueType, WorklistStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.workflow.reading_worklist import (
    claim_worklist_item,
    reassign_worklist_item,
    release_worklist_item,
    worklist_item_detail,
)
from dicom_node.services.workflow.worklist_listing import (
    OPEN_STATUSES,
    UNASSIGNED,
    WorklistEntry,
    WorklistFilter,
    WorklistSort,
    list_worklist,
    worklist_entries,
)

if TYPE_CHECKING:
    from api.graphql.admin import User
    from api.graphql.orders import ImagingRequest
    from api.graphql.reports import Report

Info_ = Info[GraphQLContext, None]

MAX_VERSION = 2**31 - 1


@strawberry.type(description="A work item of a queue (REST: GET /api/worklist/{id}).")
class WorklistItem:
    id: int
    queue_type: QueueType
    status: WorklistStatus
    priority: Priority
    due_at: datetime | None
    overdue: bool = strawberry.field(
        description="past dueAt now (open items), completed late, or escalated"
    )
    assigned_to_id: int | None
    assigned_to_username: str | None = strawberry.field(description="the holder's username")
    claimed_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    version: int = strawberry.field(
        description="send it back with a claim to claim only this state"
    )
    order_id: int | None
    performed_procedure_step_id: int | None
    notes: str | None
    study_id: int | None
    entry: strawberry.Private[WorklistEntry]

    @classmethod
    def of(cls, entry: WorklistEntry) -> WorklistItem:
        return cls(
            id=entry.id,
            queue_type=QueueType(entry.queue_type),
            status=WorklistStatus(entry.status),
            priority=Priority(entry.priority),
            due_at=entry.due_at,
            overdue=entry.overdue,
            assigned_to_id=entry.assigned_to_id,
            assigned_to_username=entry.assigned_to_username,
            claimed_at=entry.claimed_at,
            completed_at=entry.completed_at,
            created_at=entry.created_at,
            version=entry.version,
            order_id=entry.order_id,
            performed_procedure_step_id=entry.performed_procedure_step_id,
            notes=entry.notes,
            study_id=entry.study.id if entry.study is not None else None,
            entry=entry,
        )

    # sync on purpose: the entry carries its study's summary, so for a worklist
    # reader the study is built without an await per item; the executor awaits
    # the loader's answer in the other case (worklist_study)
    @strawberry.field(extensions=[requires(Permission.STUDIES_READ)])
    def study(self, info: Info_) -> DicomStudy | None:
        if self.entry.study is None:
            return None
        return cast("DicomStudy | None", worklist_study(info.context, self.entry.study))

    @strawberry.field(
        description="The study's patient.", extensions=[requires(Permission.STUDIES_READ)]
    )
    async def patient(self, info: Info_) -> Patient | None:
        if self.study_id is None:
            return None
        return await patient_of_study(info.context, self.study_id)

    @strawberry.field(extensions=[requires(Permission.ORDERS_READ)])
    async def order(
        self, info: Info_
    ) -> Annotated[ImagingRequest, strawberry.lazy("api.graphql.orders")] | None:
        from api.graphql.orders import order_by_id

        if self.order_id is None:
            return None
        return await order_by_id(info.context, self.order_id)

    @strawberry.field(
        description="The study's report (as REST's item detail names it).",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def report(
        self, info: Info_
    ) -> Annotated[Report, strawberry.lazy("api.graphql.reports")] | None:
        from api.graphql.reports import report_of_study

        if self.study_id is None:
            return None
        return await report_of_study(info.context, self.study_id)

    # the listing names the holder already (assignedToUsername): the user
    # record is no more than a worklist reader sees of them
    @strawberry.field(description="The holder.", extensions=[requires(Permission.WORKLIST_READ)])
    async def assigned_to(
        self, info: Info_
    ) -> Annotated[User, strawberry.lazy("api.graphql.admin")] | None:
        from api.graphql.admin import user_by_id

        if self.assigned_to_id is None:
            return None
        return await user_by_id(info.context, self.assigned_to_id)


async def _items(context: GraphQLContext, ids: Sequence[int]) -> Sequence[WorklistItem | None]:
    found = await context.read(worklist_entries, principal=context.user, item_ids=ids)
    return [WorklistItem.of(entry) if entry is not None else None for entry in found]


async def worklist_item_by_id(context: GraphQLContext, item_id: int) -> WorklistItem | None:
    """A worklist item by id, batched per operation; None when there is none
    the caller may see."""
    return await context.loader(_items).load(item_id)


# --------------------------------------------------------------------------- root fields


def _item_id(value: int) -> int:
    if not 1 <= value <= MAX_ID:
        raise InvalidValue("id must be a worklist item id (1 or more)", field="id")
    return value


def _assignee(value: str | None, principal: Principal) -> int | None:
    """REST's ``assigned_to``: me, none or a user id."""
    if value is None:
        return None
    if value == "me":
        return principal.user_id
    if value == "none":
        return UNASSIGNED
    if not value.isascii() or not value.isdigit() or value.startswith("0") or len(value) > 18:
        raise InvalidValue("assignedTo must be me, none or a user id", field="assignedTo")
    return int(value)


def _modality(value: str | None) -> str | None:
    if value is None:
        return None
    if not (1 <= len(value) <= 16 and value.isascii() and value.isalnum()):
        raise InvalidValue("modality must be a modality code, e.g. CT", field="modality")
    return value.upper()


@strawberry.type
class Query:
    @strawberry.field(
        description="A queue (REST: GET /api/worklist): by default STAT -> urgent -> "
        "routine, then earliest due. Audited as a Query (110112), a repeated "
        "listing once per interval with its count of repeats.",
        extensions=[requires(Permission.WORKLIST_READ)],
    )
    async def worklist(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        queue: QueueType = QueueType.READING,
        status: Annotated[
            list[WorklistStatus] | None,
            strawberry.argument(description="default: pending and claimed"),
        ] = None,
        assigned_to: Annotated[
            str | None, strawberry.argument(description="me, none or a user id")
        ] = None,
        modality: str | None = None,
        priority: Priority | None = None,
        overdue: Annotated[
            bool | None, strawberry.argument(description="past due now (or escalated)")
        ] = None,
        sort: WorklistSort = WorklistSort.PRIORITY,
    ) -> Connection[WorklistItem]:
        context = info.context
        user = context.user
        offset, limit = relay.page_window(first, after)
        query = WorklistFilter(
            queue=queue,
            statuses=tuple(dict.fromkeys(status)) if status else OPEN_STATUSES,
            assigned_to=_assignee(assigned_to, user),
            modality=_modality(modality),
            priority=priority,
            overdue=overdue,
            sort=sort,
        )
        page = await context.read(list_worklist, query=query, offset=offset, limit=limit)
        audit: RepeatedListingAudit = context.state.listing_audit
        # apart from REST's key: a REST poll does not hide a GraphQL one
        audit_key = (user.user_id, context.address, ("graphql", query, offset, limit))
        repeats = audit.due(audit_key)
        if repeats is not None:
            try:
                await context.write(
                    record_listing,
                    principal=user,
                    action="worklist_queried",
                    target_class="WorklistItem",
                    query=_audited_query(query, assigned_to, offset, limit),
                    matches=page.total,
                    returned=len(page.items),
                    source_address=context.address,
                    repeats=repeats,
                )
            except BaseException:
                # no event, no page (as REST): the next listing writes it
                audit.not_written(audit_key, repeats)
                raise
        return relay.connection(
            [WorklistItem.of(entry) for entry in page.items], total=page.total, offset=offset
        )

    @strawberry.field(
        description="One item (REST: GET /api/worklist/{id}); audited as a patient "
        "record access (110110).",
        extensions=[requires(Permission.WORKLIST_READ)],
    )
    async def worklist_item(self, info: Info_, id: int) -> WorklistItem:
        context = info.context
        detail = await context.write(
            worklist_item_detail,
            item_id=_item_id(id),
            principal=context.user,
            source_address=context.address,
        )
        return WorklistItem.of(detail.entry)


def _audited_query(
    query: WorklistFilter, assigned_to: str | None, offset: int, limit: int
) -> dict[str, Any]:
    """The listing's parameters as REST's event names them."""
    return {
        "queue": query.queue.value,
        "status": [status.value for status in query.statuses],
        "assigned_to": assigned_to,
        "modality": query.modality,
        "priority": query.priority.value if query.priority else None,
        "overdue": query.overdue,
        "sort": query.sort.value,
        "offset": offset,
        "limit": limit,
    }


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Claim a pending item (atomic: of two concurrent claims one wins, "
        "the other gets CONFLICT with the holder in existing). With version: only "
        "if the item is still at it.",
        extensions=[requires(Permission.WORKLIST_CLAIM)],
    )
    async def claim_worklist_item(
        self, info: Info_, id: int, version: int | None = None
    ) -> WorklistItem:
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise InvalidValue("version must be 1 or more", field="version")
        context = info.context
        entry = await context.write(
            claim_worklist_item,
            item_id=_item_id(id),
            principal=context.user,
            expected_version=version,
            allow_self_review=context.settings.report_self_review,
            source_address=context.address,
        )
        return WorklistItem.of(entry)

    @strawberry.mutation(
        description="claimed -> pending: by the holder, an admin or a lead radiologist.",
        extensions=[requires(Permission.WORKLIST_READ)],
    )
    async def release_worklist_item(self, info: Info_, id: int) -> WorklistItem:
        context = info.context
        entry = await context.write(
            release_worklist_item,
            item_id=_item_id(id),
            principal=context.user,
            source_address=context.address,
        )
        return WorklistItem.of(entry)

    @strawberry.mutation(
        description="Give an open item to an active radiologist (admin, or a lead radiologist).",
        extensions=[requires(Permission.WORKLIST_REASSIGN)],
    )
    async def reassign_worklist_item(self, info: Info_, id: int, user_id: int) -> WorklistItem:
        if not 1 <= user_id <= MAX_ID:
            raise InvalidValue("userId must be a user id", field="userId")
        context = info.context
        entry = await context.write(
            reassign_worklist_item,
            item_id=_item_id(id),
            user_id=user_id,
            principal=context.user,
            allow_self_review=context.settings.report_self_review,
            source_address=context.address,
        )
        return WorklistItem.of(entry)
