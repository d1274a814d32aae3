"""The HTTP API served for real (uvicorn on an ephemeral port) over the test database."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.deps import ApiContext, proxy_options
from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.node import bind_http_socket
from dicom_node.scp.send import StudySender
from dicom_node.services.access.users import create_user
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.conftest import node_settings

PASSWORD = "correct horse battery"
_names = itertools.count()


@dataclass
class ApiServer:
    base_url: str
    db: Database
    settings: Settings
    clients: list[httpx.Client] = field(default_factory=list)

    def anonymous(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=30)
        self.clients.append(client)
        return client

    def user(self, role: str, *, username: str | None = None, **extra: Any) -> str:
        """Create a user with the test password; returns the username."""
        name = username or f"{role.replace('_', '-')}{next(_names)}"
        with self.db.unit_of_work() as session:
            create_user(
                session,
                username=name,
                password=PASSWORD,
                role=role,
                display_name=extra.pop("display_name", name.title()),
                actor=Actor.system(SystemActor.CLI),
                **extra,
            )
        return name

    def token(self, username: str, password: str = PASSWORD) -> str:
        response = self.anonymous().post(
            "/api/auth/token", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def client(self, role: str, **extra: Any) -> httpx.Client:
        """A signed-in client for a new user of ``role``; ``client.username`` names it."""
        name = self.user(role, **extra)
        client = httpx.Client(
            base_url=self.base_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token(name)}"},
        )
        client.username = name  # type: ignore[attr-defined]
        self.clients.append(client)
        return client


def serve(db: Database, settings: Settings) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = bind_http_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(
            ApiContext(
                db=db,
                settings=settings,
                # as node.py builds it (the tests' peers use no TLS)
                sender=StudySender.from_settings(
                    settings, FileStore(settings.data_dir, fsync=False), tls=None
                ),
            )
        ),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        ws_max_size=settings.graphql_max_request_bytes,  # as node.py
        # as node.py: X-Forwarded-For only from settings.trusted_proxies
        **proxy_options(settings.trusted_proxies),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "API did not start"
        time.sleep(0.01)
    return server, thread, port


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    """Override in a test module to change settings (e.g. the duplicate window)."""
    return node_settings(db_url, tmp_path / "data")


@pytest.fixture
def api(db: Database, api_settings: Settings) -> Iterator[ApiServer]:
    server, thread, port = serve(db, api_settings)
    served = ApiServer(base_url=f"http://127.0.0.1:{port}", db=db, settings=api_settings)
    yield served
    for client in served.clients:
        client.close()
    server.should_exit = True
    thread.join(timeout=10)
