"""GET /api/node-status: the node's facts from the sources of /metrics and
/health (an association held open shows as open), the disk, the last backup
from the audit trail; only for the roles holding metrics:read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from dicom_node.node import Node
from dicom_node.services.access.users import create_user
from dicom_node.services.operations.backup import create_backup
from dicom_node.storage import FileStore
from tests.api.conftest import PASSWORD, ApiServer
from tests.builders import Scu
from tests.support import wait_for


def test_an_admin_reads_the_disk_the_queues_and_the_last_backup(
    api: ApiServer, tmp_path: Path
) -> None:
    admin = api.client("admin")
    first = admin.get("/api/node-status")
    assert first.status_code == 200, first.text
    status = first.json()
    assert status["status"] == "ok" and status["database"] is True
    disk = status["store_disk"]
    assert disk["free_bytes"] > 0 and disk["total_bytes"] >= disk["used_bytes"]
    assert set(status["associations"]) == {"open", "accepted", "rejected", "aborted"}
    assert status["queues"]["worklist_open"] == 0
    assert status["backup"] == {
        "configured": False,
        "interval_hours": 24.0,
        "last": None,
        "disk": None,
    }
    # a backup, for real: its Export event is the last backup
    create_backup(
        database_url=api.settings.database_url,
        store=FileStore(api.settings.data_dir, fsync=False),
        destination=tmp_path / "backup",
        fsync=False,
    )
    last = admin.get("/api/node-status").json()["backup"]["last"]
    assert last["outcome"] == "success"
    assert (last["files"], last["bytes"]) == (0, 0)  # no instances stored
    assert last["at"].endswith("Z") or last["at"].endswith("+00:00")


def test_only_the_roles_holding_metrics_read_see_it(api: ApiServer) -> None:
    allowed = ROLE_PERMISSIONS[Permission.VIEW_METRICS]
    for role in Role:
        code = api.client(role.value).get("/api/node-status").status_code
        assert code == (200 if role in allowed else 403), role


def _admin_client(node: Node) -> httpx.Client:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        create_user(
            session,
            username="status-admin",
            password=PASSWORD,
            role="admin",
            actor=Actor.system(SystemActor.CLI),
        )
    base = f"http://127.0.0.1:{node.http_port}"
    token = httpx.post(
        f"{base}/api/auth/token", data={"username": "status-admin", "password": PASSWORD}
    ).json()["access_token"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_an_open_association_is_counted_open_until_released(make_node: Any) -> None:
    node = make_node()
    with _admin_client(node) as client:

        def associations() -> dict[str, int]:
            answer = client.get("/api/node-status")
            assert answer.status_code == 200, answer.text
            counts: dict[str, int] = answer.json()["associations"]
            return counts

        before = associations()
        scu = Scu.open(node, "STATUS_SCU")
        try:
            assert wait_for(lambda: associations()["open"] == before["open"] + 1)
            assert associations()["accepted"] >= before["accepted"] + 1
        finally:
            scu.close()
        assert wait_for(lambda: associations()["open"] == before["open"])
