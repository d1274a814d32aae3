"""Modality Worklist: the scheduled procedure steps a modality asks for (RAD-5).

Keys are matched with the same C-FIND rules as the Query/Retrieve models; the
steps are read in one transaction that ends before the first answer is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy import ColumnElement, select

from dicom_node.db.engine import Database
from dicom_node.db.models import ImagingCenter, ImagingRequest, Modality
from dicom_node.db.worklist import (
    COMPUTED_STEP,
    COMPUTED_TOP,
    PRIORITY_TERMS,
    STEP,
    TOP_LEVEL,
    compile_worklist,
    time_bounds,
)
from dicom_node.domain.audit import Actor
from dicom_node.domain.query import (
    InvalidQuery,
    Match,
    Single,
    Universal,
    UnsupportedQuery,
    parse_match,
)
from dicom_node.domain.vr import MAX_LENGTH
from dicom_node.services.query.find import record_query


@dataclass(frozen=True)
class ScheduledStep:
    top: dict[str, Any]  # keyword -> value, for every attribute the worklist answers
    step: dict[str, Any]


@dataclass(frozen=True)
class WorklistResult:
    steps: list[ScheduledStep]
    truncated: bool = False
    unsupported: list[str] = field(default_factory=list)


def find_scheduled_steps(
    db: Database,
    *,
    top: Mapping[str, str | None],
    step: Mapping[str, str | None],
    limit: int,
    actor: Actor | str,
    source_address: str | None = None,
    station_ae_title: str | None = None,
    max_list_values: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> WorklistResult:
    """``station_ae_title``: when given and the query leaves ScheduledStationAETitle
    empty, only that station's steps (for modalities that do not fill it in).
    A key listing more than ``max_list_values`` values is refused
    (UnprocessableQuery), like an integer out of range.

    ``actor``: the peer's calling AE title, or a signed-in user's Actor (see
    ``query_record``). ``visible``: a further condition on ImagingRequest, the
    orders the asker may see (a user over HTTP: ``order_condition``). It is
    part of the SELECT, so ``limit`` and ``truncated`` count only the steps it
    lets through (filtered afterwards, a referrer got a short or empty page and
    learnt from ``truncated`` that other orders exist)."""
    failure: str | None = "query failed"
    try:
        unsupported: list[str] = []
        known_top, known_step = TOP_LEVEL.keys() | COMPUTED_TOP, STEP.keys() | COMPUTED_STEP
        top_matches = _parse(top, known_top, unsupported, max_list_values)
        step_matches = _parse(step, known_step, unsupported, max_list_values)
        station = step_matches.get("ScheduledStationAETitle", Universal())
        if station_ae_title and isinstance(station, Universal):
            step_matches["ScheduledStationAETitle"] = Single(station_ae_title)
        statement = compile_worklist(top_matches, step_matches, limit=limit + 1)
        if visible is not None:
            statement = statement.where(visible)  # WHERE, so before the LIMIT
        with db.read() as session:
            rows = session.execute(statement).all()
        if "ScheduledProcedureStepStartDate" not in step_matches or isinstance(
            step_matches["ScheduledProcedureStepStartDate"], Universal
        ):
            # a start time with no date: compared with each step's local time of day
            first, last = time_bounds(
                step_matches.get("ScheduledProcedureStepStartTime", Universal())
            )
            rows = [
                row
                for row in rows
                if row[0].scheduled_at is None
                or first <= row[0].scheduled_at.astimezone().time() <= last
            ]
        failure = None
    except (InvalidQuery, UnsupportedQuery) as exc:
        failure = str(exc)
        raise
    finally:
        record_query(
            db,
            level="WORKLIST",
            keys={**top, **{f"ScheduledProcedureStepSequence.{k}": v for k, v in step.items()}},
            actor=actor,
            source_address=source_address,
            failure=failure,
        )
    return WorklistResult(
        steps=[_step(order, modality, center) for order, modality, center in rows[:limit]],
        truncated=len(rows) > limit,
        unsupported=unsupported,
    )


def scheduled_orders(
    db: Database, study_uids: list[str], *, visible: ColumnElement[bool]
) -> dict[str, tuple[int, datetime | None]]:
    """The order id and scheduled time of each scheduled step's order, by its
    StudyInstanceUID (assigned when the order is scheduled, unique: it names the
    step's order). ``visible``: the caller's visibility rule, applied to this
    read too, so it never names an order the caller may not see (an order
    whose referrer changed since the steps were read)."""
    with db.read() as session:
        return {
            uid: (order_id, at)
            for order_id, uid, at in session.execute(
                select(
                    ImagingRequest.id,
                    ImagingRequest.study_instance_uid,
                    ImagingRequest.scheduled_at,
                ).where(ImagingRequest.study_instance_uid.in_(study_uids), visible)
            )
            if uid is not None
        }


def _parse(
    keys: Mapping[str, str | None],
    known: set[str],
    unsupported: list[str],
    max_list_values: int | None,
) -> dict[str, Match]:
    parsed: dict[str, Match] = {}
    for keyword, raw in keys.items():
        if keyword not in known:
            unsupported.append(keyword)
            continue
        parsed[keyword] = parse_match(
            dictionary_VR(keyword), raw, keyword=keyword, max_values=max_list_values
        )
    return parsed


def _step(
    order: ImagingRequest, modality: Modality | None, center: ImagingCenter | None
) -> ScheduledStep:
    start = order.scheduled_at.astimezone() if order.scheduled_at else None  # local time
    top = {
        "PatientName": order.patient_name,
        "PatientID": order.patient_id,
        "IssuerOfPatientID": order.issuer_of_patient_id or None,
        "PatientBirthDate": order.patient_birth_date,
        "PatientSex": order.patient_sex,
        "AccessionNumber": order.accession_number,
        "StudyInstanceUID": order.study_instance_uid,
        "RequestedProcedureID": order.requested_procedure_id,
        "RequestedProcedureDescription": order.study_description,
        "RequestedProcedurePriority": PRIORITY_TERMS.get(order.priority),
        "ReferringPhysicianName": order.referring_physician_name,
        "RequestingPhysician": order.requesting_physician,
        "ReasonForTheRequestedProcedure": (order.clinical_indication or "")[: MAX_LENGTH["LO"]]
        or None,
    }
    step = {
        "ScheduledStationAETitle": modality.dicom_ae_title if modality else None,
        "ScheduledStationName": modality.station_name if modality else None,
        "Modality": order.requested_modality or (modality.type if modality else None),
        "ScheduledProcedureStepStartDate": start.strftime("%Y%m%d") if start else None,
        "ScheduledProcedureStepStartTime": start.strftime("%H%M%S") if start else None,
        "ScheduledPerformingPhysicianName": order.scheduled_performing_physician_name,
        "ScheduledProcedureStepDescription": order.study_description,
        "ScheduledProcedureStepID": order.scheduled_procedure_step_id,
        "ScheduledProcedureStepLocation": (center.name[: MAX_LENGTH["SH"]] if center else None),
        "ScheduledProcedureStepStatus": "SCHEDULED",
    }
    return ScheduledStep(top, step)
