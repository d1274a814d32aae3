"""The reading worklist: queues, claim (atomic), release, reassign, item detail.

Listing a queue shows patient names and ids: it is audited as a Query
(110112), once per interval for a listing repeated by the same user from the
same address (it is polled; see api/listing_audit.py). Opening one item is
audited as a patient record access.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.cache import FeedCache
from api.deps import Context, client_address, require
from api.listing_audit import RepeatedListingAudit, record_listing
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.worklist import (
    ClaimRequest,
    ReassignRequest,
    WorklistItemDetailPublic,
    WorklistItemPublic,
)
from dicom_node.domain.enums import Priority, QueueType, WorklistStatus
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.query.changes import latest_seq
from dicom_node.services.workflow.reading_worklist import (
    claim_worklist_item,
    reassign_worklist_item,
    release_worklist_item,
    worklist_item_detail,
)
from dicom_node.services.workflow.worklist_listing import (
    OPEN_STATUSES,
    UNASSIGNED,
    WorklistFilter,
    WorklistSort,
    list_worklist,
)

router = APIRouter(prefix="/api", tags=["worklist"])

ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="worklist item id")]
Reader = Annotated[Principal, Depends(require(Permission.WORKLIST_READ))]


def _assignee(value: str | None, principal: Principal) -> int | None:
    if value is None:
        return None
    if value == "me":
        return principal.user_id
    if value == "none":
        return UNASSIGNED
    return int(value)


@router.get("/worklist", response_model=Page[WorklistItemPublic], responses=AUTH_ERRORS)
def list_queue(
    context: Context,
    user: Reader,
    request: Request,
    queue: Annotated[QueueType, Query(description="which queue")] = QueueType.READING,
    status: Annotated[
        list[WorklistStatus] | None, Query(description="default: pending and claimed")
    ] = None,
    assigned_to: Annotated[
        str | None,
        Query(pattern=r"^(me|none|[1-9][0-9]{0,17})$", description="me, none or a user id"),
    ] = None,
    modality: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$", description="e.g. CT")
    ] = None,
    priority: Annotated[Priority | None, Query()] = None,
    overdue: Annotated[bool | None, Query(description="past due now (or escalated)")] = None,
    sort: Annotated[
        WorklistSort,
        Query(description="priority (STAT first, then earliest due), due_at, created_at"),
    ] = WorklistSort.PRIORITY,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Response:
    """A queue, by default STAT -> urgent -> routine, then earliest due first
    (``sort``: ``due_at`` earliest due first, ``created_at`` / ``-created_at``
    oldest / newest first).

    ``overdue`` on each item is computed now (due time passed), not only the
    flag the escalation job stores. Audited as a Query (110112); the same
    listing repeated by the same user from the same address is audited once per
    interval, with the count of repeats. Pages are reused while the change feed
    has not moved, for at most a second (api/cache.py)."""
    query = WorklistFilter(
        queue=queue,
        statuses=tuple(dict.fromkeys(status)) if status else OPEN_STATUSES,
        assigned_to=_assignee(assigned_to, user),
        modality=modality.upper() if modality else None,
        priority=priority,
        overdue=overdue,
        sort=sort,
    )
    cache: FeedCache[bytes] = request.app.state.worklist_cache
    key = (query, offset, limit)
    with context.db.read() as session:
        seq = latest_seq(session)
        body = cache.get(key, seq)
        if body is None:
            page = list_worklist(session, query=query, offset=offset, limit=limit)
            body = (
                Page[WorklistItemPublic](
                    items=[WorklistItemPublic.of(entry) for entry in page.items],
                    total=page.total,
                    offset=offset,
                    limit=limit,
                )
                .model_dump_json()
                .encode()
            )
            cache.put(key, seq, body)
    source = client_address(request)
    audit: RepeatedListingAudit = request.app.state.listing_audit
    audit_key = (user.user_id, source, key)
    repeats = audit.due(audit_key)
    if repeats is not None:
        page_counts = json.loads(body)
        try:
            with context.db.unit_of_work() as session:
                record_listing(
                    session,
                    principal=user,
                    action="worklist_queried",
                    target_class="WorklistItem",
                    query={
                        "queue": query.queue.value,
                        "status": [status.value for status in query.statuses],
                        "assigned_to": assigned_to,
                        "modality": query.modality,
                        "priority": priority.value if priority else None,
                        "overdue": overdue,
                        "sort": sort.value,
                        "offset": offset,
                        "limit": limit,
                    },
                    matches=int(page_counts["total"]),
                    returned=len(page_counts["items"]),
                    source_address=source,
                    repeats=repeats,
                )
        except BaseException:
            # no event, no page: the next listing must write the event (with the
            # repeats this one would have reported), not be counted as audited
            audit.not_written(audit_key, repeats)
            raise
    # already validated and serialized once: sent as is
    return Response(body, media_type="application/json")


@router.get(
    "/worklist/{item_id}",
    response_model=WorklistItemDetailPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def read_item(
    context: Context, user: Reader, item_id: ItemId, request: Request
) -> WorklistItemDetailPublic:
    """One item with its patient's demographics and report id (audited: 110110)."""
    with context.db.unit_of_work() as session:
        detail = worklist_item_detail(
            session, item_id=item_id, principal=user, source_address=client_address(request)
        )
    return WorklistItemDetailPublic.of_detail(detail)


@router.post(
    "/worklist/{item_id}/claim",
    response_model=WorklistItemPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def claim_item(
    context: Context,
    user: Annotated[Principal, Depends(require(Permission.WORKLIST_CLAIM))],
    item_id: ItemId,
    request: Request,
    body: ClaimRequest | None = None,
) -> WorklistItemPublic:
    """Claim a pending item (atomic compare-and-set: of two concurrent claims
    exactly one wins; the other gets 409 with the holder in ``existing``).
    Claiming a reading item moves its study acquired -> reading and its
    first-cycle draft to the claimant. A reading or review item of a rejected,
    unmatched or conflicting study not released to reading is 409 with the
    metadata status as ``current_state``."""
    with context.db.unit_of_work() as session:
        entry = claim_worklist_item(
            session,
            item_id=item_id,
            principal=user,
            expected_version=body.version if body else None,
            allow_self_review=context.settings.report_self_review,
            source_address=client_address(request),
        )
    return WorklistItemPublic.of(entry)


@router.post(
    "/worklist/{item_id}/release",
    response_model=WorklistItemPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def release_item(
    context: Context, user: Reader, item_id: ItemId, request: Request
) -> WorklistItemPublic:
    """claimed -> pending: by the holder, an admin or a lead radiologist."""
    with context.db.unit_of_work() as session:
        entry = release_worklist_item(
            session, item_id=item_id, principal=user, source_address=client_address(request)
        )
    return WorklistItemPublic.of(entry)


@router.post(
    "/worklist/{item_id}/reassign",
    response_model=WorklistItemPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def reassign_item(
    context: Context,
    user: Annotated[Principal, Depends(require(Permission.WORKLIST_REASSIGN))],
    item_id: ItemId,
    body: ReassignRequest,
    request: Request,
) -> WorklistItemPublic:
    """Give an open item to an active radiologist (admin, or a lead radiologist).
    A first-cycle draft follows a reading item to its new holder; a review item
    is not given to the report's author unless report_self_review (422 user_id)."""
    with context.db.unit_of_work() as session:
        entry = reassign_worklist_item(
            session,
            item_id=item_id,
            user_id=body.user_id,
            principal=user,
            allow_self_review=context.settings.report_self_review,
            source_address=client_address(request),
        )
    return WorklistItemPublic.of(entry)
