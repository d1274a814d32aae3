"""STOW-RS (PS3.18 10.5): the parts of a request through the one ingest path,
and the Store Instances Response Module that answers it.

Each ``application/dicom`` part arrives as a temp file in the store's tmp/
(multipart_reader.py), the Part 10 file as the client sent it. It goes to
``store_instance`` exactly as a C-STORE's received data set does
(``received=True``: synced and renamed into place, never copied), so
durability, the duplicate policy, order matching, completeness and every
refusal of hostile input are those of C-STORE; the file kept is byte for byte
the part. What C-STORE answers with a status, STOW-RS answers per instance in
the response data set, with the same code as FailureReason (0008,1197).

The parts are stored once the whole body has been read and found well formed:
a request refused as malformed or too large (400, 413) has stored nothing.

The user is the sender: the per-instance events of the ingest path (a resend
with other content, a study reopened, an order matched) name them, and the
request makes one 110104 Instances Transferred with the counts, as an
association does.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, Subject, TargetKind, transfer_event
from dicom_node.domain.dataset_header import InstanceHeader, read_header
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.dicomweb.multipart_reader import MalformedMultipart, Part, parse_media_type
from dicom_node.services.ingest.instances import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    refused_too_large,
    store_instance,
)
from dicom_node.services.ingest.results import per_instance_log
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.dicomweb")

DICOM_MEDIA_TYPE = "application/dicom"
# A part is written to disk up to max_dataset_bytes plus this much for its
# preamble and file meta; store_instance measures the data set itself exactly.
FILE_META_ALLOWANCE = 1024 * 1024
# Parts per request: each is a temp file and a row in the response; a viewer
# uploads a series or a study, far below this.
MAX_PARTS = 10_000
_MAX_STUDIES_IN_AUDIT = 100


class FailureReason(IntEnum):
    """FailureReason (0008,1197) values of PS3.18 10.5.3 (the C-STORE statuses
    of PS3.4 B.2.3, as scp/store.py answers them)."""

    PROCESSING_FAILURE = 0x0110
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


# as scp/store.py's _STATUS: a failure is the same code over either protocol
_FAILURE = {
    StoreOutcome.MISMATCH: FailureReason.DATASET_DOES_NOT_MATCH,
    StoreOutcome.REJECTED: FailureReason.CANNOT_UNDERSTAND,
    StoreOutcome.TOO_LARGE: FailureReason.OUT_OF_RESOURCES,
    StoreOutcome.FAILED: FailureReason.OUT_OF_RESOURCES,
}
WRONG_STUDY = "wrong_study"  # a count of the audit event beside StoreOutcome's
NOT_DICOM = "not_application_dicom"


@dataclass(frozen=True, slots=True)
class InstanceAnswer:
    """One part's line in the response: stored (failure None) or failed."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    failure: FailureReason | None
    outcome: str  # a StoreOutcome value, WRONG_STUDY or NOT_DICOM
    patient_id: str | None = None  # for the audit event's subject


@dataclass
class StowResult:
    answers: list[InstanceAnswer] = field(default_factory=list)

    @property
    def stored(self) -> list[InstanceAnswer]:
        return [a for a in self.answers if a.failure is None]

    @property
    def failed(self) -> list[InstanceAnswer]:
        return [a for a in self.answers if a.failure is not None]

    def http_status(self) -> int:
        """PS3.18 10.5.3 Table 10.5.3-1: 200 all stored, 202 some failed, 409
        none stored (the request was understood, every instance refused)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def store_parts(
    db: Database,
    store: FileStore,
    parts: list[Part],
    *,
    principal: Principal,
    source_address: str | None,
    policy: IngestPolicy,
    study_instance_uid: str | None,
) -> StowResult:
    """Store each part (in order) through ``store_instance``; then one 110104 for
    the request. Every part's temp file is consumed (renamed or removed). A part
    whose storing raises (a database error...) ends the request (500): the
    110104 is still written, a serious failure with the counts so far, so the
    instances already stored are not left unaudited."""
    actor = user_actor(principal, source_address)
    source = Source(address=source_address, user=actor)
    result = StowResult()
    try:
        for part in parts:
            result.answers.append(_store_part(db, store, part, source, policy, study_instance_uid))
    except Exception as exc:
        reason = (
            f"request ended by an error after {len(result.answers)} of {len(parts)} "
            f"part(s): {type(exc).__name__}"
        )
        try:
            record_stow(db, actor, result, reason=reason)
        except Exception:
            log.exception("could not write the STOW-RS transfer audit event")
        raise
    finally:
        for part in parts:
            if part.path is not None:
                part.path.unlink(missing_ok=True)  # a stored one was renamed away
    try:
        record_stow(db, actor, result)
    except Exception:
        # The instances are stored and indexed already; only this summary is lost
        # (as for an association's, scp/store.py), and the client gets its answer.
        log.exception("could not write the STOW-RS transfer audit event")
    return result


def record_stow(
    db: Database, actor: Actor, result: StowResult, *, reason: str | None = None
) -> None:
    """The request's one 110104 Instances Transferred (counts per outcome, the
    studies), also for a request refused whole or ended by an error (``reason``:
    a serious failure; the counts are of the parts handled before it)."""
    counts = Counter(a.outcome for a in result.answers)
    studies = sorted({a.study_instance_uid for a in result.stored if a.study_instance_uid})
    patients = {a.patient_id for a in result.stored if a.patient_id}
    if reason is not None:
        outcome = AuditOutcome.SERIOUS_FAILURE
    elif result.failed:
        outcome = AuditOutcome.MINOR_FAILURE
    else:
        outcome = AuditOutcome.SUCCESS
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            transfer_event(
                "instances_stored",
                actor,
                TargetKind.STUDY,
                None,
                # the one study and patient sent, if one (as for an association)
                Subject(
                    patient_id=next(iter(patients)) if len(patients) == 1 else None,
                    study_instance_uid=studies[0] if len(studies) == 1 else None,
                ),
                outcome=outcome,
                reason=reason,
                details={
                    "protocol": "STOW-RS",
                    "counts": dict(counts),
                    "studies": studies[:_MAX_STUDIES_IN_AUDIT],
                    "study_count": len(studies),
                },
            ),
        )


def _store_part(
    db: Database,
    store: FileStore,
    part: Part,
    source: Source,
    policy: IngestPolicy,
    study_instance_uid: str | None,
) -> InstanceAnswer:
    if part.content_type is not None and _media_type(part.content_type) != DICOM_MEDIA_TYPE:
        per_instance_log.warning(
            (store.root, "stow refused", "not dicom"),
            "STOW-RS part refused: not %s",
            DICOM_MEDIA_TYPE,
        )
        return InstanceAnswer(None, None, None, None, FailureReason.CANNOT_UNDERSTAND, NOT_DICOM)
    if part.path is None:
        too_large = DatasetTooLarge(policy.max_dataset_bytes, part.size)
        return _answer(refused_too_large(store, source, too_large), None)
    header = _peek(store, part.path, policy)
    if (
        study_instance_uid is not None
        and header is not None
        and header.study_instance_uid != study_instance_uid
    ):
        # PS3.18 10.5.1: an instance of another study than the URL's is not stored
        per_instance_log.warning(
            (store.root, "stow refused", "wrong study"),
            "STOW-RS instance refused: not of the study in the request URL",
        )
        return InstanceAnswer(
            header.sop_class_uid,
            header.sop_instance_uid,
            header.study_instance_uid,
            header.series_instance_uid,
            FailureReason.DATASET_DOES_NOT_MATCH,
            WRONG_STUDY,
        )
    stored = store_instance(
        db, store, part10=part.path, received=True, source=source, policy=policy
    )
    return _answer(stored, header)


def _media_type(value: str) -> str | None:
    try:
        return parse_media_type(value)[0]
    except MalformedMultipart:
        return None


def _peek(store: FileStore, path: Path, policy: IngestPolicy) -> InstanceHeader | None:
    """The part's header, for its UIDs in the answer and the study check; None
    where it cannot be read (store_instance then refuses it, and logs why)."""
    try:
        return read_header(path, max_dataset_bytes=policy.max_dataset_bytes, scratch_dir=store.tmp)
    except Exception:  # whatever it is, store_instance answers it as C-STORE would
        return None


def _answer(result: StoreResult, header: InstanceHeader | None) -> InstanceAnswer:
    return InstanceAnswer(
        header.sop_class_uid if header else None,
        result.sop_instance_uid or (header.sop_instance_uid if header else None),
        result.study_instance_uid or (header.study_instance_uid if header else None),
        header.series_instance_uid if header else None,
        _FAILURE.get(result.outcome),
        result.outcome.value,
        result.patient_id,
    )


# ---------------------------------------------------------------- response


def response_dataset(
    result: StowResult, base_url: str, study_instance_uid: str | None
) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-2) in the DICOM
    JSON model. ``base_url``: the service root, ``.../dicomweb``."""
    stored_studies = {a.study_instance_uid for a in result.stored if a.study_instance_uid}
    study = study_instance_uid or (next(iter(stored_studies)) if len(stored_studies) == 1 else None)
    body: dict[str, Any] = {
        # Type 2: the study's URL when the request names one study (or stored one)
        "00081190": _value("UR", f"{base_url}/studies/{study}" if study else None),
    }
    if result.stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _value("UI", a.sop_class_uid),
                    "00081155": _value("UI", a.sop_instance_uid),
                    "00081190": _value(
                        "UR",
                        f"{base_url}/studies/{a.study_instance_uid}/series/"
                        f"{a.series_instance_uid}/instances/{a.sop_instance_uid}",
                    ),
                }
                for a in result.stored
            ],
        }
    if result.failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _value("UI", a.sop_class_uid),
                    "00081155": _value("UI", a.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [int(a.failure or 0)]},
                }
                for a in result.failed
            ],
        }
    return body


def _value(vr: str, value: str | None) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value else {"vr": vr}
