"""DICOM TLS (PS3.15 Annex B, BCP 195 profile) and HTTPS, over real connections.

DCMTK's storescu/findscu/echoscu with ``+tls`` and pynetdicom as clients; a
pynetdicom storage SCP with TLS as a C-MOVE destination and a modality's storage
commitment SCU; httpx for the API. Certificates come from a throw-away CA made
with the openssl command line (tests/tls_pki.py). The handshakes are the same on
both databases: SQLite only.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.domain.aetitle import Peer
from dicom_node.node import Node, StartupError
from dicom_node.scp.server import DicomServer
from tests.conftest import node_settings
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, write
from tests.support import dcmtk_env, dcmtk_tool, free_port, wait_for
from tests.tls_pki import Issued, Pki, make_pki

HANDSHAKE_TIMEOUT = 2.0
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_node(tmp_path: Path, sqlite_template: Path, pki: Pki) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(**overrides: object) -> Node:
        database = tmp_path / f"tls{len(nodes)}.sqlite3"
        shutil.copyfile(sqlite_template, database)
        values: dict[str, object] = {
            "dicom_tls_port": 0,
            "tls_certificate": pki.node.certificate,
            "tls_private_key": pki.node.key,
            "tls_ca_bundle": pki.ca,
            "tls_handshake_timeout_seconds": HANDSHAKE_TIMEOUT,
            **overrides,
        }
        node = Node(
            node_settings(f"sqlite:///{database}", tmp_path / f"data{len(nodes)}", **values)
        )
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def _client_context(pki: Pki, issued: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if issued is not None:
        context.load_cert_chain(issued.certificate, issued.key)
    return context


def _associate_tls(
    port: int, context: ssl.SSLContext, *, server_name: str = "localhost", source: str = ""
) -> Association:
    """``source``: a loopback address of the test's own, so that the node's
    rate-limited lines about it are never held back by another test's."""
    ae = AE(ae_title="TLS_SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.connection_timeout = 10
    return ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOM_NODE",
        tls_args=(context, server_name),
        bind_address=(source or "127.0.0.1", 0),
    )


def _dcmtk(
    tool: str, pki: Pki, *args: str, identity: Issued | None = None
) -> subprocess.CompletedProcess[str]:
    """A DCMTK tool over TLS (its default BCP 195 non-downgrading profile),
    verifying the node against the test CA."""
    client = identity or pki.peer
    return subprocess.run(
        [
            dcmtk_tool(tool),
            "+tls", str(client.key), str(client.certificate),
            "-pw",  # the key has no password: never prompt
            "+cf", str(pki.ca),
            "-aec", "DICOM_NODE",
            "-aet", "DCMTK_TLS",
            "-to", "10",
            *args,
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=60,
    )  # fmt: skip


def _stored(node: Node) -> set[str]:
    assert node.db is not None
    with node.db.read() as session:
        return set(session.scalars(select(DicomInstance.sop_instance_uid)))


def _lines(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dicom_node") and all(n in r.getMessage() for n in needles)
    ]


# --------------------------------------------------------------------------- DCMTK


def test_dcmtk_storescu_and_findscu_over_tls(
    tls_node: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    node = tls_node()
    assert node.dicom_tls_port and node.dicom_port  # beside the plain port
    study = generate_uid()
    files = [
        write(ct_dataset(study_uid=study, instance_number=n, pixel_seed=n), tmp_path / f"{n}.dcm")
        for n in range(3)
    ]
    stored = _dcmtk("storescu", pki, "127.0.0.1", str(node.dicom_tls_port), *map(str, files))
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert len(_stored(node)) == 3
    found = _dcmtk(
        "findscu", pki, "-S", "-v",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "-k", "NumberOfStudyRelatedInstances",
        "127.0.0.1", str(node.dicom_tls_port),
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    assert study in found.stdout + found.stderr
    echo = _dcmtk("echoscu", pki, "127.0.0.1", str(node.dicom_tls_port))
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_dcmtk_without_a_client_certificate_is_refused_when_one_is_required(
    tls_node: Callable[..., Node], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = tls_node()
    result = subprocess.run(
        [dcmtk_tool("echoscu"), "+tla", "+cf", str(pki.ca), "-aec", "DICOM_NODE",
         "-to", "10", "127.0.0.1", str(node.dicom_tls_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert wait_for(lambda: bool(_lines(caplog, "TLS handshake with 127.0.0.1:", "failed")))


def test_dcmtk_with_a_certificate_from_another_ca_is_refused(
    tls_node: Callable[..., Node], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = tls_node()
    result = _dcmtk("echoscu", pki, "127.0.0.1", str(node.dicom_tls_port), identity=pki.stranger)
    assert result.returncode != 0
    assert wait_for(lambda: bool(_lines(caplog, "TLS handshake with", "certificate")))


# --------------------------------------------------------------------------- pynetdicom


def test_pynetdicom_over_tls_echoes_and_stores(tls_node: Callable[..., Node], pki: Pki) -> None:
    node = tls_node()
    assoc = _associate_tls(node.dicom_tls_port, _client_context(pki, pki.peer))
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        ds = ct_dataset(study_uid=generate_uid())
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert ds.SOPInstanceUID in _stored(node)


@pytest.mark.parametrize("client", ["untrusted certificate", "no certificate"])
def test_a_client_without_a_trusted_certificate_is_refused_and_logged(
    tls_node: Callable[..., Node], pki: Pki, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    caplog.set_level(logging.INFO)
    node = tls_node()
    identity = pki.stranger if client == "untrusted certificate" else None
    source = "127.0.14.1" if identity else "127.0.14.2"
    assoc = _associate_tls(node.dicom_tls_port, _client_context(pki, identity), source=source)
    assert not assoc.is_established
    expected = "certificate verify failed" if identity else "did not return a certificate"
    assert wait_for(lambda: bool(_lines(caplog, f"TLS handshake with {source}:", expected)))
    assert wait_for(lambda: _server(node).gate.pending() == 0)
    assert _stored(node) == set()
    # a Security Alert, Node Authentication (aggregated per peer like rejections)
    (alert,) = _handshake_alerts(node)
    assert alert.event_code == "110113" and alert.details["event_type"] == "110126"
    assert alert.source_address and alert.source_address.startswith(f"{source}:")
    assert alert.reason and expected in alert.reason


def _handshake_alerts(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "tls_handshake_failed"))
        )


def test_optional_client_certificates_let_a_client_without_one_in(
    tls_node: Callable[..., Node], pki: Pki
) -> None:
    node = tls_node(tls_client_certificates="optional")
    assoc = _associate_tls(node.dicom_tls_port, _client_context(pki, None))
    assert assoc.is_established
    assoc.release()
    # a certificate that is sent is still checked
    assert not _associate_tls(
        node.dicom_tls_port, _client_context(pki, pki.stranger)
    ).is_established


def test_tls_12_suites_outside_bcp_195_are_refused(tls_node: Callable[..., Node], pki: Pki) -> None:
    """BCP 195 (RFC 9325 4.2): ECDHE with AES-GCM only; RSA key exchange or CBC
    suites are refused, as are TLS versions before 1.2."""
    node = tls_node()
    for ciphers in ("AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"):
        context = _client_context(pki, pki.peer)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
        assert not _associate_tls(node.dicom_tls_port, context).is_established, ciphers
    context = _client_context(pki, pki.peer)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the four BCP 195 suites are offered
    assoc = _associate_tls(node.dicom_tls_port, context)
    assert assoc.is_established
    tls_socket = assoc.dul.socket.socket if assoc.dul.socket else None
    assert isinstance(tls_socket, ssl.SSLSocket)
    assert tls_socket.version() == "TLSv1.2"
    cipher = tls_socket.cipher()
    assert cipher is not None and cipher[0].startswith("ECDHE-") and "GCM" in cipher[0]
    assoc.release()


def _server(node: Node) -> DicomServer:
    assert isinstance(node.dicom, DicomServer)
    return node.dicom


def test_a_stalled_handshake_does_not_hold_up_other_peers(
    tls_node: Callable[..., Node], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom does the handshake on its one accept thread, with no timeout:
    a peer that connects and never sends its ClientHello stopped the port."""
    caplog.set_level(logging.INFO)
    node = tls_node()
    port = node.dicom_tls_port
    stalled = socket.create_connection(("127.0.0.1", port), source_address=("127.0.14.3", 0))
    address = "{}:{}".format(*stalled.getsockname()[:2])
    try:
        assert wait_for(lambda: _server(node).gate.pending() == 1)
        for _ in range(2):  # each gets its own handshake meanwhile
            assoc = _associate_tls(port, _client_context(pki, pki.peer))
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
        assert _dcmtk("echoscu", pki, "127.0.0.1", str(port)).returncode == 0
        # the stalled one is closed by the handshake timeout, and logged
        stalled.settimeout(HANDSHAKE_TIMEOUT + 5)
        with contextlib.suppress(ConnectionResetError):
            assert stalled.recv(1) == b""
    finally:
        stalled.close()
    # the node closes the connection first and logs after: wait for the line
    assert wait_for(lambda: _lines(caplog, f"TLS handshake with {address} failed") != [])
    (line,) = _lines(caplog, f"TLS handshake with {address} failed")
    assert f"no complete handshake within {HANDSHAKE_TIMEOUT:g} s" in line
    assert wait_for(lambda: _server(node).gate.pending() == 0)
    assert _handshake_alerts(node) == []  # a stall is not a failed authentication


def test_a_port_probe_on_the_tls_port_is_not_a_failed_handshake(
    tls_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    """A TCP connect closed at once (C-MOVE's reachability check of a TLS peer,
    a load balancer's health check): no warning, no Security Alert."""
    caplog.set_level(logging.DEBUG, logger="dicom_node.scp")
    node = tls_node()
    for _ in range(3):
        socket.create_connection(("127.0.0.1", node.dicom_tls_port)).close()
    assert wait_for(lambda: len(_lines(caplog, "closed before its TLS handshake")) == 3)
    assert wait_for(lambda: _server(node).gate.pending() == 0)
    assert _lines(caplog, "TLS handshake with") == []
    assert _handshake_alerts(node) == []


def test_the_tls_port_alone_and_in_worker_processes(
    tls_node: Callable[..., Node], pki: Pki
) -> None:
    node = tls_node(dicom_plain_listener=False, dicom_workers=2)
    assert node.dicom_port == 0 and node.dicom_tls_port
    for _ in range(3):
        assoc = _associate_tls(node.dicom_tls_port, _client_context(pki, pki.peer))
        assert assoc.is_established
        assoc.release()
    assert _dcmtk("echoscu", pki, "127.0.0.1", str(node.dicom_tls_port)).returncode == 0


def test_unusable_tls_files_stop_the_start_with_one_line(
    tmp_path: Path, sqlite_template: Path, pki: Pki
) -> None:
    database = tmp_path / "bad.sqlite3"
    shutil.copyfile(sqlite_template, database)
    cases = {
        "missing key": {"tls_private_key": tmp_path / "nope.key"},
        "key of another certificate": {"tls_private_key": pki.peer.key},
        "CA bundle not PEM": {"tls_ca_bundle": pki.node.key.with_suffix(".csr")},
    }
    for what, broken in cases.items():
        values: dict[str, object] = {
            "dicom_tls_port": 0,
            "tls_certificate": pki.node.certificate,
            "tls_private_key": pki.node.key,
            "tls_ca_bundle": pki.ca,
            **broken,
        }
        settings = node_settings(f"sqlite:///{database}", tmp_path / "data", **values)
        node = Node(settings)
        with pytest.raises(StartupError) as failure:
            node.start()
        message = str(failure.value)
        assert "\n" not in message and ("tls_" in message), (what, message)


# --------------------------------------------------------------------------- outgoing


class TlsStorageScp:
    """A C-MOVE destination that speaks only TLS and requires a client certificate."""

    def __init__(self, pki: Pki, identity: Issued) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.client_subjects: list[object] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(identity.certificate, identity.key)
        ae = AE(ae_title="TLS_DEST")
        ae.add_supported_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_CONN_OPEN, self._opened)],
        )

    def _opened(self, event: evt.Event) -> None:
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if isinstance(sock, ssl.SSLSocket):
            self.client_subjects.append(sock.getpeercert())

    def _store(self, event: evt.Event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[union-attr]
        return 0x0000

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _move(node: Node, study: str, destination: str) -> list[int]:
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        return [
            int(status.Status)
            for status, _ in assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
            if status
        ]
    finally:
        assoc.release()


def _store_plain(node: Node, count: int) -> tuple[str, list[str]]:
    study = generate_uid()
    ae = AE(ae_title="LOADER")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    uids = []
    try:
        for n in range(count):
            ds = ct_dataset(study_uid=study, instance_number=n, pixel_seed=n)
            assert assoc.send_c_store(ds).Status == 0x0000
            uids.append(str(ds.SOPInstanceUID))
    finally:
        assoc.release()
    return study, uids


def test_c_move_to_a_tls_peer_goes_over_tls_with_the_node_certificate(
    tls_node: Callable[..., Node], pki: Pki
) -> None:
    destination = TlsStorageScp(pki, pki.peer)
    try:
        node = tls_node(
            peers={"TLS_DEST": Peer("TLS_DEST", "127.0.0.1", destination.port, tls=True)}
        )
        study, uids = _store_plain(node, 2)
        statuses = _move(node, study, "TLS_DEST")
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
        assert sorted(destination.received) == sorted(uids)
        # the node presented its own certificate (mutual authentication)
        subject = destination.client_subjects[0]
        assert isinstance(subject, dict)
        assert (("commonName", "node"),) in subject["subject"]
    finally:
        destination.close()


def test_c_move_to_dcmtk_storescp_over_tls(
    tls_node: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    """DCMTK as the TLS destination: its storescp with +tls (BCP 195 non-downgrading
    profile, peer certificate required) receives the node's sub-operations."""
    port, out = free_port(), tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(
        [dcmtk_tool("storescp"), "+tls", str(pki.peer.key), str(pki.peer.certificate),
         "-pw", "+cf", str(pki.ca), "-aet", "STORESCP", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dcmtk_env(),
    )  # fmt: skip
    try:
        node = tls_node(peers=f"STORESCP@127.0.0.1:{port}/tls")
        study, uids = _store_plain(node, 2)
        assert wait_for(lambda: _listening(port), timeout=10)
        statuses = _move(node, study, "STORESCP")
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
        assert len(list(out.iterdir())) == len(uids)
    finally:
        scp.terminate()
        scp.wait(timeout=10)


def _listening(port: int) -> bool:
    """Whether a local port is bound (read from /proc: a test connection would be
    one more failed TLS handshake for the server to log)."""
    wanted = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in rows:
                fields = row.split()
                if len(fields) > 3 and (fields[1] + " ").endswith(wanted) and fields[3] == "0A":
                    return True
    return False


def test_c_move_to_a_tls_peer_whose_certificate_names_another_host_fails(
    tls_node: Callable[..., Node], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The peer's certificate must name the host its entry gives (RFC 6125)."""
    caplog.set_level(logging.INFO)
    destination = TlsStorageScp(pki, pki.wrong_host)
    try:
        node = tls_node(peers=f"TLS_DEST@127.0.0.1:{destination.port}/tls")
        study, _ = _store_plain(node, 1)
        statuses = _move(node, study, "TLS_DEST")
        # a known destination the node cannot use: every sub-operation failed
        assert statuses[-1] == 0xA702, [hex(s) for s in statuses]
        assert destination.received == []
    finally:
        destination.close()
    reasons = [r.getMessage() for r in caplog.records if "address mismatch" in r.getMessage()]
    assert reasons, "the reason is logged"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_storage_commitment_report_goes_over_tls_to_a_tls_peer(
    tls_node: Callable[..., Node], pki: Pki
) -> None:
    port = free_port()
    reports: list[int] = []
    received = threading.Event()

    def report(event: evt.Event) -> int:
        reports.append(int(event.request.EventTypeID))  # type: ignore[union-attr]
        received.set()
        return 0x0000

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(pki.peer.certificate, pki.peer.key)
    modality = AE(ae_title="MODALITY")
    modality.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = modality.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=context,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, report)],
    )
    try:
        node = tls_node(peers=f"MODALITY@localhost:{port}/tls")
        _, uids = _store_plain(node, 1)
        requester = AE(ae_title="MODALITY")
        requester.add_requested_context(StorageCommitmentPushModel)
        assoc = _associate_commitment(requester, node, pki)
        info = Dataset()
        info.TransactionUID = generate_uid()
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uids[0]
        info.ReferencedSOPSequence = [item]
        try:
            status, _ = assoc.send_n_action(
                info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
            assert int(status.Status) == 0x0000
        finally:
            assoc.release()
        assert received.wait(timeout=30), "no report over TLS"
        assert reports == [1]  # all committed
    finally:
        server.shutdown()


def _associate_commitment(ae: AE, node: Node, pki: Pki) -> Association:
    """The modality asks over the TLS port too."""
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_tls_port,
        ae_title="DICOM_NODE",
        tls_args=(_client_context(pki, pki.peer), "localhost"),
    )
    assert assoc.is_established
    return assoc


# --------------------------------------------------------------------------- HTTPS


def test_https_api_is_reachable_with_the_ca_and_plain_http_is_not(
    tls_node: Callable[..., Node], pki: Pki
) -> None:
    node = tls_node(
        dicom_tls_port=None,
        http_tls_certificate=pki.node.certificate,
        http_tls_private_key=pki.node.key,
    )
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    answer = httpx.get(f"https://127.0.0.1:{node.http_port}/health", verify=trusted)
    assert answer.status_code == 200
    old_client = ssl.create_default_context(cafile=str(pki.ca))
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    old_client.set_ciphers("ECDHE-RSA-AES128-SHA")  # CBC: not in BCP 195
    with (
        socket.create_connection(("127.0.0.1", node.http_port)) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old_client.wrap_socket(raw, server_hostname="localhost")
    with pytest.raises(httpx.HTTPError):  # no plain HTTP beside it
        httpx.get(f"http://127.0.0.1:{node.http_port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(f"https://127.0.0.1:{node.http_port}/health", timeout=5)
