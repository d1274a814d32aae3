"""Modality Worklist keys (DOMAIN.md, PS3.4 K.6.1) -> one SELECT over scheduled orders.

Each scheduled order is one Scheduled Procedure Step. The keys inside
ScheduledProcedureStepSequence are matched against the same row, which is what
sequence matching means for a one-item sequence (PS3.4 C.2.2.2.6). Matching per
key uses the C-FIND rules of ``dicom_node.db.query``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from typing import cast

from sqlalchemy import ColumnElement, Select, and_, literal, select

from dicom_node.db.models import ImagingCenter, ImagingRequest, Modality
from dicom_node.db.query import Attribute, match_condition
from dicom_node.domain.enums import RequestStatus
from dicom_node.domain.query import Level, Match, Range, Single, Universal, UnsupportedQuery

_L = Level.STUDY  # one level only: a worklist has no hierarchy

TOP_LEVEL: Mapping[str, Attribute] = {
    a.keyword: a
    for a in [
        Attribute(
            "PatientName",
            _L,
            "PN",
            ImagingRequest.patient_name,
            folded=ImagingRequest.patient_name_folded,
        ),
        Attribute("PatientID", _L, "LO", ImagingRequest.patient_id),
        Attribute("IssuerOfPatientID", _L, "LO", ImagingRequest.issuer_of_patient_id),
        Attribute("PatientBirthDate", _L, "DA", ImagingRequest.patient_birth_date),
        Attribute("PatientSex", _L, "CS", ImagingRequest.patient_sex),
        Attribute("AccessionNumber", _L, "SH", ImagingRequest.accession_number),
        Attribute("StudyInstanceUID", _L, "UI", ImagingRequest.study_instance_uid),
        Attribute("RequestedProcedureID", _L, "SH", ImagingRequest.requested_procedure_id),
        Attribute("RequestedProcedureDescription", _L, "LO", ImagingRequest.study_description),
        Attribute("ReferringPhysicianName", _L, "PN", ImagingRequest.referring_physician_name),
        Attribute("ReasonForTheRequestedProcedure", _L, "LO", ImagingRequest.clinical_indication),
    ]
}
STEP: Mapping[str, Attribute] = {
    a.keyword: a
    for a in [
        Attribute("ScheduledStationAETitle", _L, "AE", Modality.dicom_ae_title),
        Attribute("ScheduledStationName", _L, "SH", Modality.station_name),
        Attribute("Modality", _L, "CS", ImagingRequest.requested_modality),
        Attribute("ScheduledProcedureStepID", _L, "SH", ImagingRequest.scheduled_procedure_step_id),
        Attribute("ScheduledProcedureStepDescription", _L, "LO", ImagingRequest.study_description),
        Attribute("ScheduledProcedureStepLocation", _L, "SH", ImagingCenter.name),
    ]
}
# Answered, matched specially or not at all: the start date/time (from the UTC
# scheduled_at, in the node's local time, as DICOM dates are), the status (only
# SCHEDULED steps are ever listed), the priority, and fields the order lacks.
COMPUTED_TOP = {"RequestedProcedurePriority", "RequestingPhysician"}
COMPUTED_STEP = {
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepStatus",
    "ScheduledPerformingPhysicianName",
}


def compile_worklist(
    top: Mapping[str, Match],
    step: Mapping[str, Match],
    *,
    limit: int,
) -> Select[ImagingRequest, Modality, ImagingCenter]:
    conditions: list[ColumnElement[bool]] = [ImagingRequest.status == RequestStatus.SCHEDULED.value]
    for keyword, match in top.items():
        if keyword in TOP_LEVEL:
            condition = match_condition(TOP_LEVEL[keyword], match)
        else:
            condition = _computed_condition(keyword, match)
        if condition is not None:
            conditions.append(condition)
    for keyword, match in step.items():
        if keyword in STEP:
            condition = match_condition(STEP[keyword], match)
        else:
            condition = _computed_condition(keyword, match)
        if condition is not None:
            conditions.append(condition)
    return (
        select(ImagingRequest, Modality, ImagingCenter)
        .outerjoin(Modality, Modality.id == ImagingRequest.scheduled_modality_id)
        .outerjoin(ImagingCenter, ImagingCenter.id == ImagingRequest.imaging_center_id)
        .where(and_(*conditions))
        .order_by(ImagingRequest.scheduled_at, ImagingRequest.id)
        .limit(limit)
    )


def _computed_condition(keyword: str, match: Match) -> ColumnElement[bool] | None:
    if isinstance(match, Universal):
        return None
    if keyword == "ScheduledProcedureStepStartDate":
        return _scheduled_between(match)
    if keyword == "ScheduledProcedureStepStatus":
        # only scheduled steps are listed: SCHEDULED matches all, anything else none
        return None if match == Single("SCHEDULED") else literal(False)
    raise UnsupportedQuery(f"{keyword}: matching on it is not supported")


def _scheduled_between(match: Match) -> ColumnElement[bool]:
    """A DA value or range in local dates -> bounds on the UTC scheduled_at."""
    low: str | None
    high: str | None
    if isinstance(match, Single):
        low = high = match.value
    elif isinstance(match, Range):
        low, high = match.low, match.high
    else:
        raise UnsupportedQuery("ScheduledProcedureStepStartDate: a date or a date range")
    column = cast(ColumnElement[datetime], ImagingRequest.scheduled_at)
    bounds = []
    if low is not None:
        bounds.append(column >= _local(low, time.min))
    if high is not None:
        bounds.append(column <= _local(high, time.max))
    return and_(*bounds)


def _local(value: str, at: time) -> datetime:
    day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    return datetime.combine(day, at).astimezone()  # the node's local time zone
