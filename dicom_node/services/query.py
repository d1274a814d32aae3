"""Finding studies, series, instances and patients by C-FIND matching keys.

One service behind the C-FIND SCP and the HTTP study search. It reads
everything it returns before returning: a caller streams the answers with no
session open (a slow peer must not hold a database connection or lock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.query import ATTRIBUTES, compile_query
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.query import InvalidQuery, Level, Match, UnsupportedQuery, parse_match
from dicom_node.services.audit import record_audit_event


@dataclass(frozen=True)
class QueryResult:
    # one mapping per matching entity: keyword -> indexed value (None if unknown)
    matches: list[dict[str, Any]]
    # more entities matched than the cap allowed; ``matches`` holds the first ones
    truncated: bool = False
    # keys this node does not index: answered without a value (PS3.4 status FF01)
    unsupported: list[str] = field(default_factory=list)


def find_entities(
    session: Session, *, level: Level, keys: Mapping[str, str | None], limit: int
) -> QueryResult:
    """Match ``keys`` (keyword -> value as received; "" asks for the value)
    at ``level``. Raises InvalidQuery or UnsupportedQuery for keys it cannot
    honour; unknown keywords are reported in ``unsupported``, not matched."""
    parsed: dict[str, Match] = {}
    unsupported: list[str] = []
    for keyword, raw in keys.items():
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None:
            unsupported.append(keyword)
            continue
        # the VR comes from the dictionary, not from what the peer encoded
        parsed[keyword] = parse_match(dictionary_VR(keyword), raw, keyword=keyword)
    rows = session.execute(compile_query(level, parsed, limit=limit + 1)).mappings().all()
    return QueryResult(
        matches=[dict(row) for row in rows[:limit]],
        truncated=len(rows) > limit,
        unsupported=unsupported,
    )


def query_index(
    db: Database,
    *,
    level: Level,
    keys: Mapping[str, str | None],
    limit: int,
    actor: str,
    source_address: str | None = None,
) -> QueryResult:
    """``find_entities`` in its own read transaction, then the Query audit event
    (PS3.15 A.5.3.11: the query is recorded, never the results). A refused or
    failed query is audited too, then re-raised for the caller to answer."""
    failure: str | None = "query failed"
    try:
        with db.read() as session:
            result = find_entities(session, level=level, keys=keys, limit=limit)
        failure = None
    except (InvalidQuery, UnsupportedQuery) as exc:
        failure = str(exc)
        raise
    finally:
        record_query(
            db,
            level=level.value,
            keys=keys,
            actor=actor,
            source_address=source_address,
            failure=failure,
        )
    return result


def record_query(
    db: Database,
    *,
    level: str | None,
    keys: Mapping[str, str | None],
    actor: str,
    source_address: str | None,
    failure: str | None = None,
) -> None:
    """110112 Query: the keys asked (never the results); ``failure`` if refused."""
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.QUERY,
                action="query",
                outcome=AuditOutcome.MINOR_FAILURE if failure else AuditOutcome.SUCCESS,
                actor=actor,
                source_address=source_address,
                target_class=level,
                reason=failure,
                details={"keys": {k: v for k, v in keys.items() if v}, "level": level},
            ),
        )
