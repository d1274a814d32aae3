"""Turnaround times (docs/domain.md#turnaround-metrics "Turnaround times"): median, p90 and %
within SLA.

Metrics, each counted for the events whose *start* falls in the window
[since, until):

- order_to_exam: order created -> exam started (imaging_requests.created_at ->
  exam_started_at);
- exam_to_preliminary: exam completed -> first preliminary report
  (exam_completed_at -> reports.preliminary_at);
- exam_to_final: exam completed -> first final signature;
- order_to_final: order created -> first final signature;
- critical_to_communicated: critical finding identified -> communicated
  (critical_communications.identified_at -> communicated_at).

The first final signature of an order is the earliest of its reports'
``signed_at`` and their first ``final`` version: an addendum signed later does
not move it. Cancelled orders are left out. An event that started in the window
but has not ended yet counts as ``open``, not in the statistics.

SLA: the priority's reading target (settings ``sla_<priority>_minutes``) for the
four order metrics, order->exam included (one table of targets per priority);
``critical_result_deadline_minutes`` for critical results. A duration equal to
the target is within it. A negative duration (an end recorded before its
start) is left out of the statistics.

Percentiles are computed here, in Python, over the durations fetched (portable
across SQLite and PostgreSQL): the median is the usual one (mean of the two
middle values for an even count), p90 is the nearest-rank percentile (the
smallest duration with at least 90 % of durations at or below it).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Report,
    ReportVersion,
    User,
)
from dicom_node.domain.enums import Priority, RequestStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.matching import SlaPolicy

MAX_RANGE = timedelta(days=366)
DEFAULT_RANGE = timedelta(days=30)
FETCH_BATCH = 2000


class Metric(StrEnum):
    ORDER_TO_EXAM = "order_to_exam"
    EXAM_TO_PRELIMINARY = "exam_to_preliminary"
    EXAM_TO_FINAL = "exam_to_final"
    ORDER_TO_FINAL = "order_to_final"
    CRITICAL_TO_COMMUNICATED = "critical_to_communicated"


class GroupBy(StrEnum):
    NONE = "none"
    PRIORITY = "priority"
    MODALITY = "modality"
    CENTER = "center"
    RADIOLOGIST = "radiologist"


@dataclass(frozen=True, slots=True)
class MetricStats:
    metric: Metric
    count: int
    open: int
    median_minutes: float | None
    p90_minutes: float | None
    within_sla_percent: float | None


@dataclass(frozen=True, slots=True)
class GroupStats:
    # the priority, modality code, center code or radiologist username;
    # None: the whole window (group_by none), or events without that attribute
    group: str | None
    metrics: list[MetricStats]


@dataclass(frozen=True, slots=True)
class TurnaroundReport:
    since: datetime
    until: datetime
    group_by: GroupBy
    sla_minutes: dict[str, int]
    critical_deadline_minutes: int
    groups: list[GroupStats]


def turnaround_window(
    since: datetime | None, until: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """The window asked for: default the 30 days up to now; at most 366 days."""
    try:
        end = until or (since + DEFAULT_RANGE if since is not None else now)
        start = since or end - DEFAULT_RANGE
    except OverflowError:
        raise InvalidValue("the date range is out of bounds", field="from") from None
    if start >= end:
        raise InvalidValue("'from' must be before 'to'", field="from")
    if end - start > MAX_RANGE:
        raise InvalidValue("the range may span at most 366 days", field="to")
    return start, end


@dataclass
class _Durations:
    minutes: list[float] = field(default_factory=list)
    within: int = 0
    open: int = 0

    def add(self, start: datetime, end: datetime | None, sla_minutes: int | None) -> None:
        if end is None:
            self.open += 1
            return
        value = (end - start).total_seconds() / 60
        if value < 0:
            # an end recorded before its start (clock skew, a backdated entry
            # such as a critical result told before the record's identified_at
            # in data written before that was refused) is not a turnaround:
            # left out of count, median, p90 and % within SLA
            return
        self.minutes.append(value)
        if sla_minutes is not None and value <= sla_minutes:
            self.within += 1

    def stats(self, metric: Metric) -> MetricStats:
        values = sorted(self.minutes)
        if not values:
            return MetricStats(metric, 0, self.open, None, None, None)
        p90 = values[math.ceil(0.9 * len(values)) - 1]
        return MetricStats(
            metric=metric,
            count=len(values),
            open=self.open,
            median_minutes=round(statistics.median(values), 2),
            p90_minutes=round(p90, 2),
            within_sla_percent=round(100 * self.within / len(values), 2),
        )


@dataclass
class _Order:
    priority: str
    modality: str | None
    center: str | None
    created_at: datetime
    exam_started_at: datetime | None
    exam_completed_at: datetime | None
    preliminary_at: datetime | None = None
    final_at: datetime | None = None
    # (report created_at, radiologist id) of the order's first report
    first_report: tuple[datetime, int] | None = None


def turnaround(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    group_by: GroupBy,
    sla: SlaPolicy,
    critical_deadline_minutes: int,
) -> TurnaroundReport:
    """The five metrics over [since, until), per group."""
    orders = _orders(session, since, until)
    _add_reports(session, orders, since, until)
    usernames = _usernames(session, orders)

    buckets: dict[str | None, dict[Metric, _Durations]] = defaultdict(
        lambda: {metric: _Durations() for metric in Metric}
    )
    for order in orders.values():
        radiologist = usernames.get(order.first_report[1]) if order.first_report else None
        bucket = buckets[
            _group(group_by, order.priority, order.modality, order.center, radiologist)
        ]
        target = _sla_minutes(sla, order.priority)
        if since <= order.created_at < until:
            bucket[Metric.ORDER_TO_EXAM].add(order.created_at, order.exam_started_at, target)
            bucket[Metric.ORDER_TO_FINAL].add(order.created_at, order.final_at, target)
        completed = order.exam_completed_at
        if completed is not None and since <= completed < until:
            bucket[Metric.EXAM_TO_PRELIMINARY].add(completed, order.preliminary_at, target)
            bucket[Metric.EXAM_TO_FINAL].add(completed, order.final_at, target)

    for row in _critical(session, since, until):
        key = _group(group_by, row.priority, row.modality, row.center, row.username)
        buckets[key][Metric.CRITICAL_TO_COMMUNICATED].add(
            row.identified_at, row.communicated_at, critical_deadline_minutes
        )

    if group_by is GroupBy.NONE and not buckets:
        _ = buckets[None]  # the whole window, even when empty
    groups = [
        GroupStats(group=key, metrics=[buckets[key][metric].stats(metric) for metric in Metric])
        for key in sorted(buckets, key=lambda key: _sort_key(group_by, key))
    ]
    return TurnaroundReport(
        since=since,
        until=until,
        group_by=group_by,
        sla_minutes={
            Priority.STAT.value: sla.stat_minutes,
            Priority.URGENT.value: sla.urgent_minutes,
            Priority.ROUTINE.value: sla.routine_minutes,
        },
        critical_deadline_minutes=critical_deadline_minutes,
        groups=groups,
    )


def _sla_minutes(sla: SlaPolicy, priority: str | None) -> int | None:
    return {
        Priority.STAT.value: sla.stat_minutes,
        Priority.URGENT.value: sla.urgent_minutes,
        Priority.ROUTINE.value: sla.routine_minutes,
    }.get(priority or "")


def _group(
    group_by: GroupBy,
    priority: str | None,
    modality: str | None,
    center: str | None,
    radiologist: str | None,
) -> str | None:
    return {
        GroupBy.NONE: None,
        GroupBy.PRIORITY: priority,
        GroupBy.MODALITY: modality,
        GroupBy.CENTER: center,
        GroupBy.RADIOLOGIST: radiologist,
    }[group_by]


def _sort_key(group_by: GroupBy, key: str | None) -> tuple[int, int, str]:
    if key is None:
        return (1, 0, "")
    if group_by is GroupBy.PRIORITY:
        ranks = {p.value: i for i, p in enumerate(Priority)}
        return (0, ranks.get(key, len(ranks)), key)
    return (0, 0, key)


def _in_window(since: datetime, until: datetime) -> Any:
    created = (ImagingRequest.created_at >= since) & (ImagingRequest.created_at < until)
    completed = (ImagingRequest.exam_completed_at >= since) & (
        ImagingRequest.exam_completed_at < until
    )
    return (created | completed) & (ImagingRequest.status != RequestStatus.CANCELLED.value)


def _orders(session: Session, since: datetime, until: datetime) -> dict[int, _Order]:
    study_modality = (
        select(func.min(DicomStudy.modality_type))
        .where(DicomStudy.imaging_request_id == ImagingRequest.id)
        .correlate(ImagingRequest)
        .scalar_subquery()
    )
    statement = (
        select(
            ImagingRequest.id,
            ImagingRequest.priority,
            func.coalesce(ImagingRequest.requested_modality, study_modality),
            ImagingCenter.code,
            ImagingRequest.created_at,
            ImagingRequest.exam_started_at,
            ImagingRequest.exam_completed_at,
        )
        .outerjoin(ImagingCenter, ImagingCenter.id == ImagingRequest.imaging_center_id)
        .where(_in_window(since, until))
        .execution_options(yield_per=FETCH_BATCH)
    )
    orders: dict[int, _Order] = {}
    for order_id, priority, modality, center, created, started, completed in session.execute(
        statement
    ):
        orders[order_id] = _Order(priority, modality, center, created, started, completed)
    return orders


def _add_reports(
    session: Session, orders: dict[int, _Order], since: datetime, until: datetime
) -> None:
    first_final = (
        select(ReportVersion.report_id, func.min(ReportVersion.created_at).label("at"))
        .where(ReportVersion.kind == "final")
        .group_by(ReportVersion.report_id)
        .subquery()
    )
    statement = (
        select(
            DicomStudy.imaging_request_id,
            Report.created_at,
            Report.radiologist_id,
            Report.preliminary_at,
            Report.signed_at,
            first_final.c.at,
        )
        .join(DicomStudy, DicomStudy.id == Report.dicom_study_id)
        .join(ImagingRequest, ImagingRequest.id == DicomStudy.imaging_request_id)
        .outerjoin(first_final, first_final.c.report_id == Report.id)
        .where(_in_window(since, until))
        .execution_options(yield_per=FETCH_BATCH)
    )
    for order_id, created, radiologist, preliminary, signed, versioned in session.execute(
        statement
    ):
        order = orders.get(order_id)
        if order is None:
            continue
        order.preliminary_at = _earliest(order.preliminary_at, preliminary)
        order.final_at = _earliest(order.final_at, signed, versioned)
        if order.first_report is None or created < order.first_report[0]:
            order.first_report = (created, radiologist)


def _earliest(*values: datetime | None) -> datetime | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def _usernames(session: Session, orders: dict[int, _Order]) -> dict[int, str]:
    ids = {order.first_report[1] for order in orders.values() if order.first_report}
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids))).all()
    return dict(rows)


@dataclass(frozen=True, slots=True)
class _Critical:
    identified_at: datetime
    communicated_at: datetime | None
    priority: str | None
    modality: str | None
    center: str | None
    username: str | None


def _critical(session: Session, since: datetime, until: datetime) -> list[_Critical]:
    statement = (
        select(
            CriticalResultCommunication.identified_at,
            CriticalResultCommunication.communicated_at,
            ImagingRequest.priority,
            func.coalesce(ImagingRequest.requested_modality, DicomStudy.modality_type),
            ImagingCenter.code,
            User.username,
        )
        .join(Report, Report.id == CriticalResultCommunication.report_id)
        .join(DicomStudy, DicomStudy.id == Report.dicom_study_id)
        .join(User, User.id == Report.radiologist_id)
        .outerjoin(ImagingRequest, ImagingRequest.id == DicomStudy.imaging_request_id)
        .outerjoin(ImagingCenter, ImagingCenter.id == ImagingRequest.imaging_center_id)
        .where(
            CriticalResultCommunication.identified_at >= since,
            CriticalResultCommunication.identified_at < until,
        )
        .execution_options(yield_per=FETCH_BATCH)
    )
    return [_Critical(*row) for row in session.execute(statement)]
