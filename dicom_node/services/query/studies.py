"""Studies over HTTP: search and detail.

Search goes through the one C-FIND query compiler (``db/query.py``): the same
keywords, the same matching (PS3.4 C.2.2.2: wildcards, ranges, UID lists, PN
case-insensitive) and the same withdrawal of rejected studies. This module only
adapts HTTP query parameters to matching keys and adds what DICOM has no key
for: workflow filters, paging, sorting and the referring physician's scope
(services/access/visibility.py). Corrections and rejection are
``services/workflow/study_metadata.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
)
from dicom_node.db.query import ATTRIBUTES, compile_query
from dicom_node.domain.audit import Subject, TargetKind, instances_accessed_event, query_event
from dicom_node.domain.enums import (
    AuditOutcome,
    Completeness,
    MetadataStatus,
    StudyStatus,
)
from dicom_node.domain.errors import InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import LEVEL_ORDER, InvalidQuery, Level, Match, parse_match
from dicom_node.domain.vr import check_text
from dicom_node.services.access.visibility import (
    may_see_order,
    sees_every_order,
    study_condition,
)
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor

# --------------------------------------------------------------------------- search


# A whole key (a backslash-separated list) longer than this is refused. Each value
# of it is held to domain.query.MAX_VALUE_CHARS by the parser (SQLite refuses LIKE
# patterns beyond 50,000 bytes), and the number of values to max_query_list_values;
# this bounds the request itself, about what uvicorn takes in a request line anyway.
MAX_KEY_LENGTH = 16384


class StudySort(StrEnum):
    STUDY_DATE = "study_date"
    ACCESSION = "accession"
    RECEIVED = "received"


def searchable_keywords() -> list[str]:
    """The DICOM keywords the search accepts: every matchable key of the compiler.

    Counts the node computes are returned by C-FIND but never matched on, and
    sequences cannot be written as one query parameter: neither is offered."""
    return [
        keyword
        for keyword, attribute in ATTRIBUTES.items()
        if not attribute.computed and dictionary_VR(keyword) != "SQ"
    ]


@dataclass(frozen=True, slots=True)
class StudyFilters:
    """Workflow filters DICOM has no key for."""

    metadata_status: MetadataStatus | None = None
    completeness: Completeness | None = None
    status: StudyStatus | None = None


@dataclass(frozen=True, slots=True)
class StudySummary:
    id: int
    study_instance_uid: str
    accession_number: str | None
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    referring_physician_name: str | None
    body_part_examined: str | None
    modalities: list[str]
    series_count: int
    instance_count: int
    status: str
    metadata_status: str
    completeness: str
    order_id: int | None
    first_received_at: datetime | None
    last_received_at: datetime | None


@dataclass(frozen=True, slots=True)
class StudyPage:
    items: list[StudySummary]
    total: int


def parse_study_keys(keys: Mapping[str, str]) -> dict[str, Match]:
    """HTTP query parameters (DICOM keyword -> value) as matching keys.

    Parsed by the C-FIND parser with the VR from the data dictionary, then each
    key is compiled once on its own so a key the compiler refuses (a wildcard in
    ModalitiesInStudy, a non-integer SeriesNumber) names itself. Raises
    InvalidValue with ``field`` set to the keyword.
    """
    allowed = set(searchable_keywords())
    parsed: dict[str, Match] = {}
    for keyword, raw in keys.items():
        if keyword not in allowed:
            raise InvalidValue(
                f"{keyword} is not a searchable attribute (DICOM keywords, case-sensitive)",
                field=keyword,
            )
        check_text(keyword, raw)
        if len(raw) > MAX_KEY_LENGTH:
            raise InvalidValue(f"{keyword}: at most {MAX_KEY_LENGTH} characters", field=keyword)
        try:
            match = parse_match(dictionary_VR(keyword), raw, keyword=keyword)
            compile_query(_level_of([keyword]), {keyword: match}, limit=None)
        except InvalidValue as exc:
            raise InvalidQuery(str(exc), field=keyword) from exc
        parsed[keyword] = match
    return parsed


def search_studies(
    session: Session,
    *,
    principal: Principal,
    keys: Mapping[str, str],
    filters: StudyFilters,
    sort: StudySort,
    descending: bool,
    offset: int,
    limit: int,
) -> StudyPage:
    """One page of the studies matching ``keys`` (C-FIND semantics) and ``filters``.

    Keys may be at patient, study, series or image level: a study matches when
    any of its series (instances) does. Rejected studies are withdrawn, as from
    C-FIND. A referring physician sees only studies of orders the visibility rule
    lets them see (services/access/visibility.py).
    """
    if filters.metadata_status is MetadataStatus.REJECTED:
        raise InvalidValue(
            "rejected studies are withdrawn from search (as from C-FIND); "
            "GET /api/studies/{id} still shows one",
            field="metadata_status",
        )
    parsed = parse_study_keys(keys)
    matched = compile_query(_level_of(parsed), parsed, limit=None)
    study_ids = matched.with_only_columns(DicomStudy.id).order_by(None)

    conditions: list[ColumnElement[bool]] = [DicomStudy.id.in_(study_ids)]
    if filters.metadata_status is not None:
        conditions.append(DicomStudy.metadata_status == filters.metadata_status.value)
    if filters.completeness is not None:
        conditions.append(DicomStudy.completeness == filters.completeness.value)
    if filters.status is not None:
        conditions.append(DicomStudy.status == filters.status.value)
    if not sees_every_order(principal):
        conditions.append(study_condition(principal))

    total = session.scalar(select(func.count(DicomStudy.id)).where(*conditions)) or 0
    statement = (
        select(DicomStudy, Patient)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(*conditions)
        .order_by(*_ordering(sort, descending))
        .offset(offset)
        .limit(limit)
    )
    items = [study_summary(study, patient) for study, patient in session.execute(statement)]
    return StudyPage(items=items, total=int(total))


def record_study_search(
    session: Session,
    *,
    principal: Principal,
    keys: Mapping[str, str],
    filters: StudyFilters,
    source_address: str | None,
    failure: str | None = None,
) -> None:
    """110112 Query with the keys and filters asked (never the results)."""
    workflow = {
        name: value.value
        for name, value in (
            ("metadata_status", filters.metadata_status),
            ("completeness", filters.completeness),
            ("status", filters.status),
        )
        if value is not None
    }
    record_audit_event(
        session,
        query_event(
            "study_search",
            user_actor(principal, source_address),
            TargetKind.STUDY_LEVEL,
            outcome=AuditOutcome.MINOR_FAILURE if failure else AuditOutcome.SUCCESS,
            reason=failure,
            details={"keys": dict(keys), "filters": workflow, "level": "STUDY"},
        ),
    )


def _level_of(keywords: Mapping[str, Any] | list[str]) -> Level:
    depth = max([1, *(LEVEL_ORDER.index(ATTRIBUTES[keyword].level) for keyword in keywords)])
    return LEVEL_ORDER[depth]


def _ordering(sort: StudySort, descending: bool) -> list[ColumnElement[Any]]:
    by_sort: dict[StudySort, list[Any]] = {
        StudySort.STUDY_DATE: [DicomStudy.study_date, DicomStudy.study_time_norm],
        StudySort.ACCESSION: [DicomStudy.accession_number],
        StudySort.RECEIVED: [DicomStudy.first_received_at],
    }
    columns = by_sort[sort]
    ordered = [
        # NULLS LAST on both backends (their defaults differ)
        (column.desc() if descending else column.asc()).nulls_last()
        for column in columns
    ]
    return [*ordered, DicomStudy.id.desc() if descending else DicomStudy.id.asc()]


def study_summary(study: DicomStudy, patient: Patient) -> StudySummary:
    return StudySummary(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=patient.patient_id,
        issuer_of_patient_id=patient.issuer_of_patient_id,
        patient_name=patient.patient_name,
        patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex,
        study_date=study.study_date,
        study_time=study.study_time,
        study_description=study.study_description,
        referring_physician_name=study.referring_physician_name,
        body_part_examined=study.body_part_examined,
        modalities=[m for m in (study.modalities_in_study or "").split("\\") if m],
        series_count=study.series_count,
        instance_count=study.instance_count,
        status=study.status,
        metadata_status=study.metadata_status,
        completeness=study.completeness,
        order_id=study.imaging_request_id,
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
    )


# --------------------------------------------------------------------------- detail


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    station_name: str | None
    instance_count: int


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    file_size: int
    received_at: datetime
    calling_ae_title: str | None
    quarantined: bool


@dataclass(frozen=True, slots=True)
class StudyOrder:
    """The order a study belongs to, as its detail shows it (the order itself:
    workflow/orders.py OrderInfo)."""

    id: int
    status: str
    priority: str
    accession_number: str | None
    requested_modality: str | None
    study_description: str | None
    requested_by_id: int | None
    referring_physician_id: int | None
    referring_physician_name: str | None
    scheduled_at: datetime | None


@dataclass(frozen=True, slots=True)
class StudyDetail:
    study: StudySummary
    series: list[SeriesInfo]
    instances: list[InstanceInfo]
    instance_total: int
    order: StudyOrder | None
    report_ids: list[int]


def visible_study_id(session: Session, *, principal: Principal, study_uid: str) -> int:
    """The node's id of the study ``study_uid`` (a UID already checked), within
    the visibility rule: NotFound, the same for a study that does not exist and
    one the principal may not see (a referring physician learns nothing of
    another physician's study)."""
    study_id = session.scalar(
        select(DicomStudy.id).where(
            DicomStudy.study_instance_uid == study_uid, study_condition(principal)
        )
    )
    if study_id is None:
        raise NotFound("no such study")
    return int(study_id)


def get_study(
    session: Session,
    *,
    principal: Principal,
    study_id: int,
    instance_offset: int = 0,
    instance_limit: int = 500,
) -> StudyDetail:
    """The study with its series, one page of its instances, its order and reports.

    Rejected studies are shown (with their status): withdrawn from search, never
    lost. A study outside the visibility rule is NotFound (a referring physician:
    one not linked to an order they requested or are the referrer of),
    and they see only reports signed at least once."""
    row = session.execute(
        select(DicomStudy, Patient)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(DicomStudy.id == study_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no study {study_id}")
    study, patient = row
    order = (
        session.get(ImagingRequest, study.imaging_request_id) if study.imaging_request_id else None
    )
    if not sees_every_order(principal) and (order is None or not may_see_order(principal, order)):
        raise NotFound(f"no study {study_id}")

    series = session.scalars(
        select(DicomSeries)
        .where(DicomSeries.study_pk == study.id)
        .order_by(DicomSeries.series_number.asc().nulls_last(), DicomSeries.id)
    ).all()
    in_study = (
        select(DicomInstance, DicomSeries.series_instance_uid)
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .where(DicomSeries.study_pk == study.id)
    )
    instance_total = session.scalar(
        select(func.count(DicomInstance.id))
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .where(DicomSeries.study_pk == study.id)
    )
    instances = session.execute(
        in_study.order_by(
            DicomSeries.series_number.asc().nulls_last(),
            DicomSeries.id,
            DicomInstance.instance_number.asc().nulls_last(),
            DicomInstance.id,
        )
        .offset(instance_offset)
        .limit(instance_limit)
    )
    reports = select(Report.id).where(Report.dicom_study_id == study.id)
    if not sees_every_order(principal):
        # signed at least once: the only reports they may open (services/reporting/reports.py)
        reports = reports.where(Report.signed_at.is_not(None))
    report_ids = session.scalars(reports.order_by(Report.id)).all()
    return StudyDetail(
        study=study_summary(study, patient),
        series=[series_info(s) for s in series],
        instances=[instance_info(instance, series_uid) for instance, series_uid in instances],
        instance_total=int(instance_total or 0),
        order=_order_info(order) if order is not None else None,
        report_ids=list(report_ids),
    )


def record_study_access(
    session: Session, *, principal: Principal, study: StudySummary, source_address: str | None
) -> None:
    """110103 Instances Accessed: who looked at which study's index record."""
    record_audit_event(
        session,
        instances_accessed_event(
            "study_viewed",
            user_actor(principal, source_address),
            study.id,
            Subject(study.patient_id, study.study_instance_uid, study.accession_number),
        ),
    )


def record_study_views(
    session: Session,
    study_ids: Sequence[int],
    *,
    principal: Principal,
    source_address: str | None,
) -> None:
    """``study_viewed`` (110103) for each study of ``study_ids`` the principal
    may see, as the detail (``get_study``, with its series and instances)
    records it: a study's series and instances are read with an audit trail
    whichever way they are reached."""
    for study in study_summaries(session, principal=principal, study_ids=study_ids):
        if study is not None:
            record_study_access(
                session, principal=principal, study=study, source_address=source_address
            )


def series_info(series: DicomSeries) -> SeriesInfo:
    return SeriesInfo(
        id=series.id,
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        series_number=series.series_number,
        series_description=series.series_description,
        body_part_examined=series.body_part_examined,
        station_name=series.station_name,
        instance_count=series.instance_count,
    )


def instance_info(instance: DicomInstance, series_uid: str) -> InstanceInfo:
    return InstanceInfo(
        id=instance.id,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        series_instance_uid=series_uid,
        instance_number=instance.instance_number,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        file_size=instance.file_size,
        received_at=instance.received_at,
        calling_ae_title=instance.calling_ae_title,
        quarantined=instance.quarantined,
    )


def _order_info(order: ImagingRequest) -> StudyOrder:
    return StudyOrder(
        id=order.id,
        status=order.status,
        priority=order.priority,
        accession_number=order.accession_number,
        requested_modality=order.requested_modality,
        study_description=order.study_description,
        requested_by_id=order.requested_by_id,
        referring_physician_id=order.referring_physician_id,
        referring_physician_name=order.referring_physician_name,
        scheduled_at=order.scheduled_at,
    )


# --------------------------------------------------------------------------- batches
#
# Many records at once, for a front end that resolves them per page (GraphQL's
# batch loaders): each is ONE statement for every key given, within the
# visibility rule, and answers one value per key in the keys' order (None, or
# an empty list, for a key that names nothing the principal may see: missing
# and invisible look the same, as in get_study).


@dataclass(frozen=True, slots=True)
class PatientInfo:
    """A patient of the DICOM index (the patients table), as received."""

    id: int
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None


def _patient_info(patient: Patient) -> PatientInfo:
    return PatientInfo(
        id=patient.id,
        patient_id=patient.patient_id,
        issuer_of_patient_id=patient.issuer_of_patient_id,
        patient_name=patient.patient_name,
        patient_birth_date=patient.patient_birth_date,
        patient_sex=patient.patient_sex,
    )


def study_summaries(
    session: Session, *, principal: Principal, study_ids: Sequence[int]
) -> list[StudySummary | None]:
    """The studies ``study_ids`` (rejected ones too, as get_study shows them)."""
    rows = session.execute(
        select(DicomStudy, Patient)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(DicomStudy.id.in_(set(study_ids)), study_condition(principal))
    )
    found = {study.id: study_summary(study, patient) for study, patient in rows}
    return [found.get(study_id) for study_id in study_ids]


def patients_by_ids(
    session: Session, *, principal: Principal, patient_ids: Sequence[int]
) -> list[PatientInfo | None]:
    """The patients ``patient_ids``; a referring physician sees only a patient
    one of whose studies they may see (a patient's demographics are part of
    those studies' records, and of nothing else of theirs)."""
    statement = select(Patient).where(Patient.id.in_(set(patient_ids)))
    if not sees_every_order(principal):
        statement = statement.where(
            Patient.id.in_(select(DicomStudy.patient_pk).where(study_condition(principal)))
        )
    found = {patient.id: _patient_info(patient) for patient in session.scalars(statement)}
    return [found.get(patient_id) for patient_id in patient_ids]


def patients_of_studies(
    session: Session, *, principal: Principal, study_ids: Sequence[int]
) -> list[PatientInfo | None]:
    """The patient of each study ``study_ids`` (None: no such visible study)."""
    rows = session.execute(
        select(DicomStudy.id, Patient)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(DicomStudy.id.in_(set(study_ids)), study_condition(principal))
    )
    found = {study_id: _patient_info(patient) for study_id, patient in rows}
    return [found.get(study_id) for study_id in study_ids]


def studies_of_patients(
    session: Session, *, principal: Principal, patient_ids: Sequence[int]
) -> list[list[StudySummary]]:
    """Each patient's studies the principal may see, newest study date first
    (rejected ones too: they are part of the patient's record, with their status)."""
    rows = session.execute(
        select(DicomStudy, Patient)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(DicomStudy.patient_pk.in_(set(patient_ids)), study_condition(principal))
        .order_by(*_ordering(StudySort.STUDY_DATE, descending=True))
    )
    found: dict[int, list[StudySummary]] = {}
    for study, patient in rows:
        found.setdefault(patient.id, []).append(study_summary(study, patient))
    return [found.get(patient_id, []) for patient_id in patient_ids]


def series_of_studies(
    session: Session, *, principal: Principal, study_ids: Sequence[int]
) -> list[list[SeriesInfo]]:
    """Each study's series, in get_study's order (series number, then arrival)."""
    rows = session.scalars(
        select(DicomSeries)
        .join(DicomStudy, DicomSeries.study_pk == DicomStudy.id)
        .where(DicomSeries.study_pk.in_(set(study_ids)), study_condition(principal))
        .order_by(DicomSeries.series_number.asc().nulls_last(), DicomSeries.id)
    )
    found: dict[int, list[SeriesInfo]] = {}
    for series in rows:
        found.setdefault(series.study_pk, []).append(series_info(series))
    return [found.get(study_id, []) for study_id in study_ids]


@dataclass(frozen=True, slots=True)
class InstancePage:
    items: list[InstanceInfo]
    total: int


def instances_of_series(
    session: Session,
    *,
    principal: Principal,
    series_ids: Sequence[int],
    offset: int,
    limit: int,
) -> list[InstancePage]:
    """The same window (``offset``, ``limit``) of each series' instances, in
    get_study's order (instance number, then arrival), with each series' count.

    A study of thousands of images is never loaded whole: each series' rows
    are numbered in the database (ROW_NUMBER per series) and only the window
    leaves it. Two statements for every series given: the windows, and the
    counts (a window past a series' end still needs its total)."""
    wanted = set(series_ids)
    visible = (
        select(DicomSeries.id)
        .join(DicomStudy, DicomSeries.study_pk == DicomStudy.id)
        .where(DicomSeries.id.in_(wanted), study_condition(principal))
    )
    position = (
        func.row_number()
        .over(
            partition_by=DicomInstance.series_pk,
            order_by=(DicomInstance.instance_number.asc().nulls_last(), DicomInstance.id),
        )
        .label("position")
    )
    numbered = (
        select(DicomInstance.id, position).where(DicomInstance.series_pk.in_(visible)).subquery()
    )
    rows = session.execute(
        select(DicomInstance, DicomSeries.series_instance_uid)
        .join(numbered, numbered.c.id == DicomInstance.id)
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .where(numbered.c.position > offset, numbered.c.position <= offset + limit)
        .order_by(DicomInstance.series_pk, numbered.c.position)
    )
    items: dict[int, list[InstanceInfo]] = {}
    for instance, series_uid in rows:
        items.setdefault(instance.series_pk, []).append(instance_info(instance, series_uid))
    totals = {
        series_pk: count
        for series_pk, count in session.execute(
            select(DicomInstance.series_pk, func.count(DicomInstance.id))
            .where(DicomInstance.series_pk.in_(visible))
            .group_by(DicomInstance.series_pk)
        )
    }
    return [
        InstancePage(items=items.get(series_id, []), total=int(totals.get(series_id, 0)))
        for series_id in series_ids
    ]
