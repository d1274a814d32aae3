"""The one query compiler: C-FIND matching keys -> one SELECT over the index.

Used by the C-FIND SCP and the HTTP study search alike. Each level's entity is
joined to its parents only (patient <- study <- series <- instance), so the
SELECT returns exactly one row per entity at the query level (PS3.4 C.4.1.3.1).

Two matching rules span more than one column:
- a DA key with its TM partner (StudyDate + StudyTime, SeriesDate + SeriesTime)
  both given is ONE combined date-time range (PS3.4 C.2.2.2.5.1, the rule the
  worklist applies to the SPS start date and time): ``20260105-20260107`` with
  ``1000-1800`` runs from 5 January 10:00 to 7 January 18:00; the time bounds
  apply to the first and the last day only;
- sequence matching (C.2.2.2.6) on RequestAttributesSequence: the one query
  item's keys must all match ONE stored item of an instance of the entity. The
  items are JSON in dicom_instances.request_attributes; each database expands
  them with its own table function (SQLite ``json_each``, PostgreSQL
  ``json_array_elements``), so the whole match stays in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient, folded_copy
from dicom_node.domain.enums import MetadataStatus
from dicom_node.domain.names import NameForm, name_pattern
from dicom_node.domain.query import (
    LEVEL_ORDER,
    AnyOf,
    InvalidQuery,
    Level,
    Match,
    Range,
    SequenceMatch,
    Single,
    UidList,
    Universal,
    UnsupportedQuery,
    Wildcard,
    like_literal,
    like_pattern,
)


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    vr: str
    column: ColumnElement[Any] | InstrumentedAttribute[Any]
    # PN: the column's folded copy, which the PN rule matches on (domain/names.py);
    # found by itself for a model's column (db/models.folded_copy)
    folded: ColumnElement[Any] | InstrumentedAttribute[Any] | None = None
    # TM: matched on the normalised copy (HHMMSS.FFFFFF), so ranges compare as text
    normalized: InstrumentedAttribute[Any] | None = None
    # ModalitiesInStudy: a backslash-joined set, matched per value
    multi_valued: bool = False
    # counts the node computes: returned, never matched on
    computed: bool = False
    # DA: the TM key it pairs with and that key's normalised column (C.2.2.2.5.1)
    time_partner: tuple[str, InstrumentedAttribute[Any]] | None = None

    def __post_init__(self) -> None:
        # every PN key is matched by the one PN rule, on a folded copy: a PN
        # column without one is a mistake to find at import, not at a query
        if self.vr == "PN" and self.folded is None:
            object.__setattr__(self, "folded", folded_copy(self.column))


def _patient_count(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return (
        select(func.coalesce(column, 0))
        .where(
            DicomStudy.patient_pk == Patient.id,
            # withdrawn studies are hidden at every level, counts included;
            # a study whose images retention removed is not counted either
            DicomStudy.metadata_status != MetadataStatus.REJECTED.value,
            DicomStudy.instance_count > 0,
        )
        .correlate(Patient)
        .scalar_subquery()
    )


_ATTRIBUTES = [
    Attribute("PatientName", Level.PATIENT, "PN", Patient.patient_name),
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
    Attribute(
        "StudyDate",
        Level.STUDY,
        "DA",
        DicomStudy.study_date,
        time_partner=("StudyTime", DicomStudy.study_time_norm),
    ),
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
        "NameOfPhysiciansReadingStudy",
        Level.STUDY,
        "PN",
        DicomStudy.name_of_physicians_reading_study,
    ),
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
    Attribute("PerformingPhysicianName", Level.SERIES, "PN", DicomSeries.performing_physician_name),
    Attribute(
        "SeriesDate",
        Level.SERIES,
        "DA",
        DicomSeries.series_date,
        time_partner=("SeriesTime", DicomSeries.series_time_norm),
    ),
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


# the column find_entities asks for to answer sequence keys (never a DICOM keyword)
ENTITY_KEY = "_entity_pk"


def compile_query(
    level: Level,
    keys: Mapping[str, Match],
    *,
    limit: int | None,
    sequences: Mapping[str, SequenceMatch] | None = None,
    with_entity_key: bool = False,
    only_held: bool = False,
) -> Select[Any]:
    """SELECT one row per matching entity at ``level``; a column per key, labelled
    with its keyword. Keys must be known (see ATTRIBUTES) and not below ``level``.
    ``sequences`` are sequence keys (see SEQUENCES) matched in the same SELECT;
    their values are read afterwards (``sequence_items``), for which
    ``with_entity_key`` adds the entity's primary key as ``ENTITY_KEY``.
    ``only_held`` (C-FIND): only entities with images to retrieve, so neither a
    study whose images retention removed nor a patient without such a study."""
    depth = LEVEL_ORDER.index(level)
    columns: list[ColumnElement[Any]] = []
    conditions: list[ColumnElement[bool]] = []
    paired, paired_conditions = _combined_date_times(keys)
    for keyword, match in keys.items():
        attribute = ATTRIBUTES[keyword]
        if LEVEL_ORDER.index(attribute.level) > depth:
            raise InvalidQuery(f"{keyword} is a {attribute.level} key, below {level} level")
        columns.append(cast(ColumnElement[Any], attribute.column).label(keyword))
        if keyword in paired:
            continue  # matched with its partner, below
        condition = match_condition(attribute, match)
        if condition is not None:
            conditions.append(condition)
    conditions.extend(paired_conditions)
    for keyword, sequence_match in (sequences or {}).items():
        sequence = SEQUENCES[keyword]
        if LEVEL_ORDER.index(sequence.level) > depth:
            raise InvalidQuery(f"{keyword} is a {sequence.level} key, below {level} level")
        condition = sequence_condition(level, sequence, sequence_match)
        if condition is not None:
            conditions.append(condition)

    entity_pk = _ENTITY_PK[level]
    if with_entity_key:
        columns.append(entity_pk.label(ENTITY_KEY))
    statement = select(*columns) if columns else select(entity_pk)
    statement = statement.select_from(Patient)
    if depth == 0 and only_held:
        conditions.append(
            exists().where(
                DicomStudy.patient_pk == Patient.id,
                DicomStudy.metadata_status != MetadataStatus.REJECTED.value,
                DicomStudy.instance_count > 0,
            )
        )
    if depth >= 1:
        statement = statement.join(DicomStudy, DicomStudy.patient_pk == Patient.id)
        # a rejected study is withdrawn from every query (docs/domain.md#study-metadata-states),
        # never deleted
        conditions.append(DicomStudy.metadata_status != MetadataStatus.REJECTED.value)
        if only_held:
            conditions.append(DicomStudy.instance_count > 0)
    if depth >= 2:
        statement = statement.join(DicomSeries, DicomSeries.study_pk == DicomStudy.id)
        if only_held:
            # a series made for a quarantined instance of another patient holds none
            conditions.append(DicomSeries.instance_count > 0)
    if depth >= 3:
        statement = statement.join(DicomInstance, DicomInstance.series_pk == DicomSeries.id)
        # held for reconciliation, not part of the study it arrived under
        conditions.append(DicomInstance.quarantined.is_(False))
    statement = statement.where(and_(*conditions)).order_by(entity_pk)
    return statement.limit(limit) if limit is not None else statement


# ------------------------------------------------------- combined date and time


def _combined_date_times(
    keys: Mapping[str, Match],
) -> tuple[set[str], list[ColumnElement[bool]]]:
    """(keywords matched in pairs, one condition per pair) for each DA/TM pair
    given together, neither universal: one date-time range (PS3.4 C.2.2.2.5.1)."""
    paired: set[str] = set()
    conditions: list[ColumnElement[bool]] = []
    for keyword, date_match in keys.items():
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None or attribute.time_partner is None:
            continue
        time_keyword, time_column = attribute.time_partner
        time_match = keys.get(time_keyword, Universal())
        if isinstance(date_match, Universal) or isinstance(time_match, Universal):
            continue
        conditions.append(
            date_time_range(
                cast(ColumnElement[str], attribute.column),
                cast(ColumnElement[str], time_column),
                date_match,
                time_match,
                keyword=keyword,
            )
        )
        paired |= {keyword, time_keyword}
    return paired, conditions


def date_time_range(
    date_column: ColumnElement[str],
    time_column: ColumnElement[str],
    date_match: Match,
    time_match: Match,
    *,
    keyword: str,
) -> ColumnElement[bool]:
    """A date (single or range) and a time (TM: always a Range of normalised
    bounds) as one date-time range: the time bounds hold on the first and the
    last day, every time of day in between. A stored time that is empty matches
    only strictly inside the date range (its instant on a boundary day is unknown)."""
    first: str | None
    last: str | None
    if isinstance(date_match, Single):
        first, last = date_match.value, date_match.value
    elif isinstance(date_match, Range):
        first, last = date_match.low, date_match.high
    else:
        raise UnsupportedQuery(f"{keyword}: a date or a date range")
    if not isinstance(time_match, Range):
        raise UnsupportedQuery(f"{keyword}: a time or a time range with the date")
    bounds: list[ColumnElement[bool]] = []
    if first is not None:
        bounds.append(
            date_column >= first
            if time_match.low is None
            else or_(date_column > first, and_(date_column == first, time_column >= time_match.low))
        )
    if last is not None:
        bounds.append(
            date_column <= last
            if time_match.high is None
            else or_(date_column < last, and_(date_column == last, time_column <= time_match.high))
        )
    if not bounds:
        return date_column.is_not(None)  # "-" is refused by the parser; kept total
    return and_(*bounds)


# ------------------------------------------------------------------- sequences


@dataclass(frozen=True)
class SequenceAttribute:
    keyword: str
    # the highest level it is answered at (it is matched on the entity's instances)
    level: Level
    # item keyword -> (key in the stored JSON item, VR)
    fields: Mapping[str, tuple[str, str]]


# RequestAttributesSequence (0040,0275) belongs to the General Series module, but
# the orders a study fulfils are what an SCU asks a study for (IHE SWF: find the
# study of an accession in its request attributes), so it is answered at STUDY
# level too: the items of all the study's instances.
SEQUENCES: Mapping[str, SequenceAttribute] = {
    "RequestAttributesSequence": SequenceAttribute(
        "RequestAttributesSequence",
        Level.STUDY,
        {
            "AccessionNumber": ("accession_number", "SH"),
            "RequestedProcedureID": ("requested_procedure_id", "SH"),
            "ScheduledProcedureStepID": ("scheduled_procedure_step_id", "SH"),
            "StudyInstanceUID": ("study_instance_uid", "UI"),
        },
    )
}
# Items are matched on their stored JSON, which holds no folded copy: a PN item
# field would need one (the PN rule, domain/names.py) before it is listed here.
if any(vr == "PN" for s in SEQUENCES.values() for _key, vr in s.fields.values()):
    raise RuntimeError("a PN sequence item field needs a folded copy in the stored items")


class json_array_items(FunctionElement[Any]):
    """The elements of a JSON array column, one row each, in a column ``value``.
    Anything but an array (NULL, JSON null) gives no rows."""

    name = "json_array_items"
    inherit_cache = True


@compiles(json_array_items, "sqlite")
def _sqlite_items(element: json_array_items, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


@compiles(json_array_items, "postgresql")
def _postgresql_items(element: json_array_items, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    # json_array_elements fails on a scalar (a JSON null): give it an empty array
    return (
        f"json_array_elements(CASE WHEN json_typeof({column}) = 'array' "
        f"THEN {column} ELSE '[]'::json END)"
    )


class json_text_field(FunctionElement[str]):
    """One key of a JSON object, as text (NULL when absent)."""

    type = String()
    name = "json_text_field"
    inherit_cache = True


@compiles(json_text_field, "sqlite")
def _sqlite_field(element: json_text_field, compiler: SQLCompiler, **kw: Any) -> str:
    item, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"json_extract({item}, '$.' || {key})"


@compiles(json_text_field, "postgresql")
def _postgresql_field(element: json_text_field, compiler: SQLCompiler, **kw: Any) -> str:
    item, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({item} ->> {key})"


def sequence_condition(
    level: Level, sequence: SequenceAttribute, match: SequenceMatch
) -> ColumnElement[bool] | None:
    """EXISTS one stored item, of an instance of the entity at ``level``, that
    matches every key of the query's item (PS3.4 C.2.2.2.6); None if universal."""
    if match.is_universal:
        return None
    if level is Level.IMAGE:
        owner: Any = DicomInstance  # the outer query's instance itself
        scope: list[ColumnElement[bool]] = []
    else:
        owner = aliased(DicomInstance, name="rq_instance")
        scope = [owner.quarantined.is_(False)]
    items = json_array_items(owner.request_attributes).table_valued("value").alias("rq_item")
    conditions: list[ColumnElement[bool]] = []
    for keyword, item_match in match.items.items():
        field = sequence.fields.get(keyword)
        if field is None:
            continue  # not indexed: ignored, reported as unsupported (FF01)
        key, vr = field
        text = json_text_field(items.c.value, literal(key))
        condition = match_condition(Attribute(keyword, level, vr, text), item_match)
        if condition is not None:
            conditions.append(condition)
    if not conditions:
        return None
    if level is Level.IMAGE:
        return exists(select(literal(1)).select_from(items).where(*conditions))
    statement = select(literal(1)).select_from(owner).join(items, true())
    if level is Level.SERIES:
        scope.append(owner.series_pk == DicomSeries.id)
    elif level is Level.STUDY:
        series = aliased(DicomSeries, name="rq_series")
        statement = statement.join(series, series.id == owner.series_pk)
        scope.append(series.study_pk == DicomStudy.id)
    else:
        raise InvalidQuery(f"{sequence.keyword} is not a {level} key")
    return exists(statement.where(*scope, *conditions))


def sequence_items(level: Level, entity_pks: list[int]) -> Select[int, str]:
    """(entity pk, request_attributes as JSON text) of the entities' instances,
    each distinct value once: what find_entities answers sequence keys from."""
    text = cast_text(DicomInstance.request_attributes)
    conditions = [
        DicomInstance.quarantined.is_(False),
        DicomInstance.request_attributes.is_not(None),
    ]
    if level is Level.IMAGE:
        return select(DicomInstance.id, text).where(DicomInstance.id.in_(entity_pks), *conditions)
    if level is Level.SERIES:
        return (
            select(DicomInstance.series_pk, text)
            .where(DicomInstance.series_pk.in_(entity_pks), *conditions)
            .distinct()
        )
    return (
        select(DicomSeries.study_pk, text)
        .join(DicomInstance, DicomInstance.series_pk == DicomSeries.id)
        .where(DicomSeries.study_pk.in_(entity_pks), *conditions)
        .distinct()
    )


def cast_text(column: InstrumentedAttribute[Any]) -> ColumnElement[str]:
    return sql_cast(column, Text)


def match_condition(attribute: Attribute, match: Match) -> ColumnElement[bool] | None:
    """The WHERE clause one matching key asks for; None for universal matching.

    A list of values (``AnyOf``, ``UidList``) is ONE bound parameter however long
    it is (``listed``): ``IN`` for exact values, one ``EXISTS`` over the LIKE
    patterns. An ``OR`` per value fails past 1,000 values in SQLite ("Expression
    tree is too large") and a parameter per value past 32,766 (SQLite) or 65,535
    (PostgreSQL); ``max_query_list_values`` may be set to 100,000."""
    column = cast(ColumnElement[Any], attribute.column)
    if isinstance(match, Universal):
        return None
    if attribute.computed:
        raise UnsupportedQuery(f"{attribute.keyword} is returned, not matched")
    if attribute.vr == "IS":
        return _integer_condition(attribute.keyword, column, match)
    if attribute.vr == "PN":
        assert attribute.folded is not None  # found by __post_init__
        return person_name_condition(attribute.folded, match)
    if attribute.normalized is not None:
        column = cast(ColumnElement[Any], attribute.normalized)
    if isinstance(match, Single | Wildcard | AnyOf):
        parts = match.matches if isinstance(match, AnyOf) else (match,)
        compared: dict[str, ColumnElement[Any]] = {
            _EQUAL: column,
            _LIKE: column,
            _VALUES: literal("\\") + column + literal("\\"),
        }
        return _any_test(compared, [_test(attribute, part) for part in parts])
    if isinstance(match, UidList):
        return _in_list(column, match.values)
    if isinstance(match, Range):
        bounds = []
        if match.low is not None:
            bounds.append(column >= match.low)
        if match.high is not None:
            bounds.append(column <= match.high)
        return and_(*bounds)
    raise AssertionError(match)


def person_name_condition(
    folded: ColumnElement[Any] | InstrumentedAttribute[Any], match: Match
) -> ColumnElement[bool] | None:
    """A PN key on a PN column's folded copy: the one PN rule of domain/names.py
    (case-insensitive, any component group of any value, wildcards), for every
    PN key of C-FIND, the worklist and the HTTP searches. None: universal."""
    if isinstance(match, Universal):
        return None
    parts = match.matches if isinstance(match, AnyOf) else (match,)
    column = cast(ColumnElement[Any], folded)
    compared: dict[str, ColumnElement[Any]] = {
        # "=" + each group of each value + "=": "a=b\c" -> "=a=b=\=c="
        NameForm.GROUPS: literal("=") + func.replace(column, "\\", "=\\=") + literal("="),
        # "\" + each whole value + "\"
        NameForm.VALUES: literal("\\") + column + literal("\\"),
    }
    tests: list[tuple[str, str]] = []
    for part in parts:
        if not isinstance(part, Single | Wildcard):
            raise UnsupportedQuery(f"not a person name match: {type(part).__name__}")
        pattern = name_pattern(_text(part))
        if pattern is not None:
            tests.append((pattern.form, like_pattern(pattern.pattern)))
    if not tests:
        return false()  # a name that folds to nothing (``^``): no stored name is empty
    return _any_test(compared, tests)


# What one value of a text key is compared with: the column itself (EQUAL, LIKE),
# or a backslash-joined multi-value as "\" + values + "\" (VALUES).
_EQUAL, _LIKE, _VALUES = "equal", "like", "values"


def _test(attribute: Attribute, match: Single | Wildcard) -> tuple[str, str]:
    """(what it is compared with, the value or LIKE pattern) for one value."""
    if attribute.multi_valued:
        if isinstance(match, Wildcard):
            raise UnsupportedQuery(f"{attribute.keyword}: wildcards in a multi-valued key")
        return _VALUES, f"%\\\\{like_literal(match.value)}\\\\%"  # \\ is one \ in LIKE
    if isinstance(match, Wildcard):
        return _LIKE, like_pattern(match.pattern)
    return _EQUAL, match.value  # case-sensitive on both databases


def _any_test(
    compared: Mapping[str, ColumnElement[Any]], tests: list[tuple[str, str]]
) -> ColumnElement[bool]:
    """Whether any (target, value) test holds: ``compared[target]`` equal to the
    value for _EQUAL, LIKE the pattern for every other target."""
    conditions: list[ColumnElement[bool]] = []
    for target, expression in compared.items():
        texts = list(dict.fromkeys(text for kind, text in tests if kind == target))
        if not texts:
            continue
        if target == _EQUAL:
            conditions.append(_in_list(expression, texts))
        elif len(texts) == 1:
            conditions.append(expression.like(texts[0], escape="\\"))
        else:
            patterns = listed(texts)
            conditions.append(
                exists(
                    select(literal(1))
                    .select_from(patterns)
                    .where(expression.like(patterns.c.value, escape="\\"))
                )
            )
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _in_list(column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    if len(values) == 1:
        return column == values[0]
    return column.in_(select(listed(values).c.value))


def _integer_condition(
    keyword: str, column: ColumnElement[Any], match: Match
) -> ColumnElement[bool]:
    """IS: single values or a list of them (parse_match has checked each is an
    integer within IS's range, the range of the column)."""
    parts = match.matches if isinstance(match, AnyOf) else (match,)
    if not all(isinstance(part, Single) for part in parts):
        raise UnsupportedQuery(f"{keyword}: only single values or lists for IS")
    numbers = list(dict.fromkeys(int(cast(Single, part).value) for part in parts))
    if len(numbers) == 1:
        return column == numbers[0]
    return column.in_(select(sql_cast(listed(numbers).c.value, Integer)))


class json_list_values(FunctionElement[Any]):
    """The elements of a JSON array given as one bound parameter, one row each in
    a column ``value`` (text; cast it for numbers)."""

    name = "json_list_values"
    inherit_cache = True


@compiles(json_list_values, "sqlite")
def _sqlite_list(element: json_list_values, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


@compiles(json_list_values, "postgresql")
def _postgresql_list(element: json_list_values, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements_text(CAST({compiler.process(element.clauses, **kw)} AS json))"


def listed(values: Sequence[str | int]) -> Any:
    """A list of values as a one-column table (``.c.value``) read from ONE bound
    parameter (a JSON array), whatever the list's length."""
    array = literal(json.dumps(list(values)), Text())
    return json_list_values(array).table_valued("value").alias()


def _text(match: Single | Wildcard) -> str:
    return match.value if isinstance(match, Single) else match.pattern
