"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): stored instances sent as C-STORE
sub-operations, to a known peer (C-MOVE) or back on the same association (C-GET).

The instance list is read before the first sub-operation, with no session kept
open; each file is read from the store only when its turn comes, so memory does
not grow with the size of the study. pynetdicom's retrieve loop takes a decoded
dataset per sub-operation and encodes it in the transfer syntax it was stored in
(proposed first for each SOP class, with explicit and implicit little endian as
fallbacks).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from dicom_node.db.engine import Database
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.query import InvalidQuery, Level
from dicom_node.scp import status
from dicom_node.scp.find import failure, identifier_keys, parse_level, reason
from dicom_node.scp.transport import set_nodelay
from dicom_node.services.retrieve import RetrieveItem, instances_to_retrieve, record_export
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255


class RetrieveHandler:
    def __init__(
        self, db: Database, store: FileStore, peers: dict[str, Peer], *, max_pdu: int
    ) -> None:
        self._db = db
        self._store = store
        self._peers = peers
        self._max_pdu = max_pdu

    # ------------------------------------------------------------------ C-MOVE

    def handle_move(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        destination = str(event.move_destination or "").strip()
        peer = self._peers.get(destination)
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination refused", requestor.ae_title)
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-MOVE from %s refused: %s", requestor.ae_title, exc)
            # pynetdicom has no way to fail before the destination step without
            # a traceback (0xC514): one announced sub-operation, then the failure
            yield peer.host, peer.port
            yield 1
            yield failure(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        items, missing = self._present(items)
        yield (
            peer.host,
            peer.port,
            {
                "contexts": _contexts(items),
                "max_pdu": self._max_pdu,  # pynetdicom's default for associate() is 16 KB
                "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)],
            },
        )
        yield len(items)
        yield from self._sub_operations(event, items, missing, level, keys, destination)

    # ------------------------------------------------------------------ C-GET

    def handle_get(self, event: Event) -> Iterator[Any]:
        requestor = event.assoc.requestor
        try:
            level, keys, items = self._plan(event)
        except InvalidQuery as exc:
            log.warning("C-GET from %s refused: %s", requestor.ae_title, exc)
            yield 1
            yield failure(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        items, missing = self._present(items)
        yield len(items)
        yield from self._sub_operations(event, items, missing, level, keys, requestor.ae_title)

    # ------------------------------------------------------------------ shared

    def _plan(self, event: Event) -> tuple[Level, dict[str, str | None], list[RetrieveItem]]:
        try:
            identifier = event.identifier
            level = parse_level(identifier, str(event.request.AffectedSOPClassUID))
            keys = identifier_keys(identifier)
        except InvalidQuery:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidQuery(reason(exc)) from None
        return level, keys, instances_to_retrieve(self._db, level=level, keys=keys)

    def _present(self, items: list[RetrieveItem]) -> tuple[list[RetrieveItem], list[str]]:
        """Split off instances whose file is gone (an indexed file that went
        missing is an incident for `verify`): pynetdicom can only count a failed
        sub-operation it attempted, so these are logged and audited as failed
        and the others announced."""
        present = [item for item in items if self._store.exists(item.file_path)]
        missing = [item.sop_instance_uid for item in items if item not in present]
        if missing:
            log.error("%d indexed instances have no file and cannot be sent", len(missing))
        return present, missing

    def _sub_operations(
        self,
        event: Event,
        items: list[RetrieveItem],
        missing: list[str],
        level: Level,
        keys: dict[str, str | None],
        destination: str,
    ) -> Iterator[Any]:
        requestor = event.assoc.requestor
        counts: Counter[str] = Counter(missing=len(missing))
        failed = list(missing)
        try:
            for item in items:
                if event.is_cancelled:
                    counts["cancelled"] = len(items) - counts["sent"] - counts["failed"]
                    yield status.CANCEL, None
                    return
                dataset = self._read(item)
                if dataset is None:
                    counts["failed"] += 1
                    failed.append(item.sop_instance_uid)
                    continue  # a missing file is one failed sub-operation, not the end
                counts["sent"] += 1
                yield status.PENDING, dataset
        finally:
            record_export(
                self._db,
                actor=requestor.ae_title,
                source_address=f"{requestor.address}:{requestor.port}",
                destination=destination,
                level=level,
                keys=keys,
                counts=counts,
                failed=failed,
            )

    def _read(self, item: RetrieveItem) -> Dataset | None:
        try:
            return pydicom.dcmread(self._store.absolute(item.file_path))
        except (OSError, ValueError) as exc:
            log.error("stored instance cannot be read for a retrieve: %s", exc)
            return None


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
