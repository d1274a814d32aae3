"""The one query compiler: C-FIND matching keys -> one SELECT over the index.

Used by the C-FIND SCP and the HTTP study search alike. Each level's entity is
joined to its parents only (patient <- study <- series <- instance), so the
SELECT returns exactly one row per entity at the query level (PS3.4 C.4.1.3.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient
from dicom_node.domain.enums import MetadataStatus
from dicom_node.domain.names import fold_person_name
from dicom_node.domain.query import (
    LEVEL_ORDER,
    AnyOf,
    InvalidQuery,
    Level,
    Match,
    Range,
    Single,
    UidList,
    Universal,
    UnsupportedQuery,
    Wildcard,
    like_pattern,
)


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    vr: str
    column: ColumnElement[Any] | InstrumentedAttribute[Any]
    # PN: matched case-insensitively on the folded copy (SQL upper() is ASCII-only)
    folded: InstrumentedAttribute[Any] | None = None
    # TM: matched on the normalised copy (HHMMSS.FFFFFF), so ranges compare as text
    normalized: InstrumentedAttribute[Any] | None = None
    # ModalitiesInStudy: a backslash-joined set, matched per value
    multi_valued: bool = False
    # counts the node computes: returned, never matched on
    computed: bool = False


def _patient_count(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return (
        select(func.coalesce(column, 0))
        .where(
            DicomStudy.patient_pk == Patient.id,
            # withdrawn studies are hidden at every level, counts included
            DicomStudy.metadata_status != MetadataStatus.REJECTED.value,
        )
        .correlate(Patient)
        .scalar_subquery()
    )


_ATTRIBUTES = [
    Attribute(
        "PatientName",
        Level.PATIENT,
        "PN",
        Patient.patient_name,
        folded=Patient.patient_name_folded,
    ),
    Attribute("PatientID", Level.PATIENT, "LO", Patient.patient_id),
    Attribute("IssuerOfPatientID", Level.PATIENT, "LO", Patient.issuer_of_patient_id),
    Attribute("PatientBirthDate", Level.PATIENT, "DA", Patient.patient_birth_date),
    Attribute("PatientSex", Level.PATIENT, "CS", Patient.patient_sex),
    Attribute(
        "NumberOfPatientRelatedStudies",
        Level.PATIENT,
        "IS",
        _patient_count(func.count(DicomStudy.id)),
        computed=True,
    ),
    Attribute(
        "NumberOfPatientRelatedSeries",
        Level.PATIENT,
        "IS",
        _patient_count(func.sum(DicomStudy.series_count)),
        computed=True,
    ),
    Attribute(
        "NumberOfPatientRelatedInstances",
        Level.PATIENT,
        "IS",
        _patient_count(func.sum(DicomStudy.instance_count)),
        computed=True,
    ),
    Attribute("StudyInstanceUID", Level.STUDY, "UI", DicomStudy.study_instance_uid),
    Attribute("StudyDate", Level.STUDY, "DA", DicomStudy.study_date),
    Attribute(
        "StudyTime",
        Level.STUDY,
        "TM",
        DicomStudy.study_time,
        normalized=DicomStudy.study_time_norm,
    ),
    Attribute("AccessionNumber", Level.STUDY, "SH", DicomStudy.accession_number),
    Attribute("StudyID", Level.STUDY, "SH", DicomStudy.study_id),
    Attribute("StudyDescription", Level.STUDY, "LO", DicomStudy.study_description),
    Attribute("ReferringPhysicianName", Level.STUDY, "PN", DicomStudy.referring_physician_name),
    Attribute(
        "ModalitiesInStudy",
        Level.STUDY,
        "CS",
        DicomStudy.modalities_in_study,
        multi_valued=True,
    ),
    Attribute(
        "NumberOfStudyRelatedSeries", Level.STUDY, "IS", DicomStudy.series_count, computed=True
    ),
    Attribute(
        "NumberOfStudyRelatedInstances",
        Level.STUDY,
        "IS",
        DicomStudy.instance_count,
        computed=True,
    ),
    Attribute("SeriesInstanceUID", Level.SERIES, "UI", DicomSeries.series_instance_uid),
    Attribute("Modality", Level.SERIES, "CS", DicomSeries.modality),
    Attribute("SeriesNumber", Level.SERIES, "IS", DicomSeries.series_number),
    Attribute("SeriesDescription", Level.SERIES, "LO", DicomSeries.series_description),
    Attribute("BodyPartExamined", Level.SERIES, "CS", DicomSeries.body_part_examined),
    Attribute("StationName", Level.SERIES, "SH", DicomSeries.station_name),
    Attribute("SeriesDate", Level.SERIES, "DA", DicomSeries.series_date),
    Attribute(
        "SeriesTime",
        Level.SERIES,
        "TM",
        DicomSeries.series_time,
        normalized=DicomSeries.series_time_norm,
    ),
    Attribute(
        "NumberOfSeriesRelatedInstances",
        Level.SERIES,
        "IS",
        DicomSeries.instance_count,
        computed=True,
    ),
    Attribute("SOPInstanceUID", Level.IMAGE, "UI", DicomInstance.sop_instance_uid),
    Attribute("SOPClassUID", Level.IMAGE, "UI", DicomInstance.sop_class_uid),
    Attribute("InstanceNumber", Level.IMAGE, "IS", DicomInstance.instance_number),
]
ATTRIBUTES: Mapping[str, Attribute] = {a.keyword: a for a in _ATTRIBUTES}

# the primary key of each level's entity: the order of the answers
_ENTITY_PK: Mapping[Level, InstrumentedAttribute[int]] = {
    Level.PATIENT: Patient.id,
    Level.STUDY: DicomStudy.id,
    Level.SERIES: DicomSeries.id,
    Level.IMAGE: DicomInstance.id,
}


def compile_query(level: Level, keys: Mapping[str, Match], *, limit: int | None) -> Select[Any]:
    """SELECT one row per matching entity at ``level``; a column per key, labelled
    with its keyword. Keys must be known (see ATTRIBUTES) and not below ``level``."""
    depth = LEVEL_ORDER.index(level)
    columns: list[ColumnElement[Any]] = []
    conditions: list[ColumnElement[bool]] = []
    for keyword, match in keys.items():
        attribute = ATTRIBUTES[keyword]
        if LEVEL_ORDER.index(attribute.level) > depth:
            raise InvalidQuery(f"{keyword} is a {attribute.level} key, below {level} level")
        columns.append(cast(ColumnElement[Any], attribute.column).label(keyword))
        condition = match_condition(attribute, match)
        if condition is not None:
            conditions.append(condition)

    entity_pk = _ENTITY_PK[level]
    statement = select(*columns) if columns else select(entity_pk)
    statement = statement.select_from(Patient)
    if depth >= 1:
        statement = statement.join(DicomStudy, DicomStudy.patient_pk == Patient.id)
        # a rejected study is withdrawn from every query (DOMAIN.md), never deleted
        conditions.append(DicomStudy.metadata_status != MetadataStatus.REJECTED.value)
    if depth >= 2:
        statement = statement.join(DicomSeries, DicomSeries.study_pk == DicomStudy.id)
    if depth >= 3:
        statement = statement.join(DicomInstance, DicomInstance.series_pk == DicomSeries.id)
        # held for reconciliation, not part of the study it arrived under
        conditions.append(DicomInstance.quarantined.is_(False))
    statement = statement.where(and_(*conditions)).order_by(entity_pk)
    return statement.limit(limit) if limit is not None else statement


def match_condition(attribute: Attribute, match: Match) -> ColumnElement[bool] | None:
    """The WHERE clause one matching key asks for; None for universal matching."""
    column = cast(ColumnElement[Any], attribute.column)
    if isinstance(match, Universal):
        return None
    if isinstance(match, AnyOf):
        parts = [match_condition(attribute, part) for part in match.matches]
        return or_(*(part for part in parts if part is not None))
    if attribute.computed:
        raise UnsupportedQuery(f"{attribute.keyword} is returned, not matched")
    if attribute.vr == "IS":
        return column == _integer(attribute.keyword, match)
    if attribute.normalized is not None:
        column = cast(ColumnElement[Any], attribute.normalized)
    if attribute.folded is not None:
        # PS3.4 C.2.2.2.1 lets PN match case-insensitively; this node does
        column = cast(ColumnElement[Any], attribute.folded)
        match = _folded(match)
        if isinstance(match, Single | Wildcard) and "=" not in _text(match):
            return _in_a_component_group(column, match)
    if isinstance(match, Single):
        if attribute.multi_valued:
            return _has_value(column, match.value)
        return column == match.value  # case-sensitive on both databases
    if isinstance(match, Wildcard):
        if attribute.multi_valued:
            raise UnsupportedQuery(f"{attribute.keyword}: wildcards in a multi-valued key")
        return column.like(like_pattern(match.pattern), escape="\\")
    if isinstance(match, UidList):
        return column.in_(match.values)
    if isinstance(match, Range):
        bounds = []
        if match.low is not None:
            bounds.append(column >= match.low)
        if match.high is not None:
            bounds.append(column <= match.high)
        return and_(*bounds)
    raise AssertionError(match)


def _text(match: Single | Wildcard) -> str:
    return match.value if isinstance(match, Single) else match.pattern


def _in_a_component_group(
    column: ColumnElement[Any], match: Single | Wildcard
) -> ColumnElement[bool]:
    """A PN value with no ``=`` matches the whole name or any one of its component
    groups (alphabetic, ideographic, phonetic): ``山田^太郎`` finds
    ``Yamada^Tarou=山田^太郎=やまだ^たろう``."""
    pattern = like_pattern(_text(match))
    return or_(
        column.like(pattern, escape="\\"),
        column.like(f"{pattern}=%", escape="\\"),
        column.like(f"%={pattern}", escape="\\"),
        column.like(f"%={pattern}=%", escape="\\"),
    )


def _folded(match: Match) -> Match:
    if isinstance(match, Single):
        return Single(fold_person_name(match.value))
    if isinstance(match, Wildcard):
        return Wildcard(fold_person_name(match.pattern))
    return match


def _integer(keyword: str, match: Match) -> int:
    if not isinstance(match, Single):
        raise UnsupportedQuery(f"{keyword}: only single-value matching for IS")
    try:
        return int(match.value)
    except ValueError:
        raise InvalidQuery(f"{keyword}: not an integer string") from None


def _has_value(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    """One value of a backslash-joined multi-value equals ``value``."""
    literal = like_pattern(value)  # value may hold % or _: match them literally
    return or_(
        column == value,
        column.like(f"{literal}\\\\%", escape="\\"),
        column.like(f"%\\\\{literal}", escape="\\"),
        column.like(f"%\\\\{literal}\\\\%", escape="\\"),
    )
