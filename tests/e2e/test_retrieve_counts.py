"""The counts, lists and bytes of C-MOVE and C-GET responses (issue 14 review):
an instance the node cannot send is a failed sub-operation in every response
(never "remaining"), a known destination the node cannot use is 0xA702 with
everything listed, an instance sent in its stored syntax is its stored bytes,
more than 65535 instances are refused before anything is sent, and a retrieve
that matches nothing is audited too.

Real loopback associations (pynetdicom peers), SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import text

from dicom_node.node import Node
from tests.builders import (
    UNCOMPRESSED,
    Destination,
    compressed_study,
    export_audits,
    import_study,
    pydicom_testfile,
    retrieve_identifier,
    stored_dataset_bytes,
    stored_files,
)
from tests.support import free_port

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
GET = StudyRootQueryRetrieveInformationModelGet
MOVE = StudyRootQueryRetrieveInformationModelMove
NO_CONTEXT = "no presentation context accepted for its SOP class"

Responses = list[tuple[Dataset, Dataset | None]]


@pytest.fixture
def destinations() -> Iterator[list[Destination]]:
    started: list[Destination] = []
    yield started
    for destination in started:
        destination.stop()


def _failed_list(identifier: Dataset | None) -> list[str]:
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return []
    value = identifier.FailedSOPInstanceUIDList
    return [value] if isinstance(value, str) else [str(uid) for uid in value]


def _count(status: Dataset, which: str) -> int:
    return int(status.get(f"NumberOf{which}Suboperations", 0) or 0)


def _assert_consistent(responses: Responses, total: int) -> None:
    """Every Pending response accounts for every sub-operation; the final one
    says none remains (PS3.4 C.4.2.3.1, C.4.3.3.1)."""
    for status, _ in responses[:-1]:
        assert status.Status in (0xFF00, 0xFF01)
        parts = ("Remaining", "Completed", "Failed", "Warning")
        assert sum(_count(status, part) for part in parts) == total
    final, identifier = responses[-1]
    assert _count(final, "Remaining") == 0
    assert _count(final, "Failed") == len(_failed_list(identifier))


def _get(node: Node, identifier: Dataset, sop_classes: list[str], **kwargs: Any) -> Responses:
    ae = AE(ae_title="PYGET")
    ae.add_requested_context(GET)
    syntaxes = kwargs.pop("syntaxes", UNCOMPRESSED)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, syntaxes)
    on_store = kwargs.pop("on_store", lambda event: 0x0000)
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title="DICOM_NODE",
        ext_neg=[build_role(uid, scp_role=True) for uid in sop_classes],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    kwargs.setdefault("on_assoc", lambda assoc: None)(assoc)
    try:
        return [(s, i) for s, i in assoc.send_c_get(identifier, GET, msg_id=7) if s]
    finally:
        assoc.release()


def _move(node: Node, identifier: Dataset, destination: str = "DEST") -> Responses:
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        return [(s, i) for s, i in assoc.send_c_move(identifier, destination, MOVE) if s]
    finally:
        assoc.release()


def _ct_of(by_uid: dict[str, str]) -> str:
    return next(uid for uid, name in by_uid.items() if name == "CT_small.dcm")


# ------------------------------------------------------------ left-out instances


def test_an_instance_the_node_cannot_send_is_failed_in_the_final_response_not_remaining(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    """C-GET and C-MOVE where the peer has no context for CT: the final
    response counts the CT instance failed, lists it, and says nothing
    remains; the Error Comment gives the node's reason."""
    study_uid, by_uid = compressed_study(tmp_path, ["MR_small.dcm", "CT_small.dcm", "MR_small.dcm"])
    ct = _ct_of(by_uid)
    destination = Destination(per_class={CT: []}, syntaxes=None)
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    import_study(node, tmp_path)
    identifier = retrieve_identifier("STUDY", StudyInstanceUID=study_uid)

    for responses in (_get(node, identifier, [MR]), _move(node, identifier)):
        _assert_consistent(responses, 3)
        final, listed = responses[-1]
        assert final.Status == 0xB000
        assert (_count(final, "Completed"), _count(final, "Failed")) == (2, 1)
        assert _failed_list(listed) == [ct]
        assert final.ErrorComment == f"1 failed: {NO_CONTEXT}"[:64]
    assert set(destination.received) == set(by_uid) - {ct}
    for export in export_audits(node):
        assert export.details["counts"]["failed"] == 1
        assert export.details["failed_instances"] == [
            {"sop_instance_uid": ct, "reason": NO_CONTEXT}
        ]


def test_a_cancel_counts_left_out_instances_failed_as_the_audit_does(
    make_node: Any, tmp_path: Path
) -> None:
    """C-CANCEL after the first stored instance; the CT instance before it had
    no context: the Cancel response counts it failed (and lists it), the rest
    remaining, as the Export event does."""
    names = ["CT_small.dcm", "MR_small.dcm", "MR_small.dcm", "MR_small.dcm"]
    study_uid, by_uid = compressed_study(tmp_path, names)
    node = make_node()
    import_study(node, tmp_path)
    received: list[str] = []
    holder: dict[str, Any] = {}

    def on_store(event: Any) -> int:
        if not received:
            holder["assoc"].send_c_cancel(7, query_model=GET)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    responses = _get(
        node,
        retrieve_identifier("STUDY", StudyInstanceUID=study_uid),
        [MR],
        on_store=on_store,
        on_assoc=lambda assoc: holder.__setitem__("assoc", assoc),
    )

    final, listed = responses[-1]
    assert final.Status == 0xFE00
    (export,) = export_audits(node)
    counts = export.details["counts"]
    failed = [entry["sop_instance_uid"] for entry in export.details["failed_instances"]]
    assert _failed_list(listed) == failed
    assert _count(final, "Failed") == counts["failed"] == len(failed)
    assert _count(final, "Completed") == counts["completed"] == len(received)
    assert _count(final, "Remaining") == counts["cancelled"]
    assert counts["failed"] + counts["completed"] + counts["cancelled"] == len(names)
    assert set(failed) <= {_ct_of(by_uid)}


# ------------------------------------------------- a known destination not usable


def test_a_destination_refusing_the_association_or_every_context_is_a702_with_all_listed(
    make_node: Any, tmp_path: Path
) -> None:
    no_context = AE(ae_title="NOCTX")
    no_context.add_supported_context(Verification)
    rejecting = AE(ae_title="OTHER")
    rejecting.require_called_aet = True
    rejecting.add_supported_context(MR)
    ports = {"NOCTX": free_port(), "REJ": free_port()}
    servers = [
        no_context.start_server(("127.0.0.1", ports["NOCTX"]), block=False),
        rejecting.start_server(("127.0.0.1", ports["REJ"]), block=False),
    ]
    try:
        node = make_node(peers=",".join(f"{ae}@127.0.0.1:{port}" for ae, port in ports.items()))
        study_uid, by_uid = compressed_study(tmp_path, ["MR_small.dcm", "CT_small.dcm"])
        import_study(node, tmp_path)
        identifier = retrieve_identifier("STUDY", StudyInstanceUID=study_uid)
        finals = {ae: _move(node, identifier, ae)[-1] for ae in ports}
    finally:
        for server in servers:
            server.shutdown()

    for final, listed in finals.values():
        assert final.Status == 0xA702
        assert (_count(final, "Completed"), _count(final, "Failed")) == (0, 2)
        assert sorted(_failed_list(listed)) == sorted(by_uid)
    reasons = {
        "NOCTX": "destination accepted no presentation context",
        "REJ": "destination refused the association",
    }
    for export in export_audits(node):
        why = reasons[export.details["destination"]]
        assert (export.outcome, export.reason) == ("serious_failure", why)
        assert export.details["counts"]["failed"] == 2
        assert {entry["reason"] for entry in export.details["failed_instances"]} == {why}


# -------------------------------------------------------------- byte identity


BYTE_FILES = ["explicit_VR-UN.dcm", "image_dfl.dcm", "MR_small.dcm"]


def _copy_unchanged(tmp_path: Path, names: list[str]) -> dict[str, str]:
    """The test files imported as they are (not re-written by pydicom): SOP
    Instance UID -> StudyInstanceUID."""
    folder = tmp_path / "in-files"
    folder.mkdir()
    studies = {}
    for index, name in enumerate(names):
        path = pydicom_testfile(name)
        shutil.copy(path, folder / f"{index}.dcm")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies[str(ds.SOPInstanceUID)] = str(ds.StudyInstanceUID)
    return studies


def test_c_move_in_the_stored_syntax_sends_the_stored_bytes(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    """VR UN elements stay UN (pydicom re-encoding gave them their dictionary
    VR), a Deflated data set is its stored deflated stream."""
    destination = Destination(None)  # every syntax
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    studies = _copy_unchanged(tmp_path, BYTE_FILES)
    import_study(node, tmp_path)

    responses = _move(
        node, retrieve_identifier("STUDY", StudyInstanceUID="\\".join(studies.values()))
    )

    assert responses[-1][0].Status == 0x0000
    stored = stored_files(node)
    for uid in studies:
        syntax, path = stored[uid]
        received = destination.received[uid]
        assert received.transfer_syntax == syntax
        assert received.raw == stored_dataset_bytes(path), uid
    (export,) = export_audits(node)
    assert export.details["counts"]["sent_as_stored"] == len(BYTE_FILES)


def test_c_get_in_the_stored_syntax_sends_the_stored_bytes(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    studies = _copy_unchanged(tmp_path, BYTE_FILES)
    import_study(node, tmp_path)
    stored = stored_files(node)
    received: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    sop_classes = sorted(
        {
            str(pydicom.dcmread(pydicom_testfile(n), stop_before_pixels=True).SOPClassUID)
            for n in BYTE_FILES
        }
    )
    syntaxes = sorted({syntax for syntax, _ in stored.values()})
    responses = _get(
        node,
        retrieve_identifier("STUDY", StudyInstanceUID="\\".join(studies.values())),
        sop_classes,
        syntaxes=syntaxes,
        on_store=on_store,
    )

    assert responses[-1][0].Status == 0x0000
    for uid in studies:
        assert received[uid] == stored_dataset_bytes(stored[uid][1]), uid


# ------------------------------------------------------- more than 65535 / none


def _multiply(node: Node, copies: int) -> None:
    """``copies`` more index rows of the one stored instance (new SOP Instance
    UIDs, same file): only the count matters to the plan."""
    assert node.db is not None
    with node.db.engine.begin() as connection:
        result = connection.execute(text("SELECT * FROM dicom_instances WHERE 1 = 0"))
        names = [column for column in list(result.keys()) if column != "id"]
        selected = ", ".join(
            "'2.25.' || CAST(n.v AS VARCHAR(8))" if c == "sop_instance_uid" else c for c in names
        )
        # the table's own column names only
        statement = (
            "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < :copies) "  # noqa: S608
            f"INSERT INTO dicom_instances ({', '.join(names)}) "
            f"SELECT {selected} FROM dicom_instances, n"
        )
        connection.execute(text(statement), {"copies": copies})


@pytest.mark.timeout(300)
def test_more_than_65535_instances_are_refused_before_anything_is_sent(
    make_node: Any, tmp_path: Path, destinations: list[Destination]
) -> None:
    destination = Destination(None)
    destinations.append(destination)
    node = make_node(peers=f"DEST@127.0.0.1:{destination.port}")
    study_uid, _ = compressed_study(tmp_path, ["CT_small.dcm"])
    import_study(node, tmp_path)
    _multiply(node, 65535)  # 65536 instances
    identifier = retrieve_identifier("STUDY", StudyInstanceUID=study_uid)

    for responses in (_move(node, identifier), _get(node, identifier, [CT])):
        ((final, _),) = responses
        assert final.Status == 0xA701  # out of resources: unable to calculate matches
        assert final.ErrorComment == "more than 65535 instances: narrow the retrieve"
    assert destination.received == {}
    exports = export_audits(node)
    assert len(exports) == 2
    for export in exports:
        assert export.reason == "more than 65535 instances: narrow the retrieve"
        assert export.outcome == "minor_failure"


def test_a_retrieve_matching_nothing_is_audited_with_zero_counts(
    make_node: Any, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens: no association is needed
    node = make_node(peers=f"DEST@127.0.0.1:{port}")
    identifier = retrieve_identifier("STUDY", StudyInstanceUID=generate_uid())

    for responses in (_move(node, identifier), _get(node, identifier, [MR])):
        ((final, _),) = responses
        assert final.Status == 0x0000
        assert _count(final, "Completed") == _count(final, "Failed") == 0
    exports = export_audits(node)
    assert [e.details["destination"] for e in exports] == ["DEST", "PYGET"]
    for export in exports:
        assert export.outcome == "success"
        assert export.reason is None
        assert not any(export.details["counts"].values())
        assert export.details["failed_instances"] == []
