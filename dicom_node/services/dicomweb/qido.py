"""QIDO-RS (PS3.18 10.6): searching the index for studies, series and instances.

The matching is C-FIND's: each attribute is parsed by ``domain/query.py
parse_match`` with the VR of the data dictionary and compiled by the one query
compiler (``db/query.py compile_query``, with ``only_held`` as C-FIND), so
wildcards, ranges, UID lists, the combined date-time range and the
case-insensitive PN rule are the same on both sides. What QIDO adds here:

- the query parameters (PS3.18 8.3.4): an attribute by keyword or by tag
  (eight hex digits), ``includefield`` (repeatable, comma lists, ``all``),
  ``limit``, ``offset``, ``fuzzymatching`` (and the empty/multiple value
  matching switches), each checked before anything reaches SQL;
- the UIDs of the path as matching keys of the level above;
- the visibility rule (``services/access/visibility.py``): the compiled SELECT
  is narrowed to the studies the principal may see, so a referring physician
  finds only the studies of their orders (the compiler itself knows no user);
- the default return attributes of PS3.18 Tables 10.6.3-3/-4/-5 that the index
  holds, with RetrieveURL and InstanceAvailability, as DICOM JSON
  (``dicom_json.py``);
- the cap: at most ``max_matches`` results (settings.max_find_matches, the
  C-FIND cap), with the PS3.18 warning when it cut the list.

Every request is one 110112 Query audit event with the parameters asked,
never the results; a refused one too (``record_qido``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import RowMapping
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.query import ATTRIBUTES, compile_query
from dicom_node.domain.audit import TargetKind, query_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import LEVEL_ORDER, Level, Match, Single, Universal, parse_match
from dicom_node.domain.vr import check_text
from dicom_node.services.access.visibility import study_condition
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.dicomweb import dicom_json
from dicom_node.services.dicomweb.instances import checked_uid
from dicom_node.services.query.find import audited_keys
from dicom_node.services.query.studies import MAX_KEY_LENGTH

# PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance): the return keys the
# index holds. Not held, so not answered: SpecificCharacterSet (the JSON is
# UTF-8), TimezoneOffsetFromUTC, PerformedProcedureStepStartDate/Time, the
# series' RequestAttributesSequence, and Rows, Columns, BitsAllocated,
# NumberOfFrames (WADO-RS metadata has them).
STUDY_RETURN_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_RETURN_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_RETURN_KEYS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber")
_RETURN_KEYS = {
    Level.STUDY: STUDY_RETURN_KEYS,
    Level.SERIES: SERIES_RETURN_KEYS,
    Level.IMAGE: INSTANCE_RETURN_KEYS,
}

# PS3.18 8.3.4.2, 8.3.4.5, 8.3.4.6 and 10.6.3.3: the Warning texts
CAPPED = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)
_UNSUPPORTED_SWITCHES = {
    "fuzzymatching": "The fuzzymatching parameter is not supported. "
    "Only literal matching has been performed.",
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. "
    "Empty Value Matching has not been performed.",
    "multiplevaluematching": "The multiplevaluematching parameter is not supported. "
    "Multiple Value Matching has not been performed.",
}
INCLUDE_ALL = "all"
MAX_OFFSET = 10**9
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True)
class Resource:
    """What the path names: the level searched and the UIDs above it."""

    level: Level  # STUDY, SERIES or IMAGE
    study_uid: str | None = None
    series_uid: str | None = None

    def __post_init__(self) -> None:
        # a UID from the URL is checked before it reaches SQL (400 otherwise)
        if self.study_uid is not None:
            checked_uid(self.study_uid, "StudyInstanceUID")
        if self.series_uid is not None:
            checked_uid(self.series_uid, "SeriesInstanceUID")

    def path_keys(self) -> dict[str, str]:
        keys = {}
        if self.study_uid is not None:
            keys["StudyInstanceUID"] = self.study_uid
        if self.series_uid is not None:
            keys["SeriesInstanceUID"] = self.series_uid
        return keys

    def returned_levels(self) -> list[Level]:
        """The levels whose default return keys each result carries (PS3.18
        10.6.3.3.2-3): the level searched, and the ones above it that the path
        does not fix (all series carry their study's attributes)."""
        levels = [self.level]
        if self.level is Level.IMAGE and self.series_uid is None:
            levels.append(Level.SERIES)
        if self.study_uid is None:
            levels.append(Level.STUDY)
        return levels


@dataclass(frozen=True)
class QidoQuery:
    """The query parameters of a QIDO-RS request, checked."""

    # matching keys: keyword -> value as given ("" asks for the attribute)
    keys: dict[str, str] = field(default_factory=dict)
    # includefield keywords the index holds (others are not returned, PS3.18 10.6.3.3)
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    # Warning texts for switches asked for and not supported
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class QidoResult:
    # each match's DICOM JSON object, serialized as soon as it was made (see search)
    datasets: list[str]
    # the Warning texts (PS3.18) to answer with
    warnings: list[str]

    def json(self) -> str:
        """The answer's body: the JSON array of the matches."""
        return "[" + ", ".join(self.datasets) + "]"


def attribute_keyword(attribute_id: str) -> str:
    """A keyword from a query parameter's name: a keyword of the data dictionary
    or a tag as eight hex digits (PS3.18 8.3.4.1). InvalidValue otherwise."""
    if "." in attribute_id:
        raise InvalidValue(
            f"{attribute_id}: sequence attributes (Sequence.Attribute) are not supported",
            field=attribute_id,
        )
    if _TAG.fullmatch(attribute_id):
        tag = int(attribute_id, 16)
        keyword = keyword_for_tag(tag) if dictionary_has_tag(tag) else ""
        if not keyword:
            raise InvalidValue(
                f"{attribute_id}: not a tag of the data dictionary", field=attribute_id
            )
        return keyword
    if tag_for_keyword(attribute_id) is None:
        raise InvalidValue(
            f"{attribute_id}: not a DICOM keyword (case-sensitive) or tag (8 hex digits)",
            field=attribute_id,
        )
    return attribute_id


def _private_or_unknown_tag(attribute_id: str) -> bool:
    """A well-formed tag the data dictionary does not know (a private one): an
    includefield the node holds no value for, not returned (PS3.18 10.6.3.3:
    "supported by the origin server"), where a malformed name is refused."""
    return _TAG.fullmatch(attribute_id) is not None and not dictionary_has_tag(
        int(attribute_id, 16)
    )


def parse_query(params: Iterable[tuple[str, str]]) -> QidoQuery:
    """The query parameters of a QIDO-RS request. Raises InvalidValue (400)
    naming the parameter for anything it cannot honour: an unknown parameter
    or attribute, an attribute the index cannot match on, a value given twice,
    a malformed limit, offset or switch."""
    keys: dict[str, str] = {}
    include: set[str] = set()
    include_all = False
    numbers: dict[str, int] = {}
    warnings: list[str] = []
    switches: set[str] = set()
    for name, value in params:
        if name == "includefield":
            for part in (p.strip() for p in value.split(",")):
                if part == INCLUDE_ALL:
                    include_all = True
                elif part and not _private_or_unknown_tag(part):
                    keyword = attribute_keyword(part)
                    if keyword in ATTRIBUTES:  # what the index does not hold is not returned
                        include.add(keyword)
            continue
        if name in ("limit", "offset"):
            if name in numbers:
                raise InvalidValue(f"{name} given twice", field=name)
            numbers[name] = _number(name, value)
            continue
        if name in _UNSUPPORTED_SWITCHES:
            if name in switches:
                raise InvalidValue(f"{name} given twice", field=name)
            switches.add(name)
            if value not in ("true", "false"):
                raise InvalidValue(f"{name}: true or false", field=name)
            if value == "true":
                warnings.append(_UNSUPPORTED_SWITCHES[name])
            continue
        keyword = attribute_keyword(name)
        if keyword in keys:
            raise InvalidValue(f"{keyword} given twice: send one value (a list: a\\b)", field=name)
        if keyword not in ATTRIBUTES or dictionary_VR(keyword) == "SQ":
            raise InvalidValue(
                f"{keyword}: the node does not index this attribute, so cannot match on it "
                "(ask for it with includefield if it is indexed)",
                field=name,
            )
        check_text(name, value)
        if len(value) > MAX_KEY_LENGTH:
            raise InvalidValue(f"{name}: at most {MAX_KEY_LENGTH} characters", field=name)
        # PS3.18 lists UIDs with commas as well as backslashes; a UID has no comma
        keys[keyword] = value.replace(",", "\\") if dictionary_VR(keyword) == "UI" else value
    limit = numbers.get("limit")
    if limit is not None and limit < 1:
        raise InvalidValue("limit: at least 1", field="limit")
    return QidoQuery(
        keys=keys,
        include=frozenset(include),
        include_all=include_all,
        limit=limit,
        offset=numbers.get("offset", 0),
        warnings=tuple(warnings),
    )


def _number(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > MAX_OFFSET:
        raise InvalidValue(f"{name}: an integer from 0 to {MAX_OFFSET}", field=name)
    return int(value)


def search(
    session: Session,
    principal: Principal,
    resource: Resource,
    query: QidoQuery,
    *,
    max_matches: int,
    max_list_values: int,
    service_url: str,
) -> QidoResult:
    """The matching entities the principal may see, from ``query.offset``, at
    most ``query.limit`` and ``max_matches`` of them, as DICOM JSON.
    ``service_url``: the base of the RetrieveURLs (``.../dicomweb``)."""
    path_keys = resource.path_keys()
    matches: dict[str, Match] = {}
    for keyword, raw in query.keys.items():
        if keyword in path_keys:
            raise InvalidValue(f"{keyword} is given in the path", field=keyword)
        try:
            matches[keyword] = parse_match(
                dictionary_VR(keyword), raw, keyword=keyword, max_values=max_list_values
            )
        except InvalidValue as exc:
            raise InvalidValue(str(exc), field=keyword) from exc
    for keyword, uid in path_keys.items():
        matches[keyword] = Single(uid)
    for keyword in _return_keys(resource, query):
        matches.setdefault(keyword, Universal())

    statement = compile_query(resource.level, matches, limit=None, only_held=True)
    # the compiler knows no user: the one visibility rule narrows its SELECT
    # (every QIDO level joins the study)
    statement = statement.where(study_condition(principal))
    wanted = min(query.limit or max_matches, max_matches)
    statement = statement.offset(query.offset).limit(wanted + 1)
    # One row at a time, each answer serialized at once: a match's dicts die
    # with it instead of hundreds living until the whole answer is built. Kept
    # alive together, they were promoted to the oldest GC generation and set
    # off a full collection of the process's heap (~0.1 s) every few dozen
    # searches of a few hundred matches: the p95 of such a search.
    datasets: list[str] = []
    more = False
    for row in session.execute(statement).mappings():
        if len(datasets) == wanted:
            more = True
            break
        datasets.append(json.dumps(_answer(resource.level, row, service_url)))

    warnings = list(query.warnings)
    # the server's cap cut the list (not the client's own limit): say so
    if more and (query.limit is None or query.limit > max_matches):
        warnings.append(CAPPED)
    return QidoResult(datasets=datasets, warnings=warnings)


def _return_keys(resource: Resource, query: QidoQuery) -> list[str]:
    """Default return keys of the levels the resource returns, then the
    includefield ones at or above the level searched (an attribute of a lower
    level is not returned, PS3.18 10.6.3.3)."""
    keys = [keyword for level in resource.returned_levels() for keyword in _RETURN_KEYS[level]]
    depth = LEVEL_ORDER.index(resource.level)
    if query.include_all:
        levels = {*resource.returned_levels(), resource.level}
        if Level.STUDY in levels:
            levels.add(Level.PATIENT)
        keys += [keyword for keyword, attribute in ATTRIBUTES.items() if attribute.level in levels]
    keys += [
        keyword
        for keyword in sorted(query.include)
        if LEVEL_ORDER.index(ATTRIBUTES[keyword].level) <= depth
    ]
    # the UIDs the RetrieveURL is built from
    keys += ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"][:depth]
    return list(dict.fromkeys(keys))


def _answer(level: Level, row: RowMapping, service_url: str) -> dict[str, dict[str, Any]]:
    url = f"{service_url}/studies/{row['StudyInstanceUID']}"
    if level is not Level.STUDY:
        url += f"/series/{row['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        url += f"/instances/{row['SOPInstanceUID']}"
    # only held entities are found (only_held): their files are on line
    return dicom_json.dataset({**row, "RetrieveURL": url, "InstanceAvailability": "ONLINE"})


def record_qido(
    db: Database,
    principal: Principal,
    *,
    level: Level,
    path: str,
    params: Iterable[tuple[str, str]],
    path_keys: Mapping[str, str],
    source_address: str | None,
    failure: str | None = None,
) -> None:
    """110112 Query: the path, the query parameters asked (bounded as C-FIND's
    keys are), never the results; ``failure`` if refused or failed.

    Committed before the answer goes out, without waiting for the disk flush,
    as C-FIND's Query event (``services/query/find.py record_query``): that
    wait was most of a selective search's time on SQLite; a power cut may
    lose the last query records (a crash of the node does not), nothing else."""
    asked: dict[str, str] = {}
    for name, value in params:
        asked[name] = f"{asked[name]},{value}" if name in asked else value
    with db.unit_of_work(wait_for_disk=False) as session:
        record_audit_event(
            session,
            query_event(
                "qido_search",
                user_actor(principal, source_address),
                TargetKind(level.value),
                outcome=AuditOutcome.MINOR_FAILURE if failure else AuditOutcome.SUCCESS,
                reason=failure,
                details={
                    "keys": audited_keys({**path_keys, **asked}),
                    "level": level.value,
                    "resource": path[:512],
                },
            ),
        )
