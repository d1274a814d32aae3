"""A per-user cap on live-event streams (issue 13, finding 7): 200 idle
``/api/events`` streams on one token took ``/api/me`` from 5 ms to a 720 ms
median. Real streaming clients over HTTP; a stream is open once its first
line arrived."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dicom_node.settings import Settings
from tests.api.conftest import ApiServer
from tests.conftest import node_settings

CAP = 2


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", max_event_streams_per_user=CAP)


@dataclass
class Stream:
    response: httpx.Response
    # kept while the stream is open: dropping a line iterator closes the connection
    lines: Iterator[str]

    @property
    def status_code(self) -> int:
        return self.response.status_code


@contextlib.contextmanager
def _stream(api: ApiServer, token: str) -> Iterator[Stream]:
    """An open stream (its first line read), or the refusal."""
    with httpx.stream(
        "GET", f"{api.base_url}/api/events", headers={"Authorization": token}, timeout=30
    ) as response:
        lines = response.iter_lines()
        if response.status_code == 200:
            next(lines)  # the server is streaming to us
        else:
            response.read()
        yield Stream(response, lines)


def _opens(api: ApiServer, token: str) -> bool:
    with _stream(api, token) as stream:
        return stream.status_code == 200


def test_one_stream_beyond_the_cap_is_429_and_a_closed_one_frees_its_slot(
    api: ApiServer,
) -> None:
    token = api.client("technologist").headers["Authorization"]
    with contextlib.ExitStack() as streams:
        held = [streams.enter_context(_stream(api, token)) for _ in range(CAP)]
        assert [r.status_code for r in held] == [200] * CAP
        with _stream(api, token) as refused:
            assert refused.status_code == 429
            error = refused.response.json()["error"]
            assert error["code"] == "too_many_requests"
            assert "at most 2" in error["message"]
            assert int(refused.response.headers["retry-after"]) > 0
        # the cap is per user: another user's streams are theirs
        assert _opens(api, api.client("radiologist").headers["Authorization"])
        # the API answers meanwhile
        assert api.anonymous().get("/api/me", headers={"Authorization": token}).status_code == 200
    # every stream closed by the client: the server notices the disconnects and
    # gives the slots back (within moments; polled, no fixed sleep)
    deadline = time.monotonic() + 10
    opened = 0
    with contextlib.ExitStack() as streams:
        while opened < CAP:
            assert time.monotonic() < deadline, f"only {opened} slots came back"
            if streams.enter_context(_stream(api, token)).status_code == 200:
                opened += 1
            else:
                time.sleep(0.05)


def test_a_stream_the_server_ends_gives_its_slot_back(api: ApiServer) -> None:
    client = api.client("technologist")
    token = client.headers["Authorization"]
    with _stream(api, token) as first, _stream(api, token) as second:
        assert (first.status_code, second.status_code) == (200, 200)
        assert client.post("/api/auth/logout").status_code == 204
        # both streams end by themselves (the token is revoked) ...
        for stream in (first, second):
            assert any(line == "event: end" for line in stream.lines)
    # ... and a new token of the same user gets both slots
    fresh = f"Bearer {api.token(client.username)}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    with contextlib.ExitStack() as streams:
        opened = 0
        while opened < CAP:
            assert time.monotonic() < deadline, f"only {opened} slots came back"
            if streams.enter_context(_stream(api, fresh)).status_code == 200:
                opened += 1
            else:
                time.sleep(0.05)
