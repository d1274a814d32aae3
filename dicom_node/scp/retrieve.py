"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): stored instances sent as C-STORE
sub-operations, to a known peer (C-MOVE) or back on the same association (C-GET).

The instance list is read before the first sub-operation, with no session kept
open; each file is read from the store only when its turn comes, so memory does
not grow with the size of the study. pynetdicom's retrieve loop takes a decoded
dataset per sub-operation and encodes it in the transfer syntax it was stored in
(proposed first for each SOP class, with explicit and implicit little endian as
fallbacks; a compressed instance reaches only a peer that accepts its stored
syntax: nothing is transcoded).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from dicom_node.db.engine import Database
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.query import InvalidQuery, Level, UnsupportedQuery
from dicom_node.scp import status
from dicom_node.scp.find import failure, identifier_keys, parse_level, reason, refusal_code
from dicom_node.scp.move_sink import final_status_only
from dicom_node.scp.outgoing import PeerConnector
from dicom_node.services.retrieve import RetrieveItem, instances_to_retrieve, record_export
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
# PS3.4 C.4.2.1.5 Failure: Unable to perform sub-operations (kept here: status.py
# is shared and this is the only user)
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702


class RetrieveHandler:
    def __init__(
        self,
        db: Database,
        store: FileStore,
        peers: dict[str, Peer],
        *,
        connector: PeerConnector,
        max_list_values: int | None = None,
    ) -> None:
        self._max_list_values = max_list_values  # settings.max_query_list_values
        self._db = db
        self._store = store
        self._peers = peers
        self._connector = connector  # plain or TLS, as the peer's entry says

    # ------------------------------------------------------------------ C-MOVE

    def handle_move(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        destination = str(event.move_destination or "").strip()
        peer = self._peers.get(destination)
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination refused", requestor.ae_title)
            self._audit(event, destination, None, {}, Counter(), [], "unknown destination")
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-MOVE from %s refused: %s", requestor.ae_title, exc)
            self._audit(event, destination, None, {}, Counter(), [], str(exc))
            yield from final_status_only(1, failure(refusal_code(exc), str(exc)))
            return
        if items and not _listening(peer, timeout=event.assoc.ae.connection_timeout):
            # A known peer that does not answer: PS3.4 C.4.2.1.4 wants every
            # sub-operation counted as failed and listed (0xA702), not 0xA801
            # (that one says the AE title is unknown, which is not the case)
            log.warning("C-MOVE from %s: %s unreachable", requestor.ae_title, destination)
            failed = [item.sop_instance_uid for item in items]
            self._audit(
                event,
                destination,
                level,
                keys,
                Counter(unreachable=len(items)),
                failed,
                "destination unreachable",
            )
            report = Dataset()
            report.FailedSOPInstanceUIDList = failed
            code, _ = failure(UNABLE_TO_PERFORM_SUB_OPERATIONS, "destination unreachable")
            yield from final_status_only(len(items), (code, report))
            return
        reached = False
        try:
            yield peer.host, peer.port, self._connector.options(peer, contexts=_contexts(items))
            yield len(items)
            reached = True
            yield from self._sub_operations(event, items, level, keys, destination)
        finally:
            if not reached and items:
                # listening, but the association failed (rejected, aborted): 0xA801
                log.warning(
                    "C-MOVE from %s: %s refused the association", requestor.ae_title, destination
                )
                self._audit(event, destination, level, keys, Counter(), [], "destination refused")

    # ------------------------------------------------------------------ C-GET

    def handle_get(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-GET from %s refused: %s", requestor.ae_title, exc)
            self._audit(event, requestor.ae_title, None, {}, Counter(), [], str(exc))
            yield 1
            yield failure(refusal_code(exc), str(exc))
            return
        yield len(items)
        yield from self._sub_operations(event, items, level, keys, requestor.ae_title)

    # ------------------------------------------------------------------ shared

    def _plan(self, event: Event) -> tuple[Level, dict[str, str | None], list[RetrieveItem]]:
        try:
            identifier = event.identifier
            level = parse_level(identifier, str(event.request.AffectedSOPClassUID))
            # sequences are not unique keys: collected apart and ignored, like the rest
            keys = identifier_keys(identifier, {})
        except InvalidQuery:
            raise
        except UnsupportedQuery as exc:
            raise InvalidQuery(str(exc)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidQuery(reason(exc)) from None
        items = instances_to_retrieve(
            self._db, level=level, keys=keys, max_list_values=self._max_list_values
        )
        return level, keys, items

    def _sub_operations(
        self,
        event: Event,
        items: list[RetrieveItem],
        level: Level,
        keys: dict[str, str | None],
        destination: str,
    ) -> Iterator[Any]:
        """One C-STORE sub-operation per readable instance. An instance whose file
        is missing or unreadable is a failed sub-operation: after the others, a
        final 0xB000 lists them (pynetdicom counts the ones never offered as
        failed). The Export audit counts what was offered to pynetdicom."""
        counts: Counter[str] = Counter()
        failed: list[str] = []
        try:
            for item in items:
                if event.is_cancelled:
                    counts["cancelled"] = len(items) - counts["offered"] - len(failed)
                    yield status.CANCEL, None
                    return
                dataset = self._read(item)
                if dataset is None:
                    failed.append(item.sop_instance_uid)
                    continue
                counts["offered"] += 1
                yield status.PENDING, dataset
            if failed:
                report = Dataset()
                report.FailedSOPInstanceUIDList = failed
                yield status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES, report
        finally:
            counts["unreadable"] = len(failed)
            self._audit(event, destination, level, keys, counts, failed, None)

    def _audit(
        self,
        event: Event,
        destination: str,
        level: Level | None,
        keys: dict[str, str | None],
        counts: Counter[str],
        failed: list[str],
        refused: str | None,
    ) -> None:
        requestor = event.assoc.requestor
        try:
            record_export(
                self._db,
                actor=requestor.ae_title,
                source_address=f"{requestor.address}:{requestor.port}",
                destination=destination,
                level=level,
                keys=keys,
                counts=counts,
                failed=failed,
                refused=refused,
            )
        except Exception:
            log.exception("could not audit a retrieve")

    def _read(self, item: RetrieveItem) -> Dataset | None:
        """The stored instance, or None (logged) if its file is gone or unreadable."""
        try:
            return pydicom.dcmread(self._store.absolute(item.file_path))
        except Exception as exc:  # missing, truncated, garbage: pydicom raises many kinds
            log.error("stored instance cannot be read for a retrieve: %s", type(exc).__name__)
            return None


def _listening(peer: Peer, *, timeout: float | None) -> bool:
    """Whether something accepts TCP connections at the peer's address: a plain
    connect, closed at once (far cheaper than a second association)."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=timeout or 5.0):
            return True
    except OSError:
        return False


def _contexts(items: list[RetrieveItem]) -> list[PresentationContext]:
    """One context per SOP class: its stored transfer syntaxes, then uncompressed."""
    syntaxes: dict[str, list[str]] = {}
    for item in items:
        wanted = syntaxes.setdefault(item.sop_class_uid, [])
        if item.transfer_syntax_uid not in wanted:
            wanted.append(item.transfer_syntax_uid)
    contexts = []
    for sop_class, stored in list(syntaxes.items())[:MAX_CONTEXTS]:
        fallback = [
            ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts not in stored
        ]
        contexts.append(build_context(sop_class, [*stored, *fallback]))
    if len(syntaxes) > MAX_CONTEXTS:
        log.warning("retrieve spans more than %d SOP classes: the rest fail", MAX_CONTEXTS)
    return contexts
