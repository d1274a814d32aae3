"""The Export audit (110106) of moves that partly fail, read as an auditor reads
it: through the node's HTTP API (issue 14, items 4 and 6).

- REFUSER, a Storage SCP that takes every syntax and answers 0xA700 for chosen
  SOP Instance UIDs: the C-MOVE ends 0xB000 with those UIDs in its Failed SOP
  Instance UID List, and the audit event lists the same UIDs, the counts, and
  an outcome that is not success.
- The damaged study to a storescp that accepts only uncompressed syntaxes: the
  instance nothing can decode is the one failed sub-operation, reported the
  same way; the others arrive.
- A move where nothing fails is audited as a success with its count (the
  control: the outcome is not "failure" by default).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.interop.conftest import LOGS, REFUSER, STORESCP_RAW, NodeUnderTest
from tests.interop.netns import NetNamespace
from tests.interop.peers import RefusingStoreScp, Storescp, final_counts, run_tool
from tests.interop.studies import DAMAGED, UNDECODABLE, Study
from tests.support import dcmtk_tool

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def refuser(netns: NetNamespace, node: NodeUnderTest) -> Iterator[RefusingStoreScp]:
    with netns.entered():
        scp = RefusingStoreScp(aet=REFUSER[0], port=REFUSER[1])
    yield scp
    scp.stop()


@pytest.fixture(scope="module")
def storescp_raw(
    netns: NetNamespace, node: NodeUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Storescp]:
    dcmtk_tool("storescp")
    with netns.entered():
        scp = Storescp(tmp_path_factory.mktemp("audit-storescp"), aet=STORESCP_RAW[0],
                       port=STORESCP_RAW[1])  # fmt: skip
    LOGS[f"storescp {scp.aet}"] = scp.log_tail
    yield scp
    LOGS.pop(f"storescp {scp.aet}", None)
    scp.stop()


def c_move(node: NodeUnderTest, study: Study, destination: str) -> tuple[Dataset, list[str]]:
    """A C-MOVE of the study at STUDY level: its final response (status and
    counts) and the Failed SOP Instance UID List of its identifier."""
    ae = AE(ae_title="AUDITMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.study_instance_uid
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    final, report = responses[-1]
    assert final, "no final C-MOVE response"
    failed = report.get("FailedSOPInstanceUIDList", []) if report is not None else []
    return final, [str(failed)] if isinstance(failed, str) else [str(uid) for uid in failed]


def export_event(node: NodeUnderTest, study: Study, destination: str) -> dict[str, Any]:
    """The newest Export event of a move of ``study`` to ``destination``."""
    found = node.audit_events(event_code="110106", study_instance_uid=study.study_instance_uid)
    events = [e for e in found if e["details"].get("destination") == destination]
    assert events, f"no Export event for a move to {destination}: {found}"
    return events[0]  # newest first


def _count(details: dict[str, Any], name: str) -> int:
    return int(details.get("counts", {}).get(name, 0))


def _failed_uids(details: dict[str, Any]) -> list[str]:
    """The failed instances the event lists (each with the reason it failed)."""
    failed = details.get("failed_instances", [])
    assert all(item.get("reason") for item in failed), failed
    return [item["sop_instance_uid"] for item in failed]


def test_instances_a_destination_refuses_are_failed_in_status_and_audit(
    node: NodeUnderTest, studies: dict[str, Study], refuser: RefusingStoreScp
) -> None:
    study = studies["mixed"]
    # every third instance: compressed and uncompressed ones, several SOP classes
    refused = {i.sop_instance_uid for i in study.instances[::3]}
    refuser.refuse = refused
    refuser.stored.clear()
    refuser.refused.clear()
    final, failed = c_move(node, study, REFUSER[0])
    sent = len(study.instances) - len(refused)
    assert set(refuser.refused) == refused
    assert set(refuser.stored) == study.sop_instance_uids - refused
    assert final.Status == 0xB000
    assert (
        final.get("NumberOfRemainingSuboperations", 0),
        final.NumberOfCompletedSuboperations,
        final.NumberOfFailedSuboperations,
        final.NumberOfWarningSuboperations,
    ) == (0, sent, len(refused), 0)
    assert set(failed) == refused

    event = export_event(node, study, REFUSER[0])
    assert event["outcome"] != "success", event
    details = event["details"]
    assert set(_failed_uids(details)) == refused, details
    assert (_count(details, "completed"), _count(details, "failed")) == (sent, len(refused)), (
        details
    )


def test_an_instance_nothing_can_decode_fails_alone_to_an_uncompressed_only_destination(
    node: NodeUnderTest, studies: dict[str, Study], storescp_raw: Storescp
) -> None:
    study = studies[UNDECODABLE.kind]
    (damaged,) = (i.sop_instance_uid for i in study.instances if i.source == DAMAGED)
    storescp_raw.clear()
    final, failed = c_move(node, study, STORESCP_RAW[0])
    assert set(storescp_raw.received()) == study.sop_instance_uids - {damaged}
    assert final.Status == 0xB000
    assert (
        final.get("NumberOfRemainingSuboperations", 0),
        final.NumberOfCompletedSuboperations,
        final.NumberOfFailedSuboperations,
    ) == (0, len(study.instances) - 1, 1)
    assert failed == [damaged]

    event = export_event(node, study, STORESCP_RAW[0])
    assert event["outcome"] != "success", event
    details = event["details"]
    assert _failed_uids(details) == [damaged], details
    assert _count(details, "failed") == 1, details


def test_getscu_of_an_instance_nothing_can_decode(
    node: NodeUnderTest, studies: dict[str, Study], tmp_path: Path
) -> None:
    """The C-GET counterpart: getscu offers uncompressed syntaxes only (its
    default), so the damaged instance is the one failed sub-operation of the
    final response and of the Export event (its destination: getscu's AE)."""
    study = studies[UNDECODABLE.kind]
    (damaged,) = (i.sop_instance_uid for i in study.instances if i.source == DAMAGED)
    result = run_tool(
        [dcmtk_tool("getscu"), "-d", "-S", "+B", "-aet", "AUDITGET", "-aec", "DICOM_NODE",
         "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study.study_instance_uid}",
         "127.0.0.1", str(node.dicom_port)],
    )  # fmt: skip
    received = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in tmp_path.iterdir()
    }
    assert received == study.sop_instance_uids - {damaged}
    output = result.stdout + result.stderr
    assert "0xb000" in output.lower()
    assert final_counts(output) == {
        "remaining": 0,
        "completed": len(study.instances) - 1,
        "failed": 1,
        "warning": 0,
    }, output[-3000:]
    event = export_event(node, study, "AUDITGET")
    assert event["outcome"] != "success", event
    assert _failed_uids(event["details"]) == [damaged], event["details"]


def test_a_move_where_nothing_fails_is_audited_as_success(
    node: NodeUnderTest, studies: dict[str, Study], refuser: RefusingStoreScp
) -> None:
    study = studies["j2k-lossless"]
    refuser.refuse = set()
    final, failed = c_move(node, study, REFUSER[0])
    assert (final.Status, failed) == (0x0000, [])
    event = export_event(node, study, REFUSER[0])
    assert event["outcome"] == "success", event
    details = event["details"]
    assert _failed_uids(details) == [], details
    assert _count(details, "completed") == len(study.instances), details
