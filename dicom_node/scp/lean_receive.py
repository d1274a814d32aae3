"""The lean receive path for C-STORE (``lean_receive``, on by default): the
C-STORE-RSP command set encoded directly.

Measured per instance (docs/ingest.md, "The receive path"), pynetdicom spent
~0.5 ms of CPU encoding each C-STORE-RSP command set through a pydicom
Dataset (primitive to message, element by element, then pydicom's encoder),
as much as reading and assembling a small instance. On an accepted
association whose C-STORE data sets the node writes as they arrive
(:class:`~dicom_node.scp.dataset_limit.BoundedDIMSE`), this module's
:class:`LeanDIMSE`

- encodes a C-STORE-RSP command set with ``struct`` (implicit VR little
  endian, PS3.7 E.1), byte for byte what pynetdicom would send, and falls back
  to pynetdicom for what it does not cover (an Offending Element, a non-ASCII
  Error Comment, a handler bound to EVT_DIMSE_SENT, a PDU limit too small);
- sends each message's P-DATA under one lock, so the fragments of two
  messages can never interleave (PS3.8 Annex E) whichever thread sends.

Serving the C-STORE on the DUL thread that read it (no hand-off to the
association thread) was built and measured too: with the node's real
handler it halved single-client throughput on the shared 2-core machine, so
it is not here (docs/ingest.md says what was measured and what to try next).

Every bound of dataset_limit.py holds unchanged: only the encoding of the
response changes. ``tests/unit/test_lean_receive.py`` fails if pynetdicom
changes the encoding or how ``send_msg`` sends.
"""

from __future__ import annotations

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


class LeanDIMSE(BoundedDIMSE):
    """BoundedDIMSE with the lean path of this module's docstring (set up by
    :func:`receive_leanly`)."""

    _send_lock: threading.Lock

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
    cast(LeanDIMSE, dimse)._send_lock = threading.Lock()


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
