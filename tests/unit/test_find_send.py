"""Guards of the pynetdicom patches in scp/find_send.py: each fails when the
pynetdicom behaviour the patch relies on changes (then re-check the patch)."""

from __future__ import annotations

import inspect
from io import BytesIO

import pynetdicom
from pydicom.dataset import Dataset
from pynetdicom import service_class
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_node.scp.find_send import (
    STOCK_ENCODE,
    STOCK_SEND_MSG,
    EncodedIdentifier,
    command_set,
    install_find_send,
)


def _pending(message_id: int = 7, status: int = 0xFF00) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    rsp.Status = status
    rsp.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    return rsp


def test_the_pynetdicom_release_is_one_the_patches_were_checked_against() -> None:
    assert pynetdicom.__version__.startswith("3.0."), "re-check scp/find_send.py, then this"


def test_the_cached_command_set_is_the_one_pynetdicom_sends_for_every_pending_answer() -> None:
    for status in (0xFF00, 0xFF01):
        primitive = _pending(status=status)
        message = C_FIND_RSP()
        message.primitive_to_message(primitive)
        command_pdv, data_pdv = list(message.encode_msg(1, 16_382))
        # pynetdicom: one P-DATA for the command (its last fragment: 0x03), one
        # for the identifier (0x02); the patch puts the same two PDVs in one P-DATA
        assert command_pdv.presentation_data_value_list == [(1, b"\x03" + command_set(primitive))]
        assert data_pdv.presentation_data_value_list == [
            (1, b"\x02" + primitive.Identifier.getvalue())  # type: ignore[union-attr]
        ]
        # what makes reuse safe: only these fields vary the command set
        other = _pending(message_id=8, status=status)
        assert command_set(other) != command_set(primitive)


def test_c_find_scp_encodes_its_identifier_through_the_patched_name_and_sends_via_send_msg() -> (
    None
):
    install_find_send()  # whatever the order of the tests: pynetdicom's own code is read
    source = inspect.getsource(service_class.ServiceClass._c_find_scp)
    assert "enc = encode(" in source  # the module-level name the patch replaces
    assert "rsp.Identifier = bytestream" in source
    assert "self.dimse.send_msg(rsp, cx_id)" in source
    assert STOCK_SEND_MSG is not DIMSEServiceProvider.send_msg  # installed
    assert STOCK_SEND_MSG.__module__ == "pynetdicom.dimse"
    sender = inspect.getsource(STOCK_SEND_MSG)
    assert "encode_msg(context_id, self.maximum_pdu_size)" in sender
    assert "self.dul.send_pdu(pdata)" in sender
    assert "EVT_DIMSE_SENT" in sender  # skipped by the lean path only when unbound


def test_encoded_identifiers_pass_through_and_other_data_sets_are_encoded_as_before() -> None:
    install_find_send()
    answer = EncodedIdentifier(b"\x08\x00\x52\x00", implicit_vr=True)
    assert service_class.encode(answer, True, True) == b"\x08\x00\x52\x00"
    # encoded for another syntax: refused (pynetdicom then answers 0xC312)
    assert service_class.encode(answer, False, True) is None
    assert service_class.encode(answer, True, False) is None
    ds = Dataset()
    ds.PatientID = "X"
    assert service_class.encode(ds, False, True) == encode(ds, False, True)
    assert STOCK_ENCODE is encode
