"""Turnaround metrics: median, p90 and % within SLA per group."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class MetricPublic(BaseModel):
    metric: str = Field(description="order_to_exam, exam_to_preliminary, exam_to_final, ...")
    count: int = Field(description="events that started in the window and ended")
    open: int = Field(description="events that started in the window and have not ended")
    median_minutes: float | None
    p90_minutes: float | None
    within_sla_percent: float | None


class GroupPublic(BaseModel):
    group: str | None = Field(
        description="priority, modality, center code or radiologist username; "
        "null for the whole window or events without that attribute"
    )
    metrics: list[MetricPublic]


class TurnaroundPublic(BaseModel):
    # 'from' and 'to' of the request, as applied (inclusive, exclusive)
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    group_by: str
    sla_minutes: dict[str, int]
    critical_deadline_minutes: int
    groups: list[GroupPublic]

    model_config = {"populate_by_name": True}
