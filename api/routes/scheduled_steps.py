"""Scheduled procedure steps: what a modality gets from a Modality Worklist
C-FIND, read over HTTP (the scheduler's "Scheduled steps" page).

The answers come from the MWL SCP's own service (``find_scheduled_steps``), so
the page and a modality see the same steps with the same attribute values
(DICOM keywords, the start date and time in the node's local time as the
worklist sends them). Each step also carries its order's id and its UTC start
(``scheduled_at``), for a link to the order and a time in the reader's zone.
The visibility rule is part of the worklist query itself, so ``limit`` and
``truncated`` count only the steps the user may see. The query is audited as
the worklist's Query (110112, level WORKLIST) with the user as the actor (user
id, username, role), as the API's other events are; a modality's C-FIND names
its peer.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, MAX_PAGE_SIZE
from api.schemas.facilities import AeTitle
from api.schemas.orders import ModalityCode
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.access.visibility import order_condition
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.query.modality_worklist import find_scheduled_steps, scheduled_orders

router = APIRouter(prefix="/api", tags=["orders"])

Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]


class ScheduledStepPublic(BaseModel):
    order_id: int
    scheduled_at: datetime | None = Field(description="the step's start, UTC")
    attributes: dict[str, str | None] = Field(
        description="the worklist's top-level attributes by DICOM keyword "
        "(PatientName, PatientID, AccessionNumber, RequestedProcedureID...)"
    )
    step: dict[str, str | None] = Field(
        description="the ScheduledProcedureStepSequence item by DICOM keyword "
        "(ScheduledStationAETitle, ScheduledProcedureStepStartDate/Time, Modality...)"
    )


class ScheduledSteps(BaseModel):
    items: list[ScheduledStepPublic]
    truncated: bool = Field(description="more steps matched than `limit`")


# the years a DICOM date (DA) can say here; no step starts outside them
FIRST_DAY, LAST_DAY = date(1800, 1, 1), date(2999, 12, 31)


def _dicom_date_range(first: date | None, last: date | None) -> str | None:
    """The start-date key of these bounds (each clamped to the years DA holds)."""
    if first is None and last is None:
        return None
    low = min(max(first, FIRST_DAY), LAST_DAY).strftime("%Y%m%d") if first else ""
    high = min(max(last, FIRST_DAY), LAST_DAY).strftime("%Y%m%d") if last else ""
    return low if low == high else f"{low}-{high}"


@router.get("/scheduled-steps", response_model=ScheduledSteps, responses=AUTH_ERRORS)
def list_scheduled_steps(
    context: Context,
    user: Reader,
    request: Request,
    modality: ModalityCode | None = None,
    station_ae_title: Annotated[AeTitle | None, Query()] = None,
    date_from: Annotated[date | None, Query(description="start date, node's local time")] = None,
    date_to: Annotated[date | None, Query(description="start date, node's local time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> ScheduledSteps:
    """The scheduled steps a Modality Worklist C-FIND with these keys answers
    (Modality, ScheduledStationAETitle, ScheduledProcedureStepStartDate), in
    start order. A referring physician sees only the steps of orders they may
    see (the visibility rule)."""
    step_keys: dict[str, str | None] = {}
    if modality:
        step_keys["Modality"] = modality
    if station_ae_title:
        step_keys["ScheduledStationAETitle"] = station_ae_title.strip()
    if date_from is not None and date_to is not None and date_from > date_to:
        return ScheduledSteps(items=[], truncated=False)  # a range that holds no day
    when = _dicom_date_range(date_from, date_to)
    if when:
        step_keys["ScheduledProcedureStepStartDate"] = when
    address = client_address(request)
    result = find_scheduled_steps(
        context.db,
        top={},
        step=step_keys,
        limit=limit,
        actor=user_actor(user, address),
        source_address=address,
        max_list_values=context.settings.max_query_list_values,
        visible=order_condition(user),
    )
    uids = [s.top["StudyInstanceUID"] for s in result.steps if s.top.get("StudyInstanceUID")]
    orders = scheduled_orders(context.db, uids, visible=order_condition(user))
    items = []
    for found in result.steps:
        order = orders.get(found.top.get("StudyInstanceUID") or "")
        if order is None:
            continue
        items.append(
            ScheduledStepPublic(
                order_id=order[0],
                scheduled_at=order[1],
                attributes={k: _text(v) for k, v in found.top.items()},
                step={k: _text(v) for k, v in found.step.items()},
            )
        )
    return ScheduledSteps(items=items, truncated=result.truncated)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
