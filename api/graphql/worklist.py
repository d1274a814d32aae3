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

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.answers import audit_listing
from api.graphql.context import GraphQLContext, Listing
from api.graphql.relay import Connection
from api.graphql.studies import (
    SUMMARY_FIELDS,
    DicomStudy,
    Patient,
    patient_of_study,
    study_patients,
    worklist_studies,
    worklist_study,
)
from api.schemas.common import MAX_ID
from dicom_node.domain.enums import Priority, QueueType, WorklistStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.workflow.reading_worklist import (
    claim_worklist_item,
    reassign_worklist_item,
    record_item_reads,
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
    # what the page loaded for every item at once (``prefetch``), by field
    # name: a field found here is answered without an awaitable
    prefetched: strawberry.Private[dict[str, object] | None] = None

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

    # sync on purpose: a page's items have their edges loaded beforehand
    # (``prefetch``: one batch per edge for the page, no coroutine per item);
    # an item alone returns the loader's awaitable, which the executor awaits
    def _edge(self, name: str, load: Callable[[], object]) -> Any:
        if self.prefetched is not None and name in self.prefetched:
            return self.prefetched[name]
        return load()

    @strawberry.field(extensions=[requires(Permission.STUDIES_READ)])
    def study(self, info: Info_) -> DicomStudy | None:
        study = self.entry.study
        if study is None:
            return None
        return cast(
            "DicomStudy | None",
            self._edge("study", lambda: worklist_study(info.context, study)),
        )

    @strawberry.field(
        description="The study's patient.", extensions=[requires(Permission.STUDIES_READ)]
    )
    def patient(self, info: Info_) -> Patient | None:
        study_id = self.study_id
        if study_id is None:
            return None
        return cast(
            "Patient | None",
            self._edge("patient", lambda: patient_of_study(info.context, study_id)),
        )

    @strawberry.field(extensions=[requires(Permission.ORDERS_READ)])
    def order(
        self, info: Info_
    ) -> Annotated[ImagingRequest, strawberry.lazy("api.graphql.orders")] | None:
        from api.graphql.orders import order_by_id

        order_id = self.order_id
        if order_id is None:
            return None
        return cast(
            "ImagingRequest | None",
            self._edge("order", lambda: order_by_id(info.context, order_id)),
        )

    @strawberry.field(
        description="The study's report (as REST's item detail names it).",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    def report(
        self, info: Info_
    ) -> Annotated[Report, strawberry.lazy("api.graphql.reports")] | None:
        from api.graphql.reports import report_of_study

        study_id = self.study_id
        if study_id is None:
            return None
        return cast(
            "Report | None", self._edge("report", lambda: report_of_study(info.context, study_id))
        )

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


async def _item_reads(context: GraphQLContext, ids: Sequence[int]) -> Sequence[None]:
    await context.write(
        record_item_reads, ids, principal=context.user, source_address=context.address
    )
    return [None] * len(ids)


async def worklist_item_read_by_id(context: GraphQLContext, item_id: int) -> WorklistItem | None:
    """``worklist_item_by_id`` audited as REST's item detail
    (``worklist_item_read``, with the patient), once per item and operation:
    for an item shown on its own, outside a listing whose Query event covers it."""
    item = await worklist_item_by_id(context, item_id)
    if item is not None:
        await context.loader(_item_reads).load(item_id)
    return item


# a worklist item's fields that lead to another record
EDGES = frozenset({"study", "patient", "order", "report", "assignedTo"})


async def prefetch(info: Info_, items: Sequence[WorklistItem]) -> None:
    """The edges each item of the page is asked for (study, patient, order,
    report), loaded for the whole page at once and set on the items.

    Each edge is a batch either way (one statement per page); what this saves
    is the executor's per-item work: an async field per item and edge is a
    coroutine and a task each, and an object with one is completed
    asynchronously, the page's list too. With the values set, the page is
    completed synchronously. An edge the caller may not follow (its
    permission) is not loaded: its field refuses as before."""
    asked = relay.selected(info.selected_fields, "worklist", "edges", "node")
    context = info.context
    user = context.user
    if not items or not asked & {"study", "patient", "order", "report"}:
        return
    from api.graphql.orders import order_by_id
    from api.graphql.reports import report_of_study

    studies = [item.entry.study for item in items]
    study_ids = [study.id for study in studies if study is not None]
    with_study = [item for item in items if item.entry.study is not None]
    loads: dict[str, tuple[list[WorklistItem], Awaitable[Sequence[object]]]] = {}
    if user.can(Permission.STUDIES_READ):
        if "study" in asked:
            fields = relay.selected(info.selected_fields, "worklist", "edges", "node", "study")
            # otherwise the entries' summaries are the studies, at once
            # (worklist_study): nothing to load beforehand
            if fields & SUMMARY_FIELDS:
                summaries = [study for study in studies if study is not None]
                loads["study"] = (with_study, worklist_studies(context, summaries))
        if "patient" in asked:
            loads["patient"] = (with_study, study_patients(context, study_ids))
    if "order" in asked and user.can(Permission.ORDERS_READ):
        with_order = [item for item in items if item.order_id is not None]
        loads["order"] = (
            with_order,
            asyncio.gather(*(order_by_id(context, cast(int, i.order_id)) for i in with_order)),
        )
    if "report" in asked and user.can(Permission.REPORTS_READ):
        loads["report"] = (
            with_study,
            asyncio.gather(*(report_of_study(context, cast(int, i.study_id)) for i in with_study)),
        )
    if not loads:
        return
    # all at once: each loader's batch is dispatched in the same step
    answers = await asyncio.gather(*(load for _, load in loads.values()))
    for item in items:
        item.prefetched = {}
    for (name, (targets, _)), values in zip(loads.items(), answers, strict=True):
        for item, value in zip(targets, values, strict=True):
            cast(dict[str, object], item.prefetched)[name] = value


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
        # the records each item was shown with: the page's Query event names
        # them (the patient's demographics, the order, the report), as a
        # listing audits what it shows; a page asking other edges is another query
        shown = sorted(relay.selected(info.selected_fields, "worklist", "edges", "node") & EDGES)
        listing = Listing(
            # apart from REST's key: a REST poll does not hide a GraphQL one
            key=(user.user_id, context.address, ("graphql", query, offset, limit, tuple(shown))),
            record={
                "principal": user,
                "action": "worklist_queried",
                "target_class": "WorklistItem",
                "query": {**_audited_query(query, assigned_to, offset, limit), "edges": shown},
                "matches": page.total,
                "returned": len(page.items),
                "source_address": context.address,
            },
        )
        await audit_listing(context, listing)
        items = [WorklistItem.of(entry) for entry in page.items]
        await prefetch(info, items)
        return relay.connection(items, total=page.total, offset=offset)

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
