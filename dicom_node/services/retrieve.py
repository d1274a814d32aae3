"""What a C-MOVE or C-GET asks for: the stored instances its unique keys name.

Retrieval identifiers carry unique keys only (PS3.4 C.4.2.2.1): PatientID,
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID (UIDs may be lists). The
list is read in one transaction that ends before any instance is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance
from dicom_node.db.query import compile_query
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.query import (
    LEVEL_ORDER,
    InvalidQuery,
    Level,
    Match,
    Universal,
    Wildcard,
    parse_match,
)
from dicom_node.services.audit import record_audit_event

# the unique key each level needs, and its VR
UNIQUE_KEYS = {
    Level.PATIENT: ("PatientID", "LO"),
    Level.STUDY: ("StudyInstanceUID", "UI"),
    Level.SERIES: ("SeriesInstanceUID", "UI"),
    Level.IMAGE: ("SOPInstanceUID", "UI"),
}


@dataclass(frozen=True, slots=True)
class RetrieveItem:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str  # relative to the store


def instances_to_retrieve(
    db: Database, *, level: Level, keys: Mapping[str, str | None]
) -> list[RetrieveItem]:
    """Raises InvalidQuery when the identifier lacks the level's unique key or
    puts a wildcard in one. Other keys (not unique keys of this level or above)
    are ignored: PS3.4 leaves them out of a retrieve, and guessing from them could
    send more or less than asked."""
    parsed: dict[str, Match] = {}
    depth = LEVEL_ORDER.index(level)
    allowed = dict(UNIQUE_KEYS[upper] for upper in LEVEL_ORDER[: depth + 1])
    allowed["IssuerOfPatientID"] = "LO"  # narrows a PatientID shared by two issuers
    for keyword, raw in keys.items():
        if keyword not in allowed:
            continue  # not a unique key: PS3.4 says it is not there; ignore, never match
        match = parse_match(allowed[keyword], raw, keyword=keyword)
        if isinstance(match, Wildcard):
            raise InvalidQuery(f"{keyword}: no wildcards in a retrieve")
        if not isinstance(match, Universal):
            parsed[keyword] = match
    required = UNIQUE_KEYS[level][0]
    if required not in parsed:
        raise InvalidQuery(f"a {level} retrieve needs {required}")
    columns = cast(
        list[ColumnElement[Any]],
        [
            DicomInstance.sop_instance_uid,
            DicomInstance.sop_class_uid,
            DicomInstance.transfer_syntax_uid,
            DicomInstance.file_path,
        ],
    )
    statement = compile_query(Level.IMAGE, parsed, limit=None).with_only_columns(*columns)
    with db.read() as session:
        rows = session.execute(statement).all()
    return [RetrieveItem(*row) for row in rows]


def record_export(
    db: Database,
    *,
    actor: str,
    source_address: str,
    destination: str,
    level: Level | None,
    keys: Mapping[str, str | None],
    counts: Mapping[str, int],
    failed: list[str],
    refused: str | None = None,
) -> None:
    """110106 Export: who took which instances where (C-MOVE and C-GET); a
    refused retrieve (``refused`` says why) is recorded too."""
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            AuditRecord(
                event_code=AuditEventCode.EXPORT,
                action="instances_exported",
                outcome=AuditOutcome.MINOR_FAILURE if failed or refused else AuditOutcome.SUCCESS,
                actor=actor,
                source_address=source_address,
                target_class=level.value if level is not None else None,
                reason=refused,
                study_instance_uid=keys.get("StudyInstanceUID") or None,
                details={
                    "destination": destination,
                    "keys": {k: v for k, v in keys.items() if v},
                    "counts": dict(counts),
                    "failed_sop_instance_uids": failed[:100],
                },
            ),
        )
