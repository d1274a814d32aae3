"""C-ECHO and association acceptance, driven by DCMTK's echoscu and pynetdicom."""

from __future__ import annotations

import subprocess

from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.node import Node
from tests.support import dcmtk_env, dcmtk_tool, wait_for


def echoscu(
    port: int, *, called: str = "DICOM_NODE", calling: str = "ECHOSCU"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            dcmtk_tool("echoscu"),
            "-aec",
            called,
            "-aet",
            calling,
            "-to",
            "10",
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=30,
    )


def rejected_associations(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "association_rejected"))
        )


def test_dcmtk_echoscu_gets_success(node: Node) -> None:
    result = echoscu(node.dicom_port)
    assert result.returncode == 0, result.stderr
    assert rejected_associations(node) == []


def test_pynetdicom_echo_gets_status_success(node: Node) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


def test_wrong_called_ae_title_is_rejected_with_reason_7_and_audited(node: Node) -> None:
    result = echoscu(node.dicom_port, called="SOMEONE_ELSE")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr
    assert wait_for(lambda: len(rejected_associations(node)) == 1)
    event = rejected_associations(node)[0]
    assert (event.event_code, event.outcome) == ("110113", "minor_failure")
    assert event.actor == "ECHOSCU"
    assert event.target_id == "SOMEONE_ELSE"
    assert event.reason == "called AE title not recognised"
    assert event.source_address and event.source_address.startswith("127.0.0.1:")


def test_calling_ae_title_outside_the_allowed_list_is_rejected_with_reason_3(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(allowed_calling_aets=["CT_MAIN_1"])
    refused = echoscu(node.dicom_port, calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert wait_for(lambda: len(rejected_associations(node)) == 1)
    assert rejected_associations(node)[0].reason == "calling AE title not recognised"
    assert echoscu(node.dicom_port, calling="CT_MAIN_1").returncode == 0


def test_configured_ae_title_is_the_one_answered(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(ae_title="ARCHIVE")
    assert echoscu(node.dicom_port, called="ARCHIVE").returncode == 0
    assert echoscu(node.dicom_port, called="DICOM_NODE").returncode != 0


def test_pynetdicom_identifier_logging_is_off(node: Node) -> None:
    assert pynetdicom_config.LOG_REQUEST_IDENTIFIERS is False
    assert pynetdicom_config.LOG_RESPONSE_IDENTIFIERS is False


def test_the_running_scp_copies_its_contexts_cheaply_per_association(node: Node) -> None:
    from dicom_node.scp.server import DicomServer, SharedUidContexts

    assert isinstance(node.dicom, DicomServer)
    assert isinstance(node.dicom._server.contexts, SharedUidContexts)  # type: ignore[union-attr]
