"""What a C-MOVE or C-GET asks for: the stored instances its unique keys name.

Retrieval identifiers carry unique keys only (PS3.4 C.4.2.2.1): PatientID,
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID. Each is matched by single
value matching, and the key of the retrieve's own level below PATIENT by a list
of UIDs too; never by wildcards, ranges or universal matching (see
``retrieve_match``). The list is read in one transaction that ends before any
instance is sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement

from dicom_node.db.engine import Database
from dicom_node.db.held_syntaxes import held_syntaxes
from dicom_node.db.models import DicomInstance
from dicom_node.db.query import compile_query
from dicom_node.domain.audit import Actor, Subject, TargetKind, export_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.permissions import Principal
from dicom_node.domain.query import (
    LEVEL_ORDER,
    InvalidQuery,
    Level,
    Match,
    Single,
    UidList,
    check_value_count,
    parse_match,
)
from dicom_node.domain.transcode import Transcoder
from dicom_node.domain.vr import is_valid_uid
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.query.find import audited_keys

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
    db: Database,
    *,
    level: Level,
    keys: Mapping[str, str | None],
    max_list_values: int | None = None,
    max_instances: int | None = None,
) -> list[RetrieveItem]:
    """The instances the retrieve names, at most ``max_instances`` (None: all).
    Raises InvalidQuery when the identifier lacks the level's unique key or
    gives one a value a retrieve does not allow (``retrieve_match``), and
    UnprocessableQuery for a UID list longer than ``max_list_values``. Other keys
    (not unique keys of this level or above) are ignored: PS3.4 leaves them out
    of a retrieve, and guessing from them could send more or less than asked."""
    parsed: dict[str, Match] = {}
    depth = LEVEL_ORDER.index(level)
    allowed = dict(UNIQUE_KEYS[upper] for upper in LEVEL_ORDER[: depth + 1])
    allowed["IssuerOfPatientID"] = "LO"  # narrows a PatientID shared by two issuers
    own_key = UNIQUE_KEYS[level][0]
    for keyword, raw in keys.items():
        if keyword not in allowed:
            continue  # not a unique key: PS3.4 says it is not there; ignore, never match
        match = retrieve_match(
            allowed[keyword],
            raw,
            keyword=keyword,
            list_allowed=keyword == own_key and level is not Level.PATIENT,
            max_list_values=max_list_values,
        )
        if match is not None:
            parsed[keyword] = match
    if own_key not in parsed:
        raise InvalidQuery(f"a {level} retrieve needs {own_key}")
    columns = cast(
        list[ColumnElement[Any]],
        [
            DicomInstance.sop_instance_uid,
            DicomInstance.sop_class_uid,
            DicomInstance.transfer_syntax_uid,
            DicomInstance.file_path,
        ],
    )
    statement = compile_query(Level.IMAGE, parsed, limit=max_instances).with_only_columns(*columns)
    with db.read() as session:
        rows = session.execute(statement).all()
    return [RetrieveItem(*row) for row in rows]


def retrieve_match(
    vr: str,
    raw: str | None,
    *,
    keyword: str,
    list_allowed: bool,
    max_list_values: int | None = None,
) -> Single | UidList | None:
    """The match one unique key of a C-MOVE or C-GET asks for; None when it is
    absent or empty (then it selects nothing: the caller insists on the level's
    own key; an empty key above the level is what relational retrieve sends).

    PS3.4 C.4.2.2.1 (C-GET: C.4.3.2.1) allows single value matching on every
    unique key, and a list of UIDs on the key of the retrieve level for STUDY,
    SERIES and IMAGE; PatientID is always one value. So ``*`` and ``?`` are
    refused anywhere in a value (they are wildcards, never single values: PS3.4
    C.2.2.2.1), in every value of a list, and so is a list where one value is
    allowed (``NOPE\\?*`` once reached every patient's images through the
    C-FIND list rules). A UI value is checked as a UID, so no wildcard, range
    or list separator can hide in one.
    """
    value = (raw or "").strip(" \x00")
    if not value:
        return None
    if max_list_values is not None:
        check_value_count(keyword, value, max_list_values)
    if vr != "UI":
        if "*" in value or "?" in value:
            raise InvalidQuery(f"{keyword}: no wildcards in a retrieve")
        if "\\" in value:
            raise InvalidQuery(f"{keyword}: one value in a retrieve")
        return Single(value)
    match = parse_match(vr, value, keyword=keyword)  # every UID checked, lists split
    if isinstance(match, UidList) and not list_allowed:
        raise InvalidQuery(f"{keyword}: one UID here, not a list")
    if not isinstance(match, Single | UidList):
        raise InvalidQuery(f"{keyword}: a UID or a list of UIDs")  # unreachable for UI
    return match


@dataclass(frozen=True)
class ExportResult:
    """What became of a retrieve's sub-operations: ``counts`` (offered,
    completed, warning, failed, sent_as_stored, converted, transcoded, and
    cancelled when it was), and the failed instances with a reason each (the
    first ones: the caller bounds the list)."""

    counts: Mapping[str, int]
    failures: list[tuple[str, str]]


NOTHING_SENT = ExportResult(counts={}, failures=[])


def export_outcome(result: ExportResult, refused: str | None) -> AuditOutcome:
    """PS3.15 A.5.3 EventOutcomeIndicator of an Export: success only when
    nothing failed; a serious failure when nothing reached the destination of
    what was to go; a refused request (bad identifier, unknown destination)
    is a minor failure, like every refused request the node audits."""
    failed = result.counts.get("failed", 0)
    delivered = result.counts.get("completed", 0) + result.counts.get("warning", 0)
    if failed and not delivered:
        return AuditOutcome.SERIOUS_FAILURE
    if failed or refused:
        return AuditOutcome.MINOR_FAILURE
    return AuditOutcome.SUCCESS


def record_export(
    db: Database,
    *,
    actor: Actor,
    destination: str,
    level: Level | None,
    keys: Mapping[str, str | None],
    result: ExportResult = NOTHING_SENT,
    refused: str | None = None,
    target_id: int | None = None,
    subject: Subject | None = None,
    requested_by: str | None = None,
) -> None:
    """110106 Export: who (``actor``: the calling AE of a C-MOVE or C-GET, the
    signed-in user of a send from the API) took which instances where, what
    the destination answered for them and why the failed ones failed; a
    refused retrieve (``refused`` says why) is recorded too.

    ``target_id`` and ``subject``: the study, when the caller knows it (a send
    names it by id); otherwise the study UID of ``keys`` when it names one.
    ``requested_by``: set only when not a DICOM request (``"api"``)."""
    details: dict[str, Any] = {"destination": destination}
    if requested_by is not None:
        details["requested_by"] = requested_by
    details.update(
        {
            "keys": audited_keys(keys),
            "counts": dict(result.counts),
            "failed_instances": [
                {"sop_instance_uid": uid, "reason": reason} for uid, reason in result.failures
            ],
        }
    )
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            export_event(
                "instances_exported",
                actor,
                TargetKind(level.value) if level is not None else None,
                target_id,
                subject if subject is not None else Subject(study_instance_uid=_one_study(keys)),
                outcome=export_outcome(result, refused),
                reason=refused,
                details=details,
            ),
        )


def _one_study(keys: Mapping[str, str | None]) -> str | None:
    """The study the event is about: its UID when the retrieve named one. A UID
    list is in the details only (it does not fit the 64-character column: the
    whole Export event failed on PostgreSQL for a C-MOVE of two studies)."""
    value = (keys.get("StudyInstanceUID") or "").strip(" \x00")
    return value if value and is_valid_uid(value) else None


class HeldSyntaxes:
    """SOP class -> the transfer syntaxes the store holds it in, for the C-GET
    acceptor's choice of syntax (``scp/get_negotiation.py``): read from the
    ``held_syntaxes`` table (db/held_syntaxes.py), exact and uncached, in one
    query on its primary key per C-GET association."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def of(self, sop_classes: Collection[str]) -> dict[str, frozenset[str]]:
        with self._db.read() as session:
            return held_syntaxes(session, sop_classes)


# --------------------------------------------------------------------------- send
# A study sent to a configured peer on a person's request: the use case's
# vocabulary, implemented by ``scp/send.py`` (built by the composition root) and
# used by the API, which never imports ``scp/``.


@dataclass(frozen=True)
class SendResult:
    peer: str
    study_instance_uid: str
    instances: int
    result: ExportResult


class PeerUnavailable(Exception):
    """No association to the peer could be used: nothing was sent (``result``
    counts every instance failed)."""

    def __init__(self, peer: str, why: str, result: ExportResult) -> None:
        super().__init__(f"{peer}: {why}; nothing was sent")
        self.why = why
        self.result = result


class SendersBusy(Exception):
    """As many sends as the process allows (``max_concurrent_sends``) are
    running: this one was not started (nothing read, sent or audited)."""


class StudySending(Protocol):
    def send(
        self,
        db: Database,
        transcoder: Transcoder,
        *,
        study_id: int,
        peer_ae: str,
        principal: Principal,
        source_address: str | None,
    ) -> SendResult: ...
