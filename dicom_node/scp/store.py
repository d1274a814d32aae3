"""C-STORE: received bytes -> one ``store_instance`` call -> a PS3.4 status.

The dataset is never decoded here: the file written is the preamble, our file
meta and the dataset bytes exactly as the modality sent them.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event

from dicom_node.db.engine import Database
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.enums import AuditOutcome
from dicom_node.metrics import observe_store
from dicom_node.scp import status
from dicom_node.services.audit import record_audit_event
from dicom_node.services.ingest import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    store_instance,
)
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

_STATUS = {
    StoreOutcome.STORED: status.SUCCESS,
    StoreOutcome.DUPLICATE: status.SUCCESS,
    StoreOutcome.KEPT_EXISTING: status.SUCCESS,
    StoreOutcome.REPLACED: status.SUCCESS,
    StoreOutcome.MISMATCH: status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    StoreOutcome.REJECTED: status.CANNOT_UNDERSTAND,
    StoreOutcome.FAILED: status.OUT_OF_RESOURCES,
}
_MAX_STUDIES_IN_AUDIT = 100


@dataclass
class _Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)


class StoreHandler:
    """Per-node C-STORE state: the counts of each open association, for its audit."""

    def __init__(self, db: Database, store: FileStore, policy: IngestPolicy) -> None:
        self._db = db
        self._store = store
        self._policy = policy
        self._tallies: dict[Association, _Tally] = {}
        self._lock = threading.Lock()

    def handle_store(self, event: Event) -> Dataset:
        assoc = event.assoc
        calling = assoc.requestor.ae_title
        request = cast(C_STORE, event.request)
        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling
        try:
            result = store_instance(
                self._db,
                self._store,
                part10=_part10(meta, event.encoded_dataset(include_meta=False)),
                source=Source(
                    calling_ae_title=calling,
                    address=f"{assoc.requestor.address}:{assoc.requestor.port}",
                ),
                policy=self._policy,
                expected_sop_class_uid=str(request.AffectedSOPClassUID),
                expected_sop_instance_uid=str(request.AffectedSOPInstanceUID),
            )
        except Exception:
            observe_store("error")  # pynetdicom answers 0xC211 for a handler that raised
            raise
        observe_store(result.outcome.value)
        self._count(assoc, result)
        return _status_dataset(result)

    def _count(self, assoc: Association, result: StoreResult) -> None:
        with self._lock:
            tally = self._tallies.setdefault(assoc, _Tally())
        tally.outcomes[result.outcome.value] += 1
        if result.study_instance_uid and result.outcome is not StoreOutcome.REJECTED:
            tally.studies.add(result.study_instance_uid)
        if result.patient_id:
            tally.patients.add(result.patient_id)

    def handle_closed(self, event: Event) -> None:
        """One Instances Transferred audit event per association that sent anything."""
        with self._lock:
            tally = self._tallies.pop(event.assoc, None)
        if tally is None:
            return
        requestor = event.assoc.requestor
        refused = sum(
            tally.outcomes[o.value]
            for o in (StoreOutcome.REJECTED, StoreOutcome.MISMATCH, StoreOutcome.FAILED)
        )
        log.info(
            "association from %s closed: %s",
            requestor.ae_title,
            ", ".join(f"{count} {name}" for name, count in sorted(tally.outcomes.items())),
        )
        studies = sorted(tally.studies)
        try:
            with self._db.unit_of_work() as session:
                record_audit_event(
                    session,
                    AuditRecord(
                        event_code=AuditEventCode.INSTANCES_TRANSFERRED,
                        action="instances_received",
                        outcome=AuditOutcome.MINOR_FAILURE if refused else AuditOutcome.SUCCESS,
                        actor=requestor.ae_title,
                        source_address=f"{requestor.address}:{requestor.port}",
                        target_class="DicomStudy",
                        study_instance_uid=studies[0] if len(studies) == 1 else None,
                        patient_id=next(iter(tally.patients)) if len(tally.patients) == 1 else None,
                        details={
                            "counts": dict(tally.outcomes),
                            "studies": studies[:_MAX_STUDIES_IN_AUDIT],
                            "study_count": len(studies),
                        },
                    ),
                )
        except Exception:
            # The instances are stored and indexed already; only this summary is lost.
            log.exception("could not write the transfer audit event")


def _part10(meta: FileMetaDataset, dataset: bytes) -> bytes:
    return b"".join((b"\x00" * 128, b"DICM", encode_file_meta(meta), dataset))


def _status_dataset(result: StoreResult) -> Dataset:
    response = Dataset()
    response.Status = _STATUS[result.outcome]
    if result.outcome not in (StoreOutcome.STORED, StoreOutcome.DUPLICATE) and result.reason:
        response.ErrorComment = result.reason[: status.ERROR_COMMENT_MAX]
    return response
