"""Turnaround metrics (docs/domain.md#turnaround-metrics): median, p90 and % within SLA per
group."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import Context, require
from api.schemas.common import AUTH_ERRORS
from api.schemas.turnaround import GroupPublic, MetricPublic, TurnaroundPublic
from dicom_node.db.types import as_utc
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.reporting.turnaround import GroupBy, turnaround, turnaround_window

router = APIRouter(prefix="/api", tags=["turnaround"])


@router.get("/turnaround", response_model=TurnaroundPublic, responses=AUTH_ERRORS)
def metrics(
    context: Context,
    _user: Annotated[Principal, Depends(require(Permission.TURNAROUND_READ))],
    since: Annotated[
        datetime | None, Query(alias="from", description="inclusive; default: 'to' - 30 days")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="exclusive; default: now")
    ] = None,
    group_by: GroupBy = GroupBy.NONE,
) -> TurnaroundPublic:
    """Order->exam, exam->preliminary, exam->final, order->final and critical
    identified->communicated: count, open, median and p90 minutes, % within SLA,
    for events starting in [from, to) (at most 366 days; 422 beyond), grouped by
    priority, modality, center or radiologist. Times without a zone are UTC."""
    start, end = turnaround_window(
        since and as_utc(since), until and as_utc(until), now=datetime.now(UTC)
    )
    settings = context.settings
    with context.db.read() as session:
        report = turnaround(
            session,
            since=start,
            until=end,
            group_by=group_by,
            sla=settings.sla(),
            critical_deadline_minutes=settings.critical_result_deadline_minutes,
        )
    return TurnaroundPublic.model_validate(
        {
            "from": report.since,
            "to": report.until,
            "group_by": report.group_by.value,
            "sla_minutes": report.sla_minutes,
            "critical_deadline_minutes": report.critical_deadline_minutes,
            "groups": [
                GroupPublic(
                    group=group.group,
                    metrics=[
                        MetricPublic.model_validate(stats, from_attributes=True)
                        for stats in group.metrics
                    ],
                )
                for group in report.groups
            ],
        }
    )
