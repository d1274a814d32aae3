"""Storage Commitment SCP, push model (PS3.4 J.3): N-ACTION answered at once,
the result sent later as an N-EVENT-REPORT on a new association to the
requester, which must be a known peer (``PEERS``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicom_node.db.engine import Database
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.vr import is_valid_uid
from dicom_node.scp import status
from dicom_node.scp.contexts import service_contexts
from dicom_node.scp.outgoing import PeerConnector
from dicom_node.services.ingest.commitment import (
    PROCESSING_FAILURE,
    CommitmentResult,
    Reference,
    check_commitment,
)
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

COMMITMENT_MODEL = str(StorageCommitmentPushModel)
# the well-known SOP Instance UID of the Storage Commitment Push Model (PS3.4 J.3.5)
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1  # Action Type ID
EVENT_SUCCESS, EVENT_FAILURES = 1, 2  # Event Type IDs of the report
REPORT_ATTEMPTS, REPORT_RETRY_SECONDS = 3, 2.0


class CommitmentHandler:
    def __init__(
        self,
        db: Database,
        store: FileStore,
        peers: dict[str, Peer],
        *,
        ae_title: str,
        sla: SlaPolicy,
        connector: PeerConnector,
    ) -> None:
        self._db = db
        self._store = store
        self._peers = peers
        self._ae_title = ae_title
        self._sla = sla
        self._connector = connector  # plain or TLS, as the peer's entry says

    def handle_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        requestor = event.assoc.requestor.ae_title
        request = cast(N_ACTION, event.request)
        if request.ActionTypeID != REQUEST_COMMITMENT:
            return _failure(0x0123, "no such action type")  # No such action
        peer = self._peers.get(requestor.strip())
        if peer is None:
            log.warning("storage commitment from unknown AE %s refused", requestor)
            return _failure(status.PROCESSING_FAILURE, "calling AE is not a known peer")
        try:
            info = event.action_information
            transaction = str(info.get("TransactionUID", "")).strip()
            references = [
                Reference(
                    str(item.ReferencedSOPClassUID).strip(),
                    str(item.ReferencedSOPInstanceUID).strip(),
                )
                for item in info.get("ReferencedSOPSequence", [])
            ]
        except Exception:
            return _failure(0x0106, "action information cannot be processed")
        if not is_valid_uid(transaction) or not references:
            return _failure(0x0120, "TransactionUID and ReferencedSOPSequence are required")
        # answered now, reported later (J.3.3): the check and the report run apart
        threading.Thread(
            target=self._commit_and_report,
            args=(peer, transaction, references),
            name="storage-commitment",
            daemon=True,
        ).start()
        return status.SUCCESS, None

    def _commit_and_report(self, peer: Peer, transaction: str, refs: list[Reference]) -> None:
        try:
            result = check_commitment(
                self._db,
                self._store,
                transaction_uid=transaction,
                references=refs,
                actor=peer.ae_title,
                sla=self._sla,
                now=datetime.now(UTC),
            )
        except Exception:
            # the modality must hear back either way: nothing could be confirmed
            log.exception("storage commitment %s could not be checked", transaction)
            result = CommitmentResult(transaction, failed=[(r, PROCESSING_FAILURE) for r in refs])
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                if self._report(peer, result):
                    log.info("storage commitment report delivered to %s", peer.ae_title)
                    return
            except Exception:
                log.exception("storage commitment report to %s failed", peer.ae_title)
            time.sleep(REPORT_RETRY_SECONDS * attempt)
        log.error(
            "storage commitment report %s to %s not delivered after %d attempts",
            transaction,
            peer.ae_title,
            REPORT_ATTEMPTS,
        )

    def _report(self, peer: Peer, result: CommitmentResult) -> bool:
        ae = AE(ae_title=self._ae_title)
        assoc = self._connector.associate(
            ae,
            peer,
            # Explicit then Implicit VR Little Endian, as every outgoing association
            contexts=service_contexts([str(StorageCommitmentPushModel)]),
            # we send the N-EVENT-REPORT: the SCP role on the requester's association
            ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)],
        )
        if not assoc.is_established:
            log.warning("storage commitment report: %s did not accept", peer.ae_title)
            return False
        try:
            answer, _ = assoc.send_n_event_report(
                _report_dataset(result),
                EVENT_FAILURES if result.failed else EVENT_SUCCESS,
                StorageCommitmentPushModel,
                COMMITMENT_INSTANCE,
            )
            return bool(answer) and int(answer.Status) == 0x0000
        finally:
            assoc.release()


def _report_dataset(result: CommitmentResult) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = result.transaction_uid
    if result.committed:
        ds.ReferencedSOPSequence = [_item(ref) for ref in result.committed]
    if result.failed:
        failed = []
        for ref, reason in result.failed:
            item = _item(ref)
            item.FailureReason = reason
            failed.append(item)
        ds.FailedSOPSequence = failed
    return ds


def _item(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


def _failure(code: int, comment: str) -> tuple[Dataset, None]:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[: status.ERROR_COMMENT_MAX]
    return ds, None
