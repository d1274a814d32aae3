"""DICOM worker processes sharing one port (dicom_workers > 1)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.node import Node
from dicom_node.workers import WorkerPool
from tests.dicomfiles import ct_dataset, write
from tests.support import Served, dcmtk_env, dcmtk_tool, wait_for


def echoscu(port: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", "DICOM_NODE", "127.0.0.1", str(port)],
        capture_output=True,
        env=dcmtk_env(),
        timeout=30,
    )


def pool(node: Node) -> WorkerPool:
    assert isinstance(node.dicom, WorkerPool)
    return node.dicom


def test_workers_serve_one_port_and_a_killed_worker_is_replaced(make_node) -> None:
    node = make_node(dicom_workers=2)
    workers = pool(node)
    before = workers.pids
    assert len(before) == 2
    assert echoscu(node.dicom_port).returncode == 0
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(workers.pids) == 2 and before[0] not in workers.pids, timeout=30)
    # every connection is served, whichever worker the kernel hands it to
    for _ in range(6):
        assert echoscu(node.dicom_port).returncode == 0
    health = httpx.get(f"http://127.0.0.1:{node.http_port}/health", timeout=10)
    assert health.json()["components"]["dicom"] is True


def test_a_worker_stopped_cleanly_leaves_the_port_to_the_others(make_node) -> None:
    # a clean stop closes the worker's copy of the listening socket: it must not
    # shut the shared socket down for every worker
    node = make_node(dicom_workers=2, peers="PACS@127.0.0.1:104")
    workers = pool(node)
    before = workers.pids
    os.kill(before[0], signal.SIGTERM)
    assert wait_for(lambda: before[0] not in workers.pids and len(workers.pids) == 2, timeout=30)
    for _ in range(8):
        assert echoscu(node.dicom_port).returncode == 0


def test_rejections_and_transfers_in_workers_are_audited(make_node, tmp_path: Path) -> None:
    node = make_node(dicom_workers=2, allowed_calling_aets=["STORESCU"])
    files = [
        write(ct_dataset(study_uid=generate_uid(), instance_number=n), tmp_path / f"{n}.dcm")
        for n in range(3)
    ]
    refused = subprocess.run(
        [dcmtk_tool("echoscu"), "-aet", "INTRUDER", "-aec", "DICOM_NODE", "127.0.0.1",
         str(node.dicom_port)],
        capture_output=True,
        env=dcmtk_env(),
        timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0
    sent = subprocess.run(
        [dcmtk_tool("storescu"), "-aet", "STORESCU", "-aec", "DICOM_NODE", "127.0.0.1",
         str(node.dicom_port), *map(str, files)],
        capture_output=True,
        env=dcmtk_env(),
        timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert node.db is not None

    def audited() -> set[str]:
        with node.db.read() as session:  # type: ignore[union-attr]
            return set(session.scalars(select(AuditEvent.action)))

    assert wait_for(lambda: {"association_rejected", "instances_received"} <= audited())
    with node.db.read() as session:
        assert session.scalar(select(func.count(DicomInstance.id))) == 3


def test_serve_with_workers_stops_them_all_on_sigterm(tmp_path: Path, served: list[Served]) -> None:
    server = Served(tmp_path, dicom_workers="2")
    served.append(server)
    dicom_port, _ = server.ports()
    server.wait_for_line(r"DICOM SCP listening on .* \(2 worker processes\)")
    assert echoscu(dicom_port).returncode == 0
    children = _children(server.process.pid)
    assert len(children) == 2
    assert server.stop(signal.SIGTERM) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)


def test_workers_of_a_killed_main_process_exit_by_themselves(
    tmp_path: Path, served: list[Served]
) -> None:
    server = Served(tmp_path, dicom_workers="2")
    served.append(server)
    server.ports()
    children = _children(server.process.pid)
    server.process.kill()
    server.process.wait()
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 15)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]
