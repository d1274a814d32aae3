"""Fixtures of the interop tests: one private network namespace, the test
studies and one ``dicom-node serve`` (SQLite) per pytest process, the peers per
module. Every test runs with its thread inside the namespace (``_inside``).

Run as root (a network namespace needs CAP_SYS_ADMIN; CI runs as root):
``pytest -n0 tests/interop`` or ``pytest -m interop``; the rest of the suite
alone: ``pytest -m "not interop"``. Outside CI a missing unshare, Orthanc or
DCMTK skips these tests with the reason; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.services.access.users import create_user
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.storage import FileStore
from tests.conftest import CHEAP_HASHING
from tests.interop.netns import NetNamespace, missing_prerequisite
from tests.interop.studies import Study, build_studies
from tests.support import Served, require

# The peers the node knows (PEERS), at fixed ports: inside the private namespace
# nothing else listens, and each pytest process has a namespace of its own.
ORTHANC_ALL = ("ORTHANC", 4242, 8042)  # accepts every transfer syntax (its default)
ORTHANC_RAW = ("ORTHANC_RAW", 4243, 8043)  # accepts uncompressed syntaxes only
STORESCP_ALL = ("STORESCP_ALL", 11201)  # storescp +xa
STORESCP_RAW = ("STORESCP_RAW", 11202)  # storescp with its default: uncompressed only
REFUSER = ("REFUSER", 11203)  # refuses chosen instances with 0xA700
PEERS = ",".join(
    f"{aet}@127.0.0.1:{port}"
    for aet, port, *_ in (ORTHANC_ALL, ORTHANC_RAW, STORESCP_ALL, STORESCP_RAW, REFUSER)
)
AUDITOR, AUDITOR_PASSWORD = "interop-auditor", "interop auditor password"
ADMIN, ADMIN_PASSWORD = "interop-admin", "interop admin password"

# name -> a function giving the tail of that process's log, for failed tests' reports
LOGS: dict[str, Callable[[], str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the tail of every running peer's log."""
    report = yield
    if report.failed and LOGS:
        for name, log_tail in list(LOGS.items()):
            report.sections.append((f"{name} log (tail)", log_tail()))
    return report


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    why = missing_prerequisite()
    require(why is None, why or "")
    namespace = NetNamespace()
    yield namespace
    namespace.close()


@pytest.fixture(autouse=True)
def _inside(netns: NetNamespace) -> Iterator[None]:
    with netns.entered():
        yield


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Study]:
    return build_studies(tmp_path_factory.mktemp("interop-studies"))


@dataclass
class NodeUnderTest:
    served: Served
    dicom_port: int
    http_port: int
    data_dir: Path

    def stored_path(self, sop_instance_uid: str) -> Path:
        """The node's own file of an instance (its index says where)."""
        database = self.data_dir / "dicom-node.sqlite3"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            row = connection.execute(
                "SELECT file_path FROM dicom_instances WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        assert row is not None, f"the node holds no instance {sop_instance_uid}"
        return self.data_dir / "instances" / str(row[0])

    def log_tail(self, lines: int = 60) -> str:
        return "".join(self.served.lines[-lines:])

    def signed_in(self, username: str, password: str) -> httpx.Client:
        """An httpx client on the node's HTTP API with a bearer token of ``username``."""
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)
        token = client.post("/api/auth/token", data={"username": username, "password": password})
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return client

    def audit_events(self, **filters: str) -> list[dict[str, Any]]:
        """Audit events (newest first) as an auditor reads them: signed in to the
        node's HTTP API, ``GET /api/audit-events`` with exact-match filters."""
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30) as client:
            token = client.post(
                "/api/auth/token", data={"username": AUDITOR, "password": AUDITOR_PASSWORD}
            )
            token.raise_for_status()
            answer = client.get(
                "/api/audit-events",
                params={**filters, "limit": "100"},
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )
            answer.raise_for_status()
            return list(answer.json()["items"])


def _load(data_dir: Path, template: Path, source: Path) -> None:
    """The node's database and store before it starts: every test file imported
    through the service behind ``dicom-node import`` and C-STORE (each file keeps
    its transfer syntax and bytes), and an auditor to read the trail over HTTP.
    In this process: two CLI runs would cost two interpreter starts."""
    data_dir.mkdir()
    database = data_dir / "dicom-node.sqlite3"
    shutil.copyfile(template, database)  # migrated once per session (tests/conftest.py)
    db = Database(f"sqlite:///{database}")
    try:
        summary = import_files(
            db,
            FileStore(data_dir, fsync=False),
            list(iter_files([source])),
            policy=IngestPolicy(),
            actor=SystemActor.IMPORT,
        )
        assert summary.ok, summary.describe()
        with db.unit_of_work() as session:
            for username, password, role in (
                (AUDITOR, AUDITOR_PASSWORD, "auditor"),
                (ADMIN, ADMIN_PASSWORD, "admin"),
            ):
                create_user(
                    session,
                    username=username,
                    password=password,
                    role=role,
                    actor=Actor.system(SystemActor.CLI),
                )
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def node(
    netns: NetNamespace,
    studies: dict[str, Study],
    sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NodeUnderTest]:
    """``dicom-node serve`` on SQLite with every test study stored and the peers
    above known."""
    base = tmp_path_factory.mktemp("interop-node")
    settings = {
        "peers": PEERS,
        "fsync": "false",
        "study_stable_seconds": "3600",
        "shutdown_grace_seconds": "1",
        **{name: str(value) for name, value in CHEAP_HASHING.items()},
    }
    source = next(iter(studies.values())).instances[0].path.parent.parent
    _load(base / "data", sqlite_template, source)
    with netns.entered():
        served = Served(base, **settings)
    try:
        dicom_port, http_port = served.ports()
        node = NodeUnderTest(served, dicom_port, http_port, base / "data")
        LOGS["node"] = node.log_tail
        yield node
    finally:
        LOGS.pop("node", None)
        served.stop()
