"""Finding studies, series, instances and patients by C-FIND matching keys.

One service behind the C-FIND SCP and the HTTP study search. It reads
everything it returns before returning: a caller streams the answers with no
session open (a slow peer must not hold a database connection or lock).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.query import (
    ATTRIBUTES,
    ENTITY_KEY,
    SEQUENCES,
    SequenceAttribute,
    compile_query,
    sequence_items,
)
from dicom_node.domain.audit import Actor, AuditRecord, TargetKind, query_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.names import person_name_matches
from dicom_node.domain.query import (
    InvalidQuery,
    Level,
    Match,
    SequenceMatch,
    Universal,
    UnsupportedQuery,
    parse_match,
    value_matches,
)
from dicom_node.services.audit.batch import AuditTicket, AuditWriter
from dicom_node.services.audit.record import record_audit_event

# sequence keyword -> the keys of its one query item (None: zero-length sequence)
SequenceKeys = Mapping[str, Mapping[str, str | None] | None]
_IN_CHUNK = 500  # entity keys per IN (...) when reading sequence items


@dataclass(frozen=True)
class QueryResult:
    # one mapping per matching entity: keyword -> indexed value (None if unknown);
    # a sequence key's value is a list of items (keyword -> value)
    matches: list[dict[str, Any]]
    # more entities matched than the cap allowed; ``matches`` holds the first ones
    truncated: bool = False
    # keys this node does not index: answered without a value (PS3.4 status FF01)
    unsupported: list[str] = field(default_factory=list)


def find_entities(
    session: Session,
    *,
    level: Level,
    keys: Mapping[str, str | None],
    limit: int,
    sequences: SequenceKeys | None = None,
    max_list_values: int | None = None,
) -> QueryResult:
    """Match ``keys`` (keyword -> value as received; "" asks for the value)
    at ``level``. Raises InvalidQuery or UnsupportedQuery for keys it cannot
    honour (UnprocessableQuery for an integer out of range, or a key listing
    more than ``max_list_values`` values); unknown keywords are reported in
    ``unsupported``, not matched.

    ``sequences`` holds the item of each sequence key (its keyword is in ``keys``
    too, valued None). RequestAttributesSequence is matched (PS3.4 C.2.2.2.6) and
    answered with the stored items that match; a sequence the index does not hold
    is an optional key it cannot match: ignored and reported in ``unsupported``
    (PS3.4 C.4.1.1.4 status FF01), never guessed."""
    parsed: dict[str, Match] = {}
    parsed_sequences: dict[str, SequenceMatch] = {}
    unsupported: list[str] = []
    for keyword, raw in keys.items():
        sequence = SEQUENCES.get(keyword)
        if sequence is not None:
            item = (sequences or {}).get(keyword) or {}
            parsed_sequences[keyword] = _sequence_match(
                sequence, item, unsupported, max_list_values
            )
            continue
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None:
            unsupported.append(keyword)
            continue
        # the VR comes from the dictionary, not from what the peer encoded
        parsed[keyword] = parse_match(
            dictionary_VR(keyword), raw, keyword=keyword, max_values=max_list_values
        )
    statement = compile_query(
        level,
        parsed,
        limit=limit + 1,
        sequences=parsed_sequences,
        with_entity_key=bool(parsed_sequences),
        only_held=True,
    )
    # a Core SELECT of labelled columns: on the session's connection it skips the
    # ORM's per-execution layer (measured ~0.1-0.2 ms of a one-answer C-FIND's
    # ~1.1 ms of SQL); same transaction, same rows
    result = session.connection().execute(statement)
    rows = [dict(row) for row in result.mappings().all()]
    matches = rows[:limit]
    if parsed_sequences:
        _answer_sequences(session, level, matches, parsed_sequences)
    return QueryResult(matches=matches, truncated=len(rows) > limit, unsupported=unsupported)


def _sequence_match(
    sequence: SequenceAttribute,
    item: Mapping[str, str | None],
    unsupported: list[str],
    max_list_values: int | None,
) -> SequenceMatch:
    matches: dict[str, Match] = {}
    for keyword, raw in item.items():
        if keyword in sequence.fields:
            vr = sequence.fields[keyword][1]
            matches[keyword] = parse_match(
                vr, raw, keyword=f"{sequence.keyword}>{keyword}", max_values=max_list_values
            )
        else:
            unsupported.append(f"{sequence.keyword}>{keyword}")
            matches[keyword] = Universal()  # answered empty, never matched
    if not matches:  # zero-length sequence or empty item: universal, every field back
        matches = {keyword: Universal() for keyword in sequence.fields}
    return SequenceMatch(matches)


def _answer_sequences(
    session: Session,
    level: Level,
    matches: list[dict[str, Any]],
    sequences: Mapping[str, SequenceMatch],
) -> None:
    """Each match's sequence keys: the stored items that match the query item
    (the SQL found the entity; this picks its items), requested keys only.
    Items are checked with ``value_matches``, whose wildcard matching is linear
    (a peer's ``**...*Z`` cannot stall the worker, as a regular expression did)."""
    stored: dict[int, list[dict[str, Any]]] = defaultdict(list)
    pks = [int(row[ENTITY_KEY]) for row in matches]
    for start in range(0, len(pks), _IN_CHUNK):
        for pk, text in session.execute(sequence_items(level, pks[start : start + _IN_CHUNK])):
            items = json.loads(text) if text else None
            if isinstance(items, list):
                stored[pk].extend(item for item in items if isinstance(item, dict))
    for row in matches:
        pk = int(row.pop(ENTITY_KEY))
        for keyword, sequence_match in sequences.items():
            row[keyword] = _matching_items(SEQUENCES[keyword], sequence_match, stored[pk])


def _matching_items(
    sequence: SequenceAttribute, match: SequenceMatch, stored: list[dict[str, Any]]
) -> list[dict[str, str | None]]:
    answer: list[dict[str, str | None]] = []
    for item in stored:
        values: dict[str, str | None] = {}
        for keyword, item_match in match.items.items():
            field_key, vr = sequence.fields.get(keyword, (None, None))
            value = item.get(field_key) if field_key else None
            text = None if value is None else str(value)
            # the same rules as the SQL: PN by the one PN rule, the rest as C-FIND
            matches = person_name_matches if vr == "PN" else value_matches
            if not matches(item_match, text):
                break
            values[keyword] = None if value is None else str(value)
        else:
            if values not in answer:  # the same order on every instance of a study
                answer.append(values)
    return answer


@dataclass(frozen=True)
class AuditedQuery:
    result: QueryResult
    # the Query audit event, committing meanwhile: wait() before answering
    audit: AuditTicket


def query_index(
    db: Database,
    *,
    level: Level,
    keys: Mapping[str, str | None],
    limit: int,
    actor: str,
    audit: AuditWriter,
    source_address: str | None = None,
    sequences: SequenceKeys | None = None,
    max_list_values: int | None = None,
) -> AuditedQuery:
    """``find_entities`` in its own read transaction, then the Query audit event
    (PS3.15 A.5.3.11: the query is recorded, never the results), handed to
    ``audit`` (group commit, see services/audit/batch.py): the caller answers
    nothing before ``AuditedQuery.audit.wait()`` has returned. A refused or
    failed query is audited too (its commit waited for here), then re-raised
    for the caller to answer."""
    record = functools.partial(
        query_record,
        level=level.value,
        keys={**keys, **_flattened(sequences)},
        actor=actor,
        source_address=source_address,
    )
    try:
        with db.read() as session:
            result = find_entities(
                session,
                level=level,
                keys=keys,
                limit=limit,
                sequences=sequences,
                max_list_values=max_list_values,
            )
    except (InvalidQuery, UnsupportedQuery) as exc:
        audit.submit(record(failure=str(exc))).wait()
        raise
    except BaseException:
        audit.submit(record(failure="query failed")).wait()
        raise
    return AuditedQuery(result, audit.submit(record()))


def query_record(
    *,
    level: str | None,
    keys: Mapping[str, str | None],
    actor: Actor | str,
    source_address: str | None,
    failure: str | None = None,
) -> AuditRecord:
    """110112 Query: the keys asked (never the results); ``failure`` if refused.
    ``actor``: a DICOM peer's calling AE title (recorded as the peer at
    ``source_address``), or an Actor as built, with its own address (a
    signed-in user's, ``user_actor``: the HTTP front end asking the same
    service); ``level``: the Query/Retrieve level (or ``WORKLIST``), ``None``
    when refused before it was known."""
    return query_event(
        "query",
        actor if isinstance(actor, Actor) else Actor.peer(actor, source_address),
        TargetKind(level) if level is not None else None,
        outcome=AuditOutcome.MINOR_FAILURE if failure else AuditOutcome.SUCCESS,
        reason=failure,
        details={"keys": audited_keys(keys), "level": level},
    )


def record_query(
    db: Database,
    *,
    level: str | None,
    keys: Mapping[str, str | None],
    actor: Actor | str,
    source_address: str | None,
    failure: str | None = None,
) -> None:
    """The Query event (``query_record``) in a transaction of its own.

    Committed before the first match is answered, without waiting for the disk
    flush (that wait was 6-9 ms of every C-FIND on SQLite): a power cut may
    lose the last query records (a crash of the node does not), and nothing else."""
    with db.unit_of_work(wait_for_disk=False) as session:
        record_audit_event(
            session,
            query_record(
                level=level, keys=keys, actor=actor, source_address=source_address, failure=failure
            ),
        )


# A peer's identifier may be as large as max_dataset_bytes: the audit trail keeps
# the keys asked, bounded, so one query cannot write megabytes into it. 64 Ki
# characters hold a full 1,000-UID list (max_query_list_values' default).
AUDITED_VALUE_CHARS = 65_536
AUDITED_KEYS = 256


def audited_keys(keys: Mapping[str, str | None]) -> dict[str, str]:
    """The non-empty keys of a query or retrieve as the audit trail records
    them: at most AUDITED_KEYS keys, each value cut at AUDITED_VALUE_CHARS with
    its full length said (the node refuses such a query anyway)."""
    recorded: dict[str, str] = {}
    given = [(keyword, value) for keyword, value in keys.items() if value]
    for keyword, value in given[:AUDITED_KEYS]:
        if len(value) > AUDITED_VALUE_CHARS:
            value = f"{value[:AUDITED_VALUE_CHARS]}... ({len(value)} characters)"
        recorded[keyword] = value
    if len(given) > AUDITED_KEYS:
        recorded["..."] = f"{len(given) - AUDITED_KEYS} more keys"
    return recorded


def _flattened(sequences: SequenceKeys | None) -> dict[str, str | None]:
    """Sequence item keys as ``Sequence>Key`` for the audit record."""
    return {
        f"{keyword}>{item_keyword}": value
        for keyword, item in (sequences or {}).items()
        for item_keyword, value in (item or {}).items()
    }
