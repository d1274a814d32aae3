"""C-STORE: received bytes -> one ``store_instance`` call -> a PS3.4 status.

Every association of the process hands its instances to one index writer
(services/ingest/index_writer.py: group commit), owned by the handler and
drained by ``close`` at shutdown.

The dataset is never decoded here: the file written is the preamble, our file
meta and the dataset bytes exactly as the modality sent them, written to a temp
file in the store as they arrive (scp/dataset_limit.py). A data set over
``max_dataset_bytes`` is answered 0xA700 and nothing of it is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, Subject, TargetKind, transfer_event
from dicom_node.domain.enums import AuditOutcome
from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.metrics import observe_ingest_stage, observe_store
from dicom_node.scp import file_meta, status
from dicom_node.scp.dataset_limit import bound_messages, claim_received, discard_unclaimed
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.ingest.index_writer import DEFAULT_MAX_BATCH, IndexWriter
from dicom_node.services.ingest.instances import (
    IngestPolicy,
    Source,
    StoreOutcome,
    StoreResult,
    failed_to_write,
    refused_too_large,
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
    # PS3.4 B.2.3 "Refused: Out of Resources": a failure, so the sender moves on
    StoreOutcome.TOO_LARGE: status.OUT_OF_RESOURCES,
    StoreOutcome.FAILED: status.OUT_OF_RESOURCES,
}
_REFUSED = (
    StoreOutcome.REJECTED,
    StoreOutcome.MISMATCH,
    StoreOutcome.FAILED,
    StoreOutcome.TOO_LARGE,
)
_MAX_STUDIES_IN_AUDIT = 100


@dataclass
class _Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)


class StoreHandler:
    """Per-node C-STORE state: the counts of each open association, for its audit."""

    def __init__(
        self,
        db: Database,
        store: FileStore,
        policy: IngestPolicy,
        *,
        batch_max_instances: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._db = db
        self._store = store
        self._policy = policy
        self._writer = IndexWriter(db, max_batch=batch_max_instances)
        self._tallies: dict[Association, _Tally] = {}
        self._lock = threading.Lock()

    def handle_connection_opened(self, event: Event) -> None:
        """EVT_CONN_OPEN: data sets are written as they arrive, within the limit."""
        bound_messages(
            event.assoc,
            limit=self._policy.max_dataset_bytes,
            scratch_dir=self._store.tmp,
            prefix=part10_prefix,
        )

    def handle_store(self, event: Event) -> Dataset:
        assoc = event.assoc
        request = cast(C_STORE, event.request)
        source = Source(
            calling_ae_title=assoc.requestor.ae_title,
            address=f"{assoc.requestor.address}:{assoc.requestor.port}",
        )
        received = claim_received(event)
        try:
            if received is None or received.path is None:
                # only if the connection-open hook was not bound: a wiring fault
                log.error("C-STORE data set not received: handle_connection_opened is not bound")
                result = StoreResult(StoreOutcome.FAILED, "data set not received")
            elif received.over_limit:
                too_large = DatasetTooLarge(received.limit, received.size)
                result = refused_too_large(self._store, source, too_large)
            elif received.error is not None:
                result = failed_to_write(self._store, source, received.error)
            else:
                result = store_instance(
                    self._db,
                    self._store,
                    part10=received.path,
                    received=True,
                    source=source,
                    policy=self._policy,
                    expected_sop_class_uid=str(request.AffectedSOPClassUID),
                    expected_sop_instance_uid=str(request.AffectedSOPInstanceUID),
                    writer=self._writer,
                )
        except Exception:
            observe_store("error")  # pynetdicom answers 0xC211 for a handler that raised
            raise
        finally:
            if received is not None:
                received.discard()  # a stored one was renamed away already
        started = time.perf_counter()
        observe_store(result.outcome.value)
        self._count(assoc, result)
        response = _status_dataset(result)
        observe_ingest_stage("respond", time.perf_counter() - started)
        return response

    def close(self) -> None:
        """At shutdown, once no association sends any more: commit what the
        index writer holds, then end its thread."""
        self._writer.close()

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
        discard_unclaimed(event.assoc)  # a data set whose association ended first
        with self._lock:
            tally = self._tallies.pop(event.assoc, None)
        if tally is None:
            return
        requestor = event.assoc.requestor
        refused = sum(tally.outcomes[o.value] for o in _REFUSED)
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
                    transfer_event(
                        "instances_received",
                        Actor.peer(requestor.ae_title, f"{requestor.address}:{requestor.port}"),
                        TargetKind.STUDY,
                        None,
                        # the one study and patient sent, if one
                        Subject(
                            patient_id=next(iter(tally.patients))
                            if len(tally.patients) == 1
                            else None,
                            study_instance_uid=studies[0] if len(studies) == 1 else None,
                        ),
                        outcome=AuditOutcome.MINOR_FAILURE if refused else AuditOutcome.SUCCESS,
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


def part10_prefix(assoc: Association, command_set: Dataset, transfer_syntax: str) -> bytes:
    """What the stored file holds before the data set as sent (PS3.10 7.1): the
    preamble, DICM and the node's file meta, plus the calling AE as Source
    Application Entity Title (scp/file_meta.py: encoded directly where it can
    be, pydicom's build cost ~0.6 ms per instance)."""
    return file_meta.part10_prefix(
        str(command_set.AffectedSOPClassUID),
        str(command_set.AffectedSOPInstanceUID),
        transfer_syntax,
        assoc.requestor.ae_title,
    )


def _status_dataset(result: StoreResult) -> Dataset:
    response = Dataset()
    response.Status = _STATUS[result.outcome]
    if result.outcome not in (StoreOutcome.STORED, StoreOutcome.DUPLICATE) and result.reason:
        response.ErrorComment = result.reason[: status.ERROR_COMMENT_MAX]
    return response
