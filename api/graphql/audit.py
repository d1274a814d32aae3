"""The audit trail and the turnaround metrics (REST: /api/audit-events, /api/turnaround).

Reading the trail is itself audited (110101 Audit Log Used, with the filters
and the page asked for), after the page is read, as on REST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.inputs import plain_text
from api.graphql.relay import Connection
from dicom_node.db.types import as_utc
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.permissions import Permission
from dicom_node.services.audit.trail import (
    AuditEventInfo,
    AuditFilters,
    get_audit_event,
    list_audit_events,
    record_audit_log_use,
)
from dicom_node.services.reporting.turnaround import (
    GroupBy,
    MetricStats,
    turnaround,
    turnaround_window,
)


class AuditOrder(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


@strawberry.type
class AuditEvent:
    id: int
    timestamp: datetime
    event_code: str
    action: str
    outcome: str
    actor: str | None
    actor_user_id: int | None
    actor_role: str | None
    source_address: str | None
    target_class: str | None
    target_id: str | None
    patient_id: str | None
    study_instance_uid: str | None
    accession_number: str | None
    reason: str | None
    details: JSON

    @classmethod
    def of(cls, info: AuditEventInfo) -> AuditEvent:
        return cls(
            id=info.id,
            timestamp=info.timestamp,
            event_code=info.event_code,
            action=info.action,
            outcome=info.outcome,
            actor=info.actor,
            actor_user_id=info.actor_user_id,
            actor_role=info.actor_role,
            source_address=info.source_address,
            target_class=info.target_class,
            target_id=info.target_id,
            patient_id=info.patient_id,
            study_instance_uid=info.study_instance_uid,
            accession_number=info.accession_number,
            reason=info.reason,
            details=JSON(info.details),
        )


@strawberry.type
class TurnaroundMetric:
    metric: str = strawberry.field(description="order_to_exam, exam_to_preliminary, ...")
    count: int = strawberry.field(description="events that started in the window and ended")
    open: int = strawberry.field(description="events that started in the window and not ended")
    median_minutes: float | None
    p90_minutes: float | None
    within_sla_percent: float | None

    @classmethod
    def of(cls, stats: MetricStats) -> TurnaroundMetric:
        return cls(
            metric=stats.metric.value,
            count=stats.count,
            open=stats.open,
            median_minutes=stats.median_minutes,
            p90_minutes=stats.p90_minutes,
            within_sla_percent=stats.within_sla_percent,
        )


@strawberry.type
class TurnaroundGroup:
    group: str | None = strawberry.field(
        description="priority, modality, center code or radiologist username; null for the "
        "whole window or events without that attribute"
    )
    metrics: list[TurnaroundMetric]


@strawberry.type
class Turnaround:
    since: datetime = strawberry.field(name="from", description="inclusive, as applied")
    until: datetime = strawberry.field(name="to", description="exclusive, as applied")
    group_by: GroupBy
    sla_minutes: JSON
    critical_deadline_minutes: int
    groups: list[TurnaroundGroup]


def _utc(value: datetime | None) -> datetime | None:
    # without a zone: UTC, the trail's own (as REST)
    return as_utc(value) if value is not None else None


@strawberry.type
class Query:
    @strawberry.field(
        description="Audit events, newest first by default; every filter an exact match, "
        "from inclusive, to exclusive. Audited (110101).",
        extensions=[requires(Permission.AUDIT_READ)],
    )
    async def audit_events(
        self,
        info: Info[GraphQLContext, None],
        first: int | None = None,
        after: str | None = None,
        actor: Annotated[str | None, strawberry.argument(description="username or AE")] = None,
        actor_user_id: int | None = None,
        action: str | None = None,
        event_code: Annotated[str | None, strawberry.argument(description="e.g. 110112")] = None,
        target_class: str | None = None,
        target_id: str | None = None,
        patient_id: str | None = None,
        study_instance_uid: str | None = None,
        accession_number: str | None = None,
        outcome: AuditOutcome | None = None,
        since: Annotated[
            datetime | None, strawberry.argument(name="from", description="inclusive")
        ] = None,
        until: Annotated[
            datetime | None, strawberry.argument(name="to", description="exclusive")
        ] = None,
        order: AuditOrder = AuditOrder.NEWEST,
    ) -> Connection[AuditEvent]:
        context = info.context
        offset, limit = relay.page_window(first, after)
        texts: dict[str, Any] = {
            name: plain_text(value, field=name, max_length=size)
            for name, value, size in (
                ("actor", actor, 64),
                ("action", action, 256),
                ("event_code", event_code, 16),
                ("target_class", target_class, 256),
                ("target_id", target_id, 256),
                ("patient_id", patient_id, 256),
                ("study_instance_uid", study_instance_uid, 256),
                ("accession_number", accession_number, 256),
            )
        }
        filters = AuditFilters(
            **texts,
            actor_user_id=actor_user_id,
            outcome=outcome,
            since=_utc(since),
            until=_utc(until),
        )
        page = await context.read(
            list_audit_events,
            filters=filters,
            offset=offset,
            limit=limit,
            newest_first=order is AuditOrder.NEWEST,
        )
        await context.write(
            record_audit_log_use,
            principal=context.user,
            filters=filters.asked() | {"order": order.value, "offset": offset, "limit": limit},
            source_address=context.address,
        )
        return relay.connection(
            [AuditEvent.of(event) for event in page.items], total=page.total, offset=offset
        )

    @strawberry.field(
        description="One audit event. Audited (110101).",
        extensions=[requires(Permission.AUDIT_READ)],
    )
    async def audit_event(self, info: Info[GraphQLContext, None], id: int) -> AuditEvent:
        context = info.context
        found = await context.read(get_audit_event, event_id=id)
        await context.write(
            record_audit_log_use,
            principal=context.user,
            filters={},
            source_address=context.address,
            target_id=str(id),
        )
        return AuditEvent.of(found)

    @strawberry.field(
        description="Turnaround metrics for events starting in [from, to) (at most 366 days), "
        "grouped as asked; REST's /api/turnaround.",
        extensions=[requires(Permission.TURNAROUND_READ)],
    )
    async def turnaround(
        self,
        info: Info[GraphQLContext, None],
        since: Annotated[
            datetime | None,
            strawberry.argument(name="from", description="inclusive; default: to - 30 days"),
        ] = None,
        until: Annotated[
            datetime | None, strawberry.argument(name="to", description="exclusive; default: now")
        ] = None,
        group_by: GroupBy = GroupBy.NONE,
    ) -> Turnaround:
        context = info.context
        start, end = turnaround_window(_utc(since), _utc(until), now=datetime.now(UTC))
        settings = context.settings
        found = await context.read(
            turnaround,
            since=start,
            until=end,
            group_by=group_by,
            sla=settings.sla(),
            critical_deadline_minutes=settings.critical_result_deadline_minutes,
        )
        return Turnaround(
            since=found.since,
            until=found.until,
            group_by=found.group_by,
            sla_minutes=JSON(found.sla_minutes),
            critical_deadline_minutes=found.critical_deadline_minutes,
            groups=[
                TurnaroundGroup(
                    group=group.group, metrics=[TurnaroundMetric.of(m) for m in group.metrics]
                )
                for group in found.groups
            ],
        )
