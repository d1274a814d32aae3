"""Bounded assembly of the DIMSE messages a peer sends (PS3.7 6.3, PS3.8 Annex E).

pynetdicom gathers the P-DATA fragments of a message in memory, however many
arrive, and hands the message on only when its last fragment is in: a peer could
make the node hold any amount, and a 300 MiB C-STORE cost about twice its size in
memory by the time it was written. Each association's DIMSE provider is switched
(on connection open, :func:`bound_messages`) to :class:`BoundedDIMSE`, which

- writes a C-STORE data set, fragment by fragment as it arrives, to a temp file
  in the store (after the preamble and file meta the node writes), counting its
  bytes. Past ``max_dataset_bytes`` the file is removed and the rest of the
  fragments are counted and dropped. The message then goes on to pynetdicom with
  an empty data set, and the C-STORE handler takes the file, or the refusal,
  with :func:`claim_received`: a data set over the limit is answered 0xA700
  (PS3.4 B.2.3, Refused: Out of Resources) without ever being decoded or kept.
  A status rather than an abort: a modality retries an aborted association, and
  goes on to its next instance after a failure status.
- holds any other message's data set (a query identifier, an MPPS or storage
  commitment attribute list) in memory as pynetdicom does, up to
  HELD_DATASET_LIMIT, checking that a Deflated one inflates within it too
  (pynetdicom inflates those whole); a command set up to COMMAND_SET_LIMIT.
  Past them the association is aborted (A-ABORT): pynetdicom decodes these
  data sets before any handler sees them, so no status can be answered
  without holding them.

Fragments of different messages cannot interleave (PS3.8 Annex E): one message
is assembled at a time, as pynetdicom does. ``tests/unit/test_dataset_limit.py``
fails if a pynetdicom upgrade renames what this relies on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import IO, cast

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.domain.inflate import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    DatasetTooLarge,
    InvalidDeflate,
    inflated_size,
)
from dicom_node.metrics import observe_ingest_stage
from dicom_node.storage import TEMP_SUFFIX

log = logging.getLogger("dicom_node.scp")

# A command set is a dozen short elements (PS3.7 E.1): a few hundred bytes.
COMMAND_SET_LIMIT = 65_536
# Data sets other than a C-STORE's, held in memory and decoded whole by
# pynetdicom: a storage commitment request for 100,000 instances is ~15 MB.
HELD_DATASET_LIMIT = 67_108_864

# (association, C-STORE command set, transfer syntax) -> preamble, DICM and file meta
PrefixBuilder = Callable[[Association, Dataset, str], bytes]


class ReceivedDataset:
    """A C-STORE data set written to ``path`` as its fragments arrive.

    ``size`` counts every data set byte received (a Deflated one as sent). Over
    ``limit`` the file is removed and later bytes are counted only; ``error``
    is a failed write (the file is removed too).
    """

    def __init__(self, path: Path | None, prefix: bytes | None, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.error: OSError | None = None
        self._file: IO[bytes] | None = None
        self._first: float | None = None  # when the first fragment arrived
        if path is None or prefix is None:
            return  # nothing to keep (no usable context or command): count only
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            self._file = os.fdopen(fd, "wb")
            self._file.write(prefix)
        except OSError as exc:
            self._drop(exc)

    @property
    def over_limit(self) -> bool:
        return self.size > self.limit

    @property
    def kept(self) -> bool:
        """Whether ``path`` holds the whole data set (once finished)."""
        return self.path is not None and not self.over_limit and self.error is None

    def add(self, fragment: memoryview) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self.size += len(fragment)
        file = self._file
        if file is None:
            return
        if self.over_limit:
            self._drop(None)
            return
        try:
            file.write(fragment)
        except OSError as exc:
            self._drop(exc)
        except ValueError:
            pass  # closed meanwhile: discarded as the connection ended

    def finish(self) -> None:
        if self._first is not None:  # the "receive" stage: first fragment to last
            observe_ingest_stage("receive", time.perf_counter() - self._first)
        if self._file is None:
            return
        try:
            self._file.close()  # flushed; synced by the ingest, once the header is read
        except OSError as exc:
            self._drop(exc)
        self._file = None

    def discard(self) -> None:
        """Close and remove the file (a no-op for one the ingest renamed into place)."""
        self._drop(None)

    def _drop(self, error: OSError | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # being removed anyway
                file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class BoundedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with the bounds of this module's docstring.
    Its attributes are set by :func:`bound_messages`."""

    limit: int
    scratch_dir: Path | None  # None: C-STORE data sets are counted, never kept
    prefix: PrefixBuilder | None
    _receiving: ReceivedDataset | None
    _received: dict[Path, ReceivedDataset]
    _lock: threading.Lock
    _refusing: bool

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Called by the DUL thread for each P-DATA-TF PDU: one fragment (PDV) at
        a time, so a command and the first data set fragment may share a PDU."""
        for context_id, data in primitive.presentation_data_value_list:
            if self._refusing:
                return  # aborted: the rest is not looked at
            if not data:
                self._abort("an empty presentation data value")
            elif data[0] & 0x01:
                self._command_fragment(context_id, data)
            else:
                self._data_fragment(context_id, data)

    def _command_fragment(self, context_id: int, data: bytes) -> None:
        message = self.message
        held = message.encoded_command_set.tell() if message is not None else 0
        if held + len(data) - 1 > COMMAND_SET_LIMIT:
            self._abort(f"a command set over {COMMAND_SET_LIMIT} bytes")
            return
        super().receive_primitive(_one(context_id, data))
        message = self.message  # None if the message had no data set (complete)
        if data[0] & 0x02 and isinstance(message, C_STORE_RQ) and self._receiving is None:
            self._receiving = self._start(message.command_set, context_id)

    def _start(self, command_set: Dataset, context_id: int) -> ReceivedDataset:
        if self.scratch_dir is None or self.prefix is None:
            return ReceivedDataset(None, None, self.limit)  # counted and dropped
        path = self.scratch_dir / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
        context = self.assoc._accepted_cx.get(context_id)
        prefix = None
        if context is not None:  # else pynetdicom aborts once the message is in
            try:
                syntax = str(context.transfer_syntax[0])
                prefix = self.prefix(self.assoc, command_set, syntax)
            except Exception:  # a command without its UIDs: pynetdicom drops the message
                log.debug("C-STORE command without usable UIDs: data set not kept")
        received = ReceivedDataset(path if prefix is not None else None, prefix, self.limit)
        with self._lock:
            if received.path is not None:
                self._received[received.path] = received  # removed at close if unclaimed
        return received

    def _data_fragment(self, context_id: int, data: bytes) -> None:
        receiving = self._receiving
        if receiving is None:
            self._held_fragment(context_id, data)
            return
        receiving.add(memoryview(data)[1:])
        if not data[0] & 0x02:
            return
        receiving.finish()
        self._receiving = None
        message = self.message
        assert message is not None  # a C-STORE-RQ awaiting its data set
        # pynetdicom's chunked-receive hook: it hands the path to the handler as
        # event.dataset_path (and leaves the file alone: no _data_set_file)
        message._data_set_path = receiving.path
        # the last fragment without its bytes completes the message (an empty data set)
        super().receive_primitive(_one(context_id, data[:1]))

    def _held_fragment(self, context_id: int, data: bytes) -> None:
        message = self.message
        held = cast(BytesIO, message.data_set).tell() if message is not None else 0
        if held + len(data) - 1 > HELD_DATASET_LIMIT:
            self._abort(f"a data set over {HELD_DATASET_LIMIT} bytes in a non-storage message")
            return
        if data[0] & 0x02 and message is not None and self._inflates_too_far(message, data):
            self._abort(f"a data set inflating past {HELD_DATASET_LIMIT} bytes")
            return
        super().receive_primitive(_one(context_id, data))

    def _inflates_too_far(self, message: DIMSEMessage, last: bytes) -> bool:
        """pynetdicom inflates a Deflated data set with one unbounded call: inflate
        it here first, bounded, keeping nothing."""
        context = self.assoc._accepted_cx.get(cast(int, message.context_id))
        if context is None or context.transfer_syntax[0] != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            return False
        held = cast(BytesIO, message.data_set)
        try:
            with held.getbuffer() as view:
                inflated_size([view, memoryview(last)[1:]], limit=HELD_DATASET_LIMIT)
        except DatasetTooLarge:
            return True
        except InvalidDeflate:
            pass  # pynetdicom's own decoding refuses it
        return False

    def _abort(self, why: str) -> None:
        self._refusing = True
        requestor = self.assoc.requestor
        log.warning(
            "association from %s at %s:%s: %s received, aborting",
            requestor.ae_title,
            requestor.address,
            requestor.port,
            why,
        )
        self.discard_all()
        self.assoc.abort(block=False)  # non-blocking: this is the DUL thread

    def claim(self, path: Path) -> ReceivedDataset | None:
        with self._lock:
            return self._received.pop(path, None)

    def discard_all(self) -> None:
        """Remove every data set no handler took (the association ended first)."""
        with self._lock:
            left = list(self._received.values())
            self._received.clear()
        for received in left:
            received.discard()


def _one(context_id: int, data: bytes) -> P_DATA:
    primitive = P_DATA()
    # pynetdicom checks for a list at run time, though it annotates a tuple
    primitive.presentation_data_value_list = [[context_id, data]]  # type: ignore[list-item]
    return primitive


def bound_messages(
    assoc: Association, *, limit: int, scratch_dir: Path | None, prefix: PrefixBuilder | None
) -> None:
    """On connection open: switch the association's DIMSE provider to
    :class:`BoundedDIMSE` (pynetdicom creates it itself)."""
    dimse = assoc.dimse
    if type(dimse) is not DIMSEServiceProvider:
        return
    dimse.__class__ = BoundedDIMSE
    bounded = cast(BoundedDIMSE, dimse)
    bounded.limit = limit
    bounded.scratch_dir = scratch_dir
    bounded.prefix = prefix
    bounded._receiving = None
    bounded._received = {}
    bounded._lock = threading.Lock()
    bounded._refusing = False
    if scratch_dir is not None:
        # here, not in store.py's hook: every association that keeps data sets
        # (imported late: lean_receive subclasses BoundedDIMSE)
        from dicom_node.scp.lean_receive import receive_leanly

        receive_leanly(assoc)


def bound_responses(assoc: Association) -> None:
    """On connection open of an association the node requests (C-MOVE
    sub-operations, storage commitment reports): what the peer sends back (a
    C-STORE-RSP, an N-EVENT-REPORT-RSP: command sets, small data sets) is held
    within the same limits; a C-STORE data set the peer might send on it has no
    handler and is counted, never kept."""
    bound_messages(assoc, limit=0, scratch_dir=None, prefix=None)


def claim_received(event: Event) -> ReceivedDataset | None:
    """The data set of a C-STORE event as BoundedDIMSE received it, now the
    caller's (None: the association's messages were not bounded)."""
    dimse = event.assoc.dimse
    path = getattr(event.request, "_dataset_path", None)
    if not isinstance(dimse, BoundedDIMSE) or not isinstance(path, Path):
        return None
    return dimse.claim(path)


def discard_unclaimed(assoc: Association) -> None:
    """On connection close."""
    dimse = assoc.dimse
    if isinstance(dimse, BoundedDIMSE):
        with dimse._lock:
            receiving, dimse._receiving = dimse._receiving, None
        if receiving is not None:
            receiving.discard()
        dimse.discard_all()
