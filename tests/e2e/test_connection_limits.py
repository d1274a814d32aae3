"""Connections that never become associations (issue 13, finding 4).

Attack: open ``max_associations`` TCP connections and send nothing. pynetdicom
counted every connection thread against the limit, so every real association
was refused; and once the silent connections closed, nothing noticed until the
ACSE timeout (refusals went on for 28 s). Now the limit counts negotiated
associations only, a connection gets ``association_request_timeout_seconds`` to
send its A-ASSOCIATE-RQ, the connections still waiting for theirs are capped
(``max_pending_connections``, a quarter of it per peer address), and a
connection that closes frees its place at once.

The behaviour is the network layer's, the same on both databases: SQLite only.
Each test connects from its own loopback address (127.0.13.x), so the
rate-limited log lines of one test never hold back another's.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.node import Node
from dicom_node.scp.server import DicomServer
from tests.conftest import node_settings
from tests.support import dcmtk_env, dcmtk_tool, wait_for

LONG = 60.0  # a timeout no test waits for: what happens must happen before it


@pytest.fixture
def limited_node(tmp_path: Path, sqlite_template: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(**overrides: object) -> Node:
        database = tmp_path / f"limits{len(nodes)}.sqlite3"
        shutil.copyfile(sqlite_template, database)
        values: dict[str, object] = {"acse_timeout_seconds": LONG, **overrides}
        node = Node(
            node_settings(f"sqlite:///{database}", tmp_path / f"data{len(nodes)}", **values)
        )
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def _server(node: Node) -> DicomServer:
    assert isinstance(node.dicom, DicomServer)
    return node.dicom


def _silent(port: int, source: str) -> socket.socket:
    """A TCP connection that sends nothing."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_node(sock: socket.socket, within: float) -> bool:
    """Whether the node closed ``sock`` (within ``within`` seconds)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data: not expected, but not closed either
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _associate(port: int, source: str = "127.0.0.1") -> Association:
    ae = AE(ae_title="LIMIT_SCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="DICOM_NODE", bind_address=(source, 0))


def _echoscu(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", "DICOM_NODE", "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=30,
    )


def _lines(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dicom_node") and all(n in r.getMessage() for n in needles)
    ]


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def test_silent_connections_take_no_association_slot(
    limited_node: Callable[..., Node],
) -> None:
    node = limited_node(max_associations=3, association_request_timeout_seconds=LONG)
    port = node.dicom_port
    socks = [_silent(port, "127.0.13.1") for _ in range(3 + 3)]
    try:
        # every silent connection is being served by the node (a thread each)
        assert wait_for(lambda: _server(node).active_associations() == 6)
        assoc = _associate(port)
        assert assoc.is_established, "a silent connection took an association slot"
        try:
            assert assoc.send_c_echo().Status == 0x0000
            result = _echoscu(port)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            assoc.release()
        assert all(_still_open(sock) for sock in socks)
    finally:
        _close_all(socks)


def test_negotiated_associations_are_still_limited_and_a_freed_slot_is_taken_at_once(
    limited_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = limited_node(max_associations=2)
    port = node.dicom_port
    held = [_associate(port, "127.0.13.2") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        refused = _associate(port, "127.0.13.2")
        assert refused.is_rejected
        answer = refused.acceptor.primitive
        assert answer is not None
        # PS3.8 9.3.4: rejected-transient, service-provider (presentation), local limit
        assert (answer.result, answer.result_source, answer.diagnostic) == (0x02, 0x03, 0x02)
        # EVT_REJECTED (which logs) fires on the node's association thread after
        # it queued the A-ASSOCIATE-RJ for its DUL thread: the client may have it first
        assert wait_for(
            lambda: _lines(caplog, "association rejected from LIMIT_SCU", "too many associations")
        )
        held.pop().release()
        again = _associate(port, "127.0.13.2")
        assert again.is_established
        held.append(again)
    finally:
        for assoc in held:
            assoc.release()


def test_silent_connections_that_close_free_their_place_at_once(
    limited_node: Callable[..., Node],
) -> None:
    """Without the fix the node noticed the close only at the ACSE timeout."""
    node = limited_node(max_associations=2, association_request_timeout_seconds=LONG)
    port = node.dicom_port
    socks = [_silent(port, "127.0.13.3") for _ in range(4)]
    assert wait_for(lambda: _server(node).active_associations() == 4)
    _close_all(socks)
    # long before any timeout (LONG): threads, pending places and slots all freed
    assert wait_for(lambda: _server(node).active_associations() == 0, timeout=5)
    assert _server(node).gate.pending() == 0
    held = [_associate(port, "127.0.13.3") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
    finally:
        for assoc in held:
            assoc.release()


def test_a_peer_gone_right_after_its_request_frees_its_slot_at_once(
    limited_node: Callable[..., Node],
) -> None:
    node = limited_node(max_associations=1, network_timeout_seconds=LONG)
    port = node.dicom_port
    gone = _associate(port, "127.0.13.4")
    assert gone.is_established
    raw = gone.dul.socket.socket if gone.dul.socket else None
    assert raw is not None
    raw.shutdown(socket.SHUT_RDWR)  # no A-RELEASE, no A-ABORT: the cable is pulled
    assert wait_for(lambda: _server(node).active_associations() == 0, timeout=5)
    assert _server(node).gate.negotiated() == 0
    gone.abort()
    assoc = _associate(port, "127.0.13.4")
    try:
        assert assoc.is_established
    finally:
        assoc.release()


def _partial_request(declared: int, sent: int) -> bytes:
    """The start of an A-ASSOCIATE-RQ PDU declaring ``declared`` bytes."""
    body = bytes([0x00, 0x01, 0x00, 0x00]) + b"DICOM_NODE".ljust(16) + b"LIMIT_SCU".ljust(16)
    return struct.pack(">BBL", 0x01, 0x00, declared) + body[:sent]


@pytest.mark.parametrize("sends", ["nothing", "half a request"])
def test_a_connection_without_a_whole_request_is_closed_after_the_timeout_and_logged_once(
    limited_node: Callable[..., Node], caplog: pytest.LogCaptureFixture, sends: str
) -> None:
    caplog.set_level(logging.INFO)
    timeout = 1.0
    node = limited_node(association_request_timeout_seconds=timeout)
    source = "127.0.13.5" if sends == "nothing" else "127.0.13.6"
    sock = _silent(node.dicom_port, source)
    host, local_port = sock.getsockname()[:2]
    address = f"{host}:{local_port}"
    try:
        if sends != "nothing":
            sock.sendall(_partial_request(200, 20))
        assert _closed_by_node(sock, within=timeout + 3), "still open after the timeout"
        assert wait_for(lambda: _server(node).active_associations() == 0, timeout=3)
        assert _server(node).gate.pending() == 0
    finally:
        sock.close()
    kind = "no association request" if sends == "nothing" else "request still incomplete"
    lines = _lines(caplog, address)
    assert len(lines) == 1, lines
    assert kind in lines[0] and "association_request_timeout_seconds" in lines[0]


def test_connections_over_the_pending_limit_are_closed_at_once_and_logged_rate_limited(
    limited_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # 8 pending at most, 2 of them from one address
    node = limited_node(max_pending_connections=8, association_request_timeout_seconds=LONG)
    port, server = node.dicom_port, _server(node)
    held = [_silent(port, "127.0.13.7") for _ in range(2)]
    socks = list(held)
    try:
        assert wait_for(lambda: server.active_associations() == 2)
        over_share = _silent(port, "127.0.13.7")
        socks.append(over_share)
        assert _closed_by_node(over_share, within=5), "one address took more than its share"
        for source in ("127.0.13.8", "127.0.13.9", "127.0.13.10"):
            held += [_silent(port, source) for _ in range(2)]
        socks += held[2:]
        assert wait_for(lambda: server.active_associations() == 8)
        assert server.gate.pending() == 8
        refused = [_silent(port, "127.0.13.11") for _ in range(4)]
        socks += refused
        assert all(_closed_by_node(sock, within=5) for sock in refused)
        assert all(_still_open(sock) for sock in held)
        # while the limit is reached no one gets in: the trade-off the limit makes
        assert not _associate(port, "127.0.13.11").is_established
    finally:
        _close_all(socks)
    assert wait_for(lambda: server.gate.pending() == 0, timeout=5)
    assoc = _associate(port, "127.0.13.11")
    try:
        assert assoc.is_established
    finally:
        assoc.release()
    over = _lines(caplog, "127.0.13.11:", "closed at once", "max_pending_connections")
    assert len(over) == 1, over  # 5 refusals, one line (the rest counted, not written)
    share = _lines(caplog, "127.0.13.7:", "closed at once", "from this address")
    assert len(share) == 1, share


def test_worker_processes_keep_silent_connections_out_of_the_slots(
    limited_node: Callable[..., Node],
) -> None:
    node = limited_node(
        dicom_workers=2, max_associations=2, association_request_timeout_seconds=LONG
    )
    port = node.dicom_port
    socks = [_silent(port, "127.0.13.12") for _ in range(6)]
    try:
        # each worker has its own limits: 6 silent connections fill neither
        for _ in range(2):
            assoc = _associate(port)
            assert assoc.is_established
            assoc.release()
        result = _echoscu(port)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        _close_all(socks)
