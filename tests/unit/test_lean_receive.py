"""Guards of scp/lean_receive.py: the pynetdicom behaviour it relies on, and its
C-STORE-RSP encoding, byte for byte pynetdicom's. A pynetdicom upgrade that
changes either fails here instead of the lean path quietly going wrong."""

from __future__ import annotations

import inspect
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_node.scp.find_send import STOCK_SEND_MSG
from dicom_node.scp.lean_receive import encode_store_response

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_the_pynetdicom_version_is_one_these_guards_cover() -> None:
    assert pynetdicom.__version__.startswith("3.0."), pynetdicom.__version__


def test_send_msg_encodes_through_the_message_and_sends_with_send_pdu() -> None:
    """LeanDIMSE replaces send_msg for a C-STORE-RSP: what it skips and what it keeps."""
    source = inspect.getsource(STOCK_SEND_MSG)  # pynetdicom's own, not the C-FIND patch
    assert "dimse_msg.primitive_to_message(primitive)" in source
    assert "evt.EVT_DIMSE_SENT" in source
    assert "self.dul.send_pdu(pdata)" in source
    assoc = Association(AE("TEST"), "acceptor")
    assert callable(assoc.get_handlers)
    assert hasattr(DIMSEServiceProvider, "maximum_pdu_size")


def _pynetdicom_encoding(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def _response(**values: Any) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = values.pop("message_id", 7)
    primitive.AffectedSOPClassUID = values.pop("sop_class", CT)
    primitive.AffectedSOPInstanceUID = values.pop("sop_instance", "1.2.3.4")
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


@pytest.mark.parametrize(
    "values",
    [
        {"Status": 0x0000},
        {"Status": 0xA700, "ErrorComment": "data set over the limit"},
        {"Status": 0xC000, "ErrorComment": "odd"},
        {"Status": 0xB007, "ErrorComment": "even"},
        {"Status": 0x0000, "sop_instance": "1.2.34", "message_id": 65535},
        {"Status": 0x0000, "sop_class": "1.2.840.10008.5.1.4.1.1.2.1"},
        {"Status": 0xC211},
    ],
)
def test_a_store_response_is_encoded_as_pynetdicom_encodes_it(values: dict[str, Any]) -> None:
    primitive = _response(**values)
    assert encode_store_response(primitive) == _pynetdicom_encoding(primitive)


@pytest.mark.parametrize(
    "values",
    [
        {"Status": 0xA900, "OffendingElement": [0x00100010]},
        {"Status": 0xC000, "ErrorComment": "Müller"},
        {"Status": None},
    ],
)
def test_what_it_does_not_cover_is_left_to_pynetdicom(values: dict[str, Any]) -> None:
    assert encode_store_response(_response(**values)) is None
