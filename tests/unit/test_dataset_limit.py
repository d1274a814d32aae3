"""BoundedDIMSE replaces how pynetdicom assembles a message from its P-DATA
fragments: fed real encoded messages here, without a network, so a pynetdicom
upgrade that renames what it relies on fails these tests instead of the node
quietly keeping whole data sets in memory again."""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, N_ACTION_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE, N_ACTION
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AddressInformation

from dicom_node.scp.dataset_limit import (
    HELD_DATASET_LIMIT,
    BoundedDIMSE,
    ReceivedDataset,
    bound_messages,
    discard_unclaimed,
)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
CT = "1.2.840.10008.5.1.4.1.1.2"
PREFIX = b"\x00" * 128 + b"DICM" + b"<meta>"


def _prefix(assoc: Association, command_set: Dataset, syntax: str) -> bytes:
    return PREFIX


def _association(tmp_path: Path, limit: int, syntax: str = EXPLICIT_LE) -> Association:
    assoc = Association(AE("TEST"), "acceptor")
    context = PresentationContext()
    context.context_id = 1
    context.abstract_syntax = CT
    context.transfer_syntax = [syntax]
    assoc._accepted_cx = {1: context}
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 104)
    assoc.requestor.ae_title = "PEER"
    bound_messages(assoc, limit=limit, scratch_dir=tmp_path, prefix=_prefix)
    return assoc


def _c_store(data: bytes, max_pdu: int = 16_384) -> Iterator[P_DATA]:
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = "1.2.3.4"
    request.Priority = 0
    request.DataSet = BytesIO(data)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return message.encode_msg(1, max_pdu)


def _receive(assoc: Association, pdus: Iterator[P_DATA]) -> C_STORE:
    for pdu in pdus:
        assoc.dimse.receive_primitive(pdu)
    context_id, primitive = assoc.dimse.get_msg()
    assert context_id == 1 and isinstance(primitive, C_STORE)
    return primitive


def _claim(assoc: Association, primitive: C_STORE) -> ReceivedDataset:
    assert isinstance(assoc.dimse, BoundedDIMSE)
    assert isinstance(primitive._dataset_path, Path)
    received = assoc.dimse.claim(primitive._dataset_path)
    assert received is not None
    return received


def test_the_pynetdicom_internals_it_relies_on_are_still_there() -> None:
    source = inspect.getsource(DIMSEServiceProvider.receive_primitive)
    assert "self.message = DIMSEMessage()" in source
    assert "self.message.decode_msg(primitive" in source
    assert "message_to_primitive()" in source
    message = DIMSEMessage()
    for name in ("encoded_command_set", "data_set", "_data_set_path", "context_id"):
        assert hasattr(message, name), name
    # the path given to the message reaches the handler's event.dataset_path
    assert "primitive._dataset_path = self._data_set_path" in inspect.getsource(
        DIMSEMessage.message_to_primitive
    )
    assert hasattr(Association(AE("TEST"), "acceptor"), "_accepted_cx")


def test_a_c_store_data_set_is_written_to_a_file_as_it_arrives(tmp_path: Path) -> None:
    assoc = _association(tmp_path, limit=1_000_000)
    data = bytes(range(256)) * 400  # 102,400 bytes: several fragments
    primitive = _receive(assoc, _c_store(data))
    assert primitive.DataSet is not None and primitive.DataSet.getvalue() == b""  # nothing held
    received = _claim(assoc, primitive)
    assert received.kept and received.size == len(data)
    assert received.path is not None and received.path.read_bytes() == PREFIX + data
    assert received.path.parent == tmp_path


def test_a_data_set_of_exactly_the_limit_is_kept_one_byte_more_is_not(tmp_path: Path) -> None:
    assoc = _association(tmp_path, limit=50_000)
    kept = _claim(assoc, _receive(assoc, _c_store(b"\x01" * 50_000)))
    assert kept.kept and kept.path is not None and kept.path.stat().st_size == 50_000 + len(PREFIX)
    refused = _claim(assoc, _receive(assoc, _c_store(b"\x01" * 50_002)))
    assert refused.over_limit and not refused.kept and refused.size == 50_002
    assert refused.path is not None and not refused.path.exists()
    # the message after a refused one is whole again
    again = _claim(assoc, _receive(assoc, _c_store(b"\x02" * 100)))
    assert again.kept


def test_what_no_handler_took_is_removed_when_the_connection_closes(tmp_path: Path) -> None:
    assoc = _association(tmp_path, limit=1_000_000)
    fragments = list(_c_store(b"\x03" * 40_000))
    for pdu in fragments[:-1]:  # the association ends in the middle of the data set
        assoc.dimse.receive_primitive(pdu)
    assert len(list(tmp_path.iterdir())) == 1
    discard_unclaimed(assoc)
    assert list(tmp_path.iterdir()) == []


def _n_action(data: bytes, max_pdu: int = 1_048_576) -> Iterator[P_DATA]:
    request = N_ACTION()
    request.MessageID = 3
    request.RequestedSOPClassUID = "1.2.840.10008.1.20.1"
    request.RequestedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    request.ActionTypeID = 1
    request.ActionInformation = BytesIO(data)
    message = N_ACTION_RQ()
    message.primitive_to_message(request)
    return message.encode_msg(1, max_pdu)


def _aborts(assoc: Association, pdus: Iterator[P_DATA]) -> bool:
    aborted: list[bool] = []
    assoc.abort = lambda block=True: aborted.append(block)  # type: ignore[method-assign]
    for pdu in pdus:
        assoc.dimse.receive_primitive(pdu)
    return aborted == [False]


def test_a_deflated_data_set_held_in_memory_must_inflate_within_the_bound(
    tmp_path: Path,
) -> None:
    """pynetdicom would inflate it with one unbounded zlib call before any handler."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(80)) + compressor.flush()
    assert len(bomb) < HELD_DATASET_LIMIT // 100
    assert _aborts(_association(tmp_path, limit=1 << 30, syntax=DEFLATED), _n_action(bomb))

    small = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    fine = small.compress(bytes(1000)) + small.flush()
    assoc = _association(tmp_path, limit=1 << 30, syntax=DEFLATED)
    assert not _aborts(assoc, _n_action(fine))
    assert assoc.dimse.get_msg()[0] == 1


@pytest.mark.parametrize("size", [HELD_DATASET_LIMIT + 2])
def test_a_non_storage_data_set_over_the_held_limit_aborts(tmp_path: Path, size: int) -> None:
    assert _aborts(_association(tmp_path, limit=1 << 30), _n_action(b"\x00" * size))
