"""The PDU length check replaces pynetdicom's ``_read_pdu_data``: these tests fail
on an upgrade that renames what it relies on, instead of the node losing it."""

from __future__ import annotations

import inspect

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicom_node.scp.polling import AdaptiveDUL
from dicom_node.scp.transport import LimitedDUL, limit_pdu_length


def test_pynetdicom_still_reads_pdus_where_the_check_replaces_it() -> None:
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    # the same events for the same faults as the replacement
    for event in ('"Evt17"', '"Evt19"'):
        assert event in source
    assert "self._decode_pdu(" in source and "self._recv_pdu.put(" in source
    dul = Association(AE("TEST"), "acceptor").dul
    assert hasattr(dul, "event_queue") and hasattr(dul, "_recv_pdu")


def test_every_association_of_the_node_gets_the_check() -> None:
    assert issubclass(AdaptiveDUL, LimitedDUL)  # accepted associations
    assoc = Association(AE("TEST"), "requestor")
    limit_pdu_length(assoc)  # the ones the node requests
    assert type(assoc.dul) is LimitedDUL


def test_the_p_data_limit_is_the_maximum_length_the_node_sent() -> None:
    ae = AE("TEST")
    ae.maximum_pdu_size = 65_536
    acceptor = Association(ae, "acceptor")
    acceptor.acceptor.maximum_length = 65_536
    limit_pdu_length(acceptor)
    requestor = Association(ae, "requestor")
    requestor.requestor.maximum_length = 32_768
    limit_pdu_length(requestor)
    assert acceptor.dul._limit(0x04) == 65_536  # type: ignore[attr-defined]
    assert requestor.dul._limit(0x04) == 32_768  # type: ignore[attr-defined]
    assert acceptor.dul._limit(0x01) == 1_048_576  # type: ignore[attr-defined]
    acceptor.acceptor.maximum_length = 0  # max_pdu_size = 0: no limit
    assert acceptor.dul._limit(0x04) == 0  # type: ignore[attr-defined]
