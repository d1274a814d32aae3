"""Stopping `dicom-node serve` with live event streams open (issue 15, item 4).

Each open ``/api/events`` stream gets a final ``event: shutdown`` and ends; the
node's log has no ERROR line or traceback; the process exits promptly with 0.
Before, uvicorn cancelled the streams after its graceful-shutdown timeout: the
clients saw the connection cut without an end event and the log had two ERROR
tracebacks.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.services.access.users import create_user
from tests.conftest import CHEAP_HASHING
from tests.support import Served

PASSWORD = "correct horse battery"
CHEAP = {name: str(value) for name, value in CHEAP_HASHING.items()}
# signal to exit: the streams end in well under a second; the rest is the DICOM
# worker processes stopping (about 2 s on a busy 2-core machine)
PROMPT_EXIT_SECONDS = 10.0


class StreamReader:
    """One SSE stream read on a thread: every event, and how the stream ended."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(url, token), daemon=True)
        self._thread.start()

    def _read(self, url: str, token: str) -> None:
        event: dict[str, Any] = {}
        try:
            with httpx.stream(
                "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith(": stream for "):
                        self.opened.set()
                    elif line == "":
                        if event:
                            self.events.append(event)
                        event = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        event[name] = value
        except BaseException as exc:  # the test reports it (an assertion too)
            self.error = exc
        finally:
            self.ended.set()


def _token(db_url: str, base_url: str) -> str:
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            create_user(
                session,
                username="watcher",
                password=PASSWORD,
                role="scheduler",
                display_name="Stream Watcher",
                actor=Actor.system(SystemActor.CLI),
            )
    finally:
        db.dispose()
    response = httpx.post(
        f"{base_url}/api/auth/token", data={"username": "watcher", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_open_streams_get_a_shutdown_event_and_the_node_stops_cleanly(
    db_url: str, tmp_path: Path, served: list[Served], sig: int
) -> None:
    node = Served(tmp_path, database_url=db_url, **CHEAP)
    served.append(node)
    _, http_port = node.ports()
    base_url = f"http://127.0.0.1:{http_port}"
    token = _token(db_url, base_url)
    readers = [StreamReader(f"{base_url}/api/events", token) for _ in range(2)]
    for reader in readers:
        assert reader.opened.wait(10), reader.error

    sent = time.monotonic()
    code = node.stop(sig)
    took = time.monotonic() - sent
    log = "".join(node.lines)

    for reader in readers:
        assert reader.ended.wait(10)
        assert reader.error is None, f"stream cut: {reader.error!r}\n{log}"
        assert reader.events, log
        last = reader.events[-1]
        assert last["event"] == "shutdown", reader.events
        assert json.loads(last["data"]) == {"reason": "the node is stopping"}
        # the client's reconnect waits a while: the node (or its replacement) is starting
        assert int(last["retry"]) >= 2000
    assert code == 0, log
    assert "ERROR" not in log and "Traceback" not in log, log
    assert took < PROMPT_EXIT_SECONDS, f"{took:.1f} s to stop\n{log}"
