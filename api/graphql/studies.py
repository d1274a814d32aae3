"""Patients, studies, series and instances (REST: /api/studies)."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from api.graphql.context import GraphQLContext


@strawberry.type
class Patient:
    id: int


@strawberry.type
class DicomStudy:
    id: int


async def _studies(context: GraphQLContext, ids: Sequence[int]) -> Sequence[DicomStudy | None]:
    raise NotImplementedError("studies area: studies by id, within the caller's visibility")


async def _patients(context: GraphQLContext, ids: Sequence[int]) -> Sequence[Patient | None]:
    raise NotImplementedError("studies area: patients by id")


async def study_by_id(context: GraphQLContext, study_id: int) -> DicomStudy | None:
    """A study by id, batched per operation; None when there is none the caller may see."""
    return await context.loader(_studies).load(study_id)


async def patient_by_id(context: GraphQLContext, patient_id: int) -> Patient | None:
    """A patient (the DICOM patients table) by id, batched per operation."""
    return await context.loader(_patients).load(patient_id)
