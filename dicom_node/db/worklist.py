"""Modality Worklist keys (docs/domain.md#modality-worklist-response, PS3.4 K.6.1) -> one SELECT
over scheduled orders.

Each scheduled order is one Scheduled Procedure Step. The keys inside
ScheduledProcedureStepSequence are matched against the same row, which is what
sequence matching means for a one-item sequence (PS3.4 C.2.2.2.6). Matching per
key uses the C-FIND rules of ``dicom_node.db.query``: every PN key (top level or
in the step) by the one PN rule (domain/names.py).
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
        Attribute("PatientName", _L, "PN", ImagingRequest.patient_name),
        Attribute("PatientID", _L, "LO", ImagingRequest.patient_id),
        Attribute("IssuerOfPatientID", _L, "LO", ImagingRequest.issuer_of_patient_id),
        Attribute("PatientBirthDate", _L, "DA", ImagingRequest.patient_birth_date),
        Attribute("PatientSex", _L, "CS", ImagingRequest.patient_sex),
        Attribute("AccessionNumber", _L, "SH", ImagingRequest.accession_number),
        Attribute("StudyInstanceUID", _L, "UI", ImagingRequest.study_instance_uid),
        Attribute("RequestedProcedureID", _L, "SH", ImagingRequest.requested_procedure_id),
        Attribute("RequestedProcedureDescription", _L, "LO", ImagingRequest.study_description),
        Attribute("ReferringPhysicianName", _L, "PN", ImagingRequest.referring_physician_name),
        Attribute("RequestingPhysician", _L, "PN", ImagingRequest.requesting_physician),
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
        Attribute(
            "ScheduledPerformingPhysicianName",
            _L,
            "PN",
            ImagingRequest.scheduled_performing_physician_name,
        ),
    ]
}
# Answered and matched specially: the start date/time (from the UTC
# scheduled_at, in the node's local time, as DICOM dates are), the status (only
# SCHEDULED steps are ever listed) and the priority.
COMPUTED_TOP = {"RequestedProcedurePriority"}
COMPUTED_STEP = {
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepStatus",
}


# RequestedProcedurePriority defined terms (PS3.3 C.4.11) <-> order priority
PRIORITY_TERMS = {"stat": "STAT", "urgent": "HIGH", "routine": "ROUTINE"}
_PRIORITY_BY_TERM = {term: priority for priority, term in PRIORITY_TERMS.items()}


def compile_worklist(
    top: Mapping[str, Match],
    step: Mapping[str, Match],
    *,
    limit: int,
) -> Select[ImagingRequest, Modality, ImagingCenter]:
    conditions: list[ColumnElement[bool]] = [ImagingRequest.status == RequestStatus.SCHEDULED.value]
    for keys, attributes in ((top, TOP_LEVEL), (step, STEP)):
        for keyword, match in keys.items():
            if keyword in attributes:
                condition = match_condition(attributes[keyword], match)
            else:
                condition = _computed_condition(keyword, match)
            if condition is not None:
                conditions.append(condition)
    when = _scheduled_between(
        step.get("ScheduledProcedureStepStartDate", Universal()),
        step.get("ScheduledProcedureStepStartTime", Universal()),
    )
    if when is not None:
        conditions.append(when)
    return (
        select(ImagingRequest, Modality, ImagingCenter)
        .outerjoin(Modality, Modality.id == ImagingRequest.scheduled_modality_id)
        .outerjoin(ImagingCenter, ImagingCenter.id == ImagingRequest.imaging_center_id)
        .where(and_(*conditions))
        .order_by(ImagingRequest.scheduled_at, ImagingRequest.id)
        .limit(limit)
    )


def _computed_condition(keyword: str, match: Match) -> ColumnElement[bool] | None:
    if isinstance(match, Universal) or keyword in (
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",  # matched together, in _scheduled_between
    ):
        return None
    if keyword == "ScheduledProcedureStepStatus":
        # only scheduled steps are listed: SCHEDULED matches all, anything else none
        return None if match == Single("SCHEDULED") else literal(False)
    if keyword == "RequestedProcedurePriority" and isinstance(match, Single):
        priority = _PRIORITY_BY_TERM.get(match.value)
        return ImagingRequest.priority == priority if priority else literal(False)
    raise UnsupportedQuery(f"{keyword}: matching on it is not supported")


def _scheduled_between(date_match: Match, time_match: Match) -> ColumnElement[bool] | None:
    """SPS start date and time, combined as PS3.4 C.2.2.2.5 says (the time range
    applies to the first and last day of the date range), in local time, as
    bounds on the UTC scheduled_at. A time without a date is filtered afterwards
    (time_of_day_matches)."""
    if isinstance(date_match, Universal):
        return None
    low: str | None
    high: str | None
    if isinstance(date_match, Single):
        low = high = date_match.value
    elif isinstance(date_match, Range):
        low, high = date_match.low, date_match.high
    else:
        raise UnsupportedQuery("ScheduledProcedureStepStartDate: a date or a date range")
    first, last = time_bounds(time_match)
    column = cast(ColumnElement[datetime], ImagingRequest.scheduled_at)
    bounds = []
    if low is not None:
        bounds.append(column >= _local(low, first))
    if high is not None:
        bounds.append(column <= _local(high, last))
    return and_(*bounds)


def time_bounds(match: Match) -> tuple[time, time]:
    """A TM match (normalised HHMMSS.FFFFFF bounds) as times of day."""
    if isinstance(match, Universal):
        return time.min, time.max
    if not isinstance(match, Range):
        raise UnsupportedQuery("ScheduledProcedureStepStartTime: a time or a time range")
    return (
        _time(match.low) if match.low else time.min,
        _time(match.high) if match.high else time.max,
    )


def _time(normalised: str) -> time:
    return time(
        int(normalised[0:2]) % 24,
        int(normalised[2:4]),
        min(int(normalised[4:6]), 59),
        int(normalised[7:13]),
    )


def _local(value: str, at: time) -> datetime:
    day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    return datetime.combine(day, at).astimezone()  # the node's local time zone
