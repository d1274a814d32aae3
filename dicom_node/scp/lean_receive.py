"""The lean receive path for C-STORE (``lean_receive``, on by default).

Measured per instance (docs/ingest.md, "The receive path"), pynetdicom's
receive path spent most of its time not in reading or assembling fragments
but in handing each message between two threads that poll: the DUL thread
queues the decoded C-STORE-RQ, the association thread finds it after its
fixed 1 ms sleep, runs the handler, and queues the response's P-DATA back to
the DUL thread, which finds it on its own next poll; and in encoding the
C-STORE-RSP command set through a pydicom Dataset (~0.5 ms).

On an accepted association whose C-STORE data sets the node writes as they
arrive (:class:`~dicom_node.scp.dataset_limit.BoundedDIMSE`), this module's
:class:`LeanDIMSE`

- serves a completed C-STORE-RQ on the DUL thread, the one that read its last
  fragment, when the association thread holds no message (nothing queued,
  nothing being served): no hand-off and no poll before the handler runs, and
  the response's P-DATA is sent on the DUL loop's very next pass. Anything
  else (every other message, a C-STORE arriving while another message is
  being served, an unknown presentation context) goes through pynetdicom's
  queue as before, so messages are still served one at a time and in order;
- encodes a C-STORE-RSP command set directly (implicit VR little endian,
  PS3.7 E.1), byte for byte what pynetdicom would send, falling back to
  pynetdicom for what it does not cover (an Offending Element, a non-ASCII
  Error Comment, handlers bound to EVT_DIMSE_SENT);
- sends each message's P-DATA under one lock, so the fragments of two
  messages can never interleave (PS3.8 Annex E) whichever thread sends.

Every bound of dataset_limit.py holds unchanged: the fragments are still read
by pynetdicom's reader (LimitedDUL: PDU length, EOF, TLS) and written by
BoundedDIMSE (max_dataset_bytes before buffering, inflation limits, A-ABORT
mid-transfer); only who runs the handler, and how the response is encoded,
change. While a handler runs on the DUL thread the network idle timer is held
(:meth:`~dicom_node.scp.transport.LimitedDUL.idle_timer_expired`): the
association thread would otherwise take a long store for a silent peer.

``tests/unit/test_lean_receive.py`` fails if pynetdicom changes what this
relies on: ``DIMSEServiceProvider.receive_primitive`` queueing a completed
message with ``msg_queue.put((context_id, primitive))`` on the thread that
called it, ``get_msg`` taking from that queue, ``send_msg`` sending through
``dul.send_pdu``, and the C-STORE-RSP encoding.
"""

from __future__ import annotations

import queue
import struct
import threading
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.scp.dataset_limit import BoundedDIMSE

_enabled = True


def configure(*, enabled: bool) -> None:
    """Process-wide switch (the ``lean_receive`` setting), set by build_ae."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


class _HandOff(queue.Queue[Any]):
    """pynetdicom's DIMSE message queue, counting the messages put and not yet
    taken so that the DUL thread knows when the association thread is idle."""

    def __init__(self, dimse: LeanDIMSE) -> None:
        super().__init__()
        self._dimse = dimse

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        dimse = self._dimse
        primitive = item[1]
        if primitive is not None and dimse._take_inline(item):
            return
        if primitive is not None:
            with dimse._hand_lock:
                dimse._queued += 1
        super().put(item, block, timeout)


class LeanDIMSE(BoundedDIMSE):
    """BoundedDIMSE with the lean path of this module's docstring (set up by
    :func:`receive_leanly`)."""

    serving_inline: bool
    _hand_lock: threading.Lock
    _send_lock: threading.RLock
    _queued: int  # messages in msg_queue
    _holders: set[threading.Thread]  # threads that took a message and have not come back
    _inline: tuple[int, C_STORE] | None
    _dul_thread: threading.Thread | None

    def receive_primitive(self, primitive: P_DATA) -> None:
        super().receive_primitive(primitive)
        inline, self._inline = self._inline, None
        if inline is not None:
            self._serve_inline(*inline)

    def _take_inline(self, item: tuple[int, Any]) -> bool:
        """Called by msg_queue.put, on the thread that completed the message."""
        context_id, primitive = item
        if not (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is None  # a request, not a C-GET's response
            and threading.current_thread() is self._dul_thread
            and context_id in self.assoc._accepted_cx
            and self.assoc.is_established
            and self._inline is None
        ):
            return False
        with self._hand_lock:
            if self._queued or self._holders_alive():
                return False  # the association thread has one: stay in order
        self._inline = (context_id, primitive)
        return True

    def _holders_alive(self) -> bool:
        if self._holders:
            self._holders = {thread for thread in self._holders if thread.is_alive()}
        return bool(self._holders)

    def get_msg(self, block: bool = False) -> Any:
        me = threading.current_thread()
        with self._hand_lock:
            self._holders.discard(me)  # back for more: done with the last one
        item = super().get_msg(block)
        if item[1] is not None:
            with self._hand_lock:
                self._queued -= 1
                self._holders.add(me)
        return item

    def _serve_inline(self, context_id: int, primitive: C_STORE) -> None:
        dul = self.dul
        acting = getattr(dul, "acting", False)
        self.serving_inline = True
        dul.acting = False  # type: ignore[attr-defined]  # not blocked on the peer
        try:
            self.assoc._serve_request(primitive, context_id)
        finally:
            dul.acting = acting  # type: ignore[attr-defined]
            self.serving_inline = False
            dul._idle_timer.restart()  # the handler's time is not the peer's silence

    def send_msg(self, primitive: Any, context_id: int) -> None:
        with self._send_lock:
            encoded = None
            if isinstance(primitive, C_STORE) and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
                encoded = encode_store_response(primitive)
            limit = self.maximum_pdu_size
            if encoded is None or (limit and len(encoded) + 6 > limit):
                super().send_msg(primitive, context_id)
                return
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
            self.dul.send_pdu(pdata)


def receive_leanly(assoc: Any) -> None:
    """After :func:`~dicom_node.scp.dataset_limit.bound_messages` on connection
    open: switch an accepted association's BoundedDIMSE (one that writes C-STORE
    data sets) to :class:`LeanDIMSE`, if the lean path is on."""
    dimse = assoc.dimse
    if not _enabled or type(dimse) is not BoundedDIMSE or dimse.scratch_dir is None:
        return
    if not assoc.is_acceptor:
        return
    dimse.__class__ = LeanDIMSE
    lean = cast(LeanDIMSE, dimse)
    lean.serving_inline = False
    lean._hand_lock = threading.Lock()
    lean._send_lock = threading.RLock()
    lean._queued = 0
    lean._holders = set()
    lean._inline = None
    lean._dul_thread = assoc.dul  # the DUL provider is the DUL thread
    lean.msg_queue = _HandOff(lean)


# ----------------------------------------------------------------------------- C-STORE-RSP

_US = struct.Struct("<HHIH")  # group, element, length 2, value


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: object) -> bytes | None:
    text = str(value)
    if not text.isascii():
        return None
    data = text.encode()
    return data + b"\x00" if len(data) % 2 else data


def encode_store_response(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP (PS3.7 9.3.1.2, implicit VR little
    endian), as pynetdicom encodes it; None for what it leaves to pynetdicom."""
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.OffendingElement is not None:
        return None
    parts = []
    if primitive.AffectedSOPClassUID is not None:
        uid = _uid(primitive.AffectedSOPClassUID)
        if uid is None:
            return None
        parts.append(_element(0x0002, uid))
    parts.append(_US.pack(0x0000, 0x0100, 2, 0x8001))  # Command Field: C-STORE-RSP
    parts.append(_US.pack(0x0000, 0x0120, 2, int(primitive.MessageIDBeingRespondedTo)))
    parts.append(_US.pack(0x0000, 0x0800, 2, 0x0101))  # no data set
    parts.append(_US.pack(0x0000, 0x0900, 2, int(primitive.Status)))
    if primitive.ErrorComment is not None:
        comment = str(primitive.ErrorComment)
        if not comment.isascii() or "\\" in comment:
            return None
        data = comment.encode()
        parts.append(_element(0x0902, data + b" " if len(data) % 2 else data))
    if primitive.AffectedSOPInstanceUID is not None:
        uid = _uid(primitive.AffectedSOPInstanceUID)
        if uid is None:
            return None
        parts.append(_element(0x1000, uid))
    body = b"".join(parts)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body
