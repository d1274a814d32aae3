"""Reports, their versions and critical-result communications (REST: /api/reports)."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from api.graphql.context import GraphQLContext


@strawberry.type
class Report:
    id: int


async def _reports(context: GraphQLContext, ids: Sequence[int]) -> Sequence[Report | None]:
    raise NotImplementedError("reports area: reports by id, within the caller's visibility")


async def _study_reports(
    context: GraphQLContext, study_ids: Sequence[int]
) -> Sequence[Report | None]:
    raise NotImplementedError("reports area: the current report of each study")


async def report_by_id(context: GraphQLContext, report_id: int) -> Report | None:
    """A report by id, batched per operation; None when the caller may not see it."""
    return await context.loader(_reports).load(report_id)


async def report_of_study(context: GraphQLContext, study_id: int) -> Report | None:
    """A study's report (the one REST's study detail shows), batched per operation."""
    return await context.loader(_study_reports).load(study_id)
