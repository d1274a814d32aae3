"""Sending C-FIND pending responses without redoing, per answer, what repeats.

pynetdicom sends each pending C-FIND-RSP by building a response primitive, a
DIMSE message with a pydicom command-set Dataset, encoding that command set,
and queuing one P-DATA for the command and one for the identifier (each then
one PDU and one ``send()`` of the DUL thread). Profiled on a 100-answer query
(py-spy, 2-core VM): ~0.27 ms of the ~0.46 ms per answer in the association
thread was that per-message work, and the command set is the same bytes for
every pending answer of one query (same MessageIDBeingRespondedTo,
AffectedSOPClassUID, Status, CommandDataSetType).

Two patches of pynetdicom internals, both here and nowhere else, both guarded
by tests/unit/test_find_send.py (it fails when the behaviour relied on changes):

- ``DIMSEServiceProvider.send_msg``: a pending C-FIND-RSP with an identifier
  reuses the command set encoded for the first answer of its query, and goes
  out as ONE P-DATA (two PDVs: the command's last fragment, then the whole
  identifier; PS3.8 9.3.5 allows several PDVs in a P-DATA-TF) when it fits the
  peer's maximum PDU length. Anything else (final statuses, other services,
  an EVT_DIMSE_SENT handler that wants each message, a large identifier) takes
  pynetdicom's own path.
- ``pynetdicom.service_class.encode`` (the name ``_c_find_scp`` encodes the
  handler's identifier with): an :class:`EncodedIdentifier` (bytes the node
  encoded for the context's transfer syntax, see ``find_answers.py``) is
  passed through as it is; every other data set is encoded by pynetdicom.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt, service_class
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

PENDING_STATUSES = frozenset({0xFF00, 0xFF01})
# a PDV item: 4 bytes of length, the context ID and the message control header
_PDV_OVERHEAD = 6
_CACHE = "_dicom_node_find_command"  # on the DIMSE provider: (key, encoded command set)
_COMMAND_LAST = b"\x03"  # message control header: command, last fragment
_DATASET_LAST = b"\x02"  # data set, last fragment


class EncodedIdentifier(Dataset):
    """A C-FIND answer already encoded for its context's transfer syntax.

    A Dataset to pynetdicom (its handler contract), with no elements: only the
    patched ``encode`` reads it, and hands over ``encoded`` when the transfer
    syntax is the one it was encoded for (anything else is a bug: refused)."""

    def __init__(self, encoded: bytes, *, implicit_vr: bool) -> None:
        super().__init__()
        self.encoded = encoded
        self.implicit_vr = implicit_vr


def command_set(primitive: C_FIND) -> bytes:
    """The encoded command set of a C-FIND-RSP, by pynetdicom's own code."""
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    if not encoded:
        raise ValueError("pynetdicom could not encode a C-FIND-RSP command set")
    return encoded


def _send_pending(provider: DIMSEServiceProvider, primitive: C_FIND, context_id: int) -> bool:
    """Send a pending answer the lean way; False if it must take pynetdicom's."""
    identifier = primitive.Identifier
    if (
        identifier is None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
        or provider.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        return False
    key = (
        context_id,
        primitive.MessageIDBeingRespondedTo,
        str(primitive.AffectedSOPClassUID),
        primitive.Status,
    )
    cached: tuple[tuple[Any, ...], bytes] | None = provider.__dict__.get(_CACHE)
    if cached is None or cached[0] != key:
        cached = (key, command_set(primitive))
        provider.__dict__[_CACHE] = cached
    command = cached[1]
    data = identifier.getvalue()
    maximum = provider.maximum_pdu_size
    if maximum and len(command) + len(data) + 2 * _PDV_OVERHEAD > maximum:
        return False  # would need fragments: pynetdicom's path does that
    pdata = P_DATA()
    # appended as pynetdicom's encode_msg does (the setter wants lists)
    pdata.presentation_data_value_list.append((context_id, _COMMAND_LAST + command))
    pdata.presentation_data_value_list.append((context_id, _DATASET_LAST + data))
    provider.dul.send_pdu(pdata)
    return True


# pynetdicom's own, kept before any patch (the guard tests read them too)
STOCK_SEND_MSG = DIMSEServiceProvider.send_msg
STOCK_ENCODE = service_class.encode  # type: ignore[attr-defined]
_installed = False


def install_find_send() -> None:
    """Patch pynetdicom (idempotent): see the module doc."""
    global _installed
    if _installed:
        return
    original_send = STOCK_SEND_MSG
    original_encode = STOCK_ENCODE

    def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
        if (
            type(primitive) is C_FIND
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status in PENDING_STATUSES
            and _send_pending(self, primitive, context_id)
        ):
            return
        original_send(self, primitive, context_id)

    def encode_identifier(
        ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if type(ds) is EncodedIdentifier:
            if ds.implicit_vr != is_implicit_vr or not is_little_endian or deflated:
                return None  # pynetdicom answers 0xC312 (cannot encode): never silently wrong
            return ds.encoded
        return original_encode(ds, is_implicit_vr, is_little_endian, deflated)

    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]
    service_class.encode = encode_identifier  # type: ignore[attr-defined]
    _installed = True
