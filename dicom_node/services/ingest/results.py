"""What storing an instance answers: its outcome, and who sent it under which policy.

Shared by the steps of the ingest path (instances.py prepares, indexing.py
indexes, index_writer.py commits) and by their callers (scp/store.py, import).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.dataset_header import InstanceHeader
from dicom_node.domain.inflate import DEFAULT_MAX_DATASET_BYTES
from dicom_node.log_limit import LogLimiter

log = logging.getLogger("dicom_node.ingest")
# Lines logged per instance go through this: a modality resending a study into a
# full disk writes one line per kind every 10 s, with a count, not one per
# instance. Keys name the kind (and the peer, where the line names it), never
# patient data or UIDs; they include the store, so that two nodes in one process
# (tests, embedding) do not hold back each other's first line.
per_instance_log = LogLimiter(log)


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same UID, same content: nothing to do
    KEPT_EXISTING = "kept_existing"  # same UID, other content, policy keep
    REPLACED = "replaced"  # same UID, other content, policy replace
    MISMATCH = "mismatch"  # the dataset contradicts the command that carried it
    REJECTED = "rejected"  # the data cannot be indexed (the sender's fault)
    TOO_LARGE = "too_large"  # over max_dataset_bytes, as sent or inflated: never kept
    FAILED = "failed"  # we could not store it (disk, database): worth a retry


@dataclass(frozen=True, slots=True)
class Source:
    """Where an instance came from, for the index and the audit trail."""

    calling_ae_title: str | None = None
    address: str | None = None
    # who acts when no peer sent it: the CLI's import or reindex; the workflow
    # steps an arrival sets off (matching, an exam started) are the receiver's
    actor: SystemActor = SystemActor.DICOM
    # a signed-in user or service account who sent it (STOW-RS)
    user: Actor | None = None

    def audit_actor(self) -> Actor:
        """The actor of the events this instance's own arrival writes: the
        user who sent it, the sending peer, or the node for files read from disk."""
        if self.user is not None:
            return self.user
        if self.calling_ae_title:
            return Actor.peer(self.calling_ae_title, self.address)
        return Actor.system(self.actor)


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: StoreOutcome
    reason: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    new_study: bool = False


@dataclass(frozen=True)
class IngestPolicy:
    duplicate_policy: str = "keep"  # "keep" | "replace"
    # the largest data set taken, as sent and once inflated (settings.max_dataset_bytes)
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES


def result_for(
    outcome: StoreOutcome, reason: str | None, header: InstanceHeader, *, new_study: bool = False
) -> StoreResult:
    return StoreResult(
        outcome,
        reason,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_instance_uid,
        patient_id=header.patient_id,
        accession_number=header.accession_number,
        new_study=new_study,
    )


def failure_reason(exc: Exception) -> str:
    """What stopped an instance from being stored, for the log and the ErrorComment:
    a full disk (the store's, or SQLite's own file) asks for the operator, not for
    patience, so it is named as such."""
    orig = getattr(exc, "orig", None)
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(orig, sqlite3.Error) and orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    ):
        return "disk full"
    return "database unavailable" if isinstance(exc, SQLAlchemyError) else "storage unavailable"


def short_error(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
