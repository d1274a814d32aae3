"""What the retrieve hands to pynetdicom's C-MOVE/C-GET loops
(scp/sub_operations.py, scp/outgoing.py NodeAE), and the pynetdicom internals
that relies on: an upgrade that changes them fails here, not in production.
The behaviour itself is tested over real associations in
tests/e2e/test_retrieve_counts.py."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.service_class import QueryRetrieveServiceClass

from dicom_node.scp.find_send import STOCK_SEND_MSG
from dicom_node.scp.outgoing import NodeAE
from dicom_node.scp.sub_operations import (
    DELIBERATE_FAILURE_FILTER,
    NOT_A_TRANSFER_SYNTAX,
    NotSent,
    StoredFile,
    SubOperationAssociation,
    Unsendable,
    deliberately_failing,
    sends_stored_files,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
LOOPS = (QueryRetrieveServiceClass._move_scp, QueryRetrieveServiceClass._get_scp)


def _mr_small() -> Path:
    return Path(str(get_testdata_file("MR_small.dcm")))


def test_an_unsendable_fails_in_send_c_store_before_anything_is_sent() -> None:
    assoc = Association(AE(), "requestor")
    sends_stored_files(assoc)
    assert type(assoc) is SubOperationAssociation
    sends_stored_files(assoc)  # idempotent
    with pytest.raises(NotSent, match="why"):
        assoc.send_c_store(Unsendable(MR, "1.2.3", "why"))


def test_the_association_subclass_adds_no_state() -> None:
    added = set(vars(SubOperationAssociation)) - {"__module__", "__doc__", "__qualname__"}
    assert added == {"send_c_store"}


def test_a_stored_file_is_only_its_file_meta_and_names_its_instance() -> None:
    path = _mr_small()
    stored = StoredFile.of(
        path,
        sop_class_uid=MR,
        sop_instance_uid="1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    assert stored is not None and stored.path == path
    assert "PixelData" not in stored
    # a file meta naming another instance than the index: sent decoded instead
    assert StoredFile.of(path, sop_class_uid=MR, sop_instance_uid="1.2.3",
                         transfer_syntax_uid="1.2.840.10008.1.2.1") is None  # fmt: skip


def test_node_ae_returns_the_association_it_is_given() -> None:
    assoc = Association(AE(), "requestor")
    assert NodeAE().associate("127.0.0.1", 1, ae_title="DEST", established=assoc) is assoc


def test_pynetdicom_s_deliberate_failure_lines_are_dropped_on_that_thread_only() -> None:
    record = logging.LogRecord(
        "pynetdicom.service_class",
        logging.WARNING,
        "",
        0,
        "C-STORE sub-operation failed.",
        (),
        None,
    )
    assert DELIBERATE_FAILURE_FILTER.filter(record)
    with deliberately_failing():
        assert not DELIBERATE_FAILURE_FILTER.filter(record)
    assert DELIBERATE_FAILURE_FILTER.filter(record)


# --------------------------------------------------------------------------- pynetdicom internals


def test_pynetdicom_s_loops_count_a_failing_send_c_store_failed_and_list_it() -> None:
    for loop in LOOPS:
        source = inspect.getsource(loop)
        sent = source.index(".send_c_store(")
        caught = source.index("except Exception as exc:", sent)
        assert source.index("store_results[1] += 1", caught) < source.index(
            "store_results[0] -= 1", caught
        )
        assert "_add_failed_instance(dataset)" in source or "failed_instances.append(" in source
        assert 'LOGGER.warning("C-STORE sub-operation failed.")' in source


def test_pynetdicom_s_move_loop_opens_the_destination_with_the_node_s_ae() -> None:
    source = inspect.getsource(QueryRetrieveServiceClass._move_scp)
    assert "kwargs.update(destination[2])" in source
    assert "store_assoc = self.ae.associate(" in source
    assert "status_ds = store_assoc.send_c_store(" in source
    get = inspect.getsource(QueryRetrieveServiceClass._get_scp)
    assert "status_ds = self.assoc.send_c_store(dataset, msg_id=msg_id)" in get


def test_pynetdicom_streams_a_path_from_after_its_file_meta() -> None:
    send = inspect.getsource(Association.send_c_store)
    assert "if not _config.STORE_SEND_CHUNKED_DATASET:" in send
    assert "req._dataset_path = (fpath, offset)" in send
    assert "allow_conversion = False" in send  # only in the stored syntax
    assert hasattr(_config, "STORE_SEND_CHUNKED_DATASET")
    meta, offset = split_dataset(_mr_small())
    assert "TransferSyntaxUID" in meta and offset > 132


def test_pynetdicom_signals_a_sent_message_before_encoding_it() -> None:
    """The final response's Error Comment is added at EVT_DIMSE_SENT."""
    source = inspect.getsource(STOCK_SEND_MSG)  # pynetdicom's own, not the C-FIND patch
    assert source.index("evt.EVT_DIMSE_SENT") < source.index("dimse_msg.encode_msg(")


def test_the_final_response_is_the_reused_pending_message() -> None:
    """Why every instance must go through the loop: the final response keeps
    the Pending message's remaining count."""
    for loop in LOOPS:
        source = inspect.getsource(loop)
        final = source[source.rindex("# If not already done, send the final") :]
        assert "NumberOfRemainingSuboperations" not in final


def test_an_unsendable_names_no_transfer_syntax() -> None:
    ds = Dataset()
    ds.file_meta = Unsendable(MR, "1.2.3", "why").file_meta
    assert ds.file_meta.TransferSyntaxUID == NOT_A_TRANSFER_SYNTAX
    with pytest.raises(ValueError, match="not a transfer syntax"):
        _ = ds.file_meta.TransferSyntaxUID.is_implicit_VR
