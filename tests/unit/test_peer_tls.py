"""The per-peer TLS option (``AE@host:port/tls``, or ``tls = true`` in a table)
and the TLS profile of every context the node builds (PS3.15 B.9, BCP 195)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dicom_node.domain.aetitle import Peer, parse_peer, parse_peer_list, peer_from_table
from dicom_node.domain.errors import InvalidValue
from dicom_node.scp import tls
from dicom_node.scp.outgoing import PeerConnector, PeerNeedsTls
from dicom_node.settings import Settings
from tests.tls_pki import Pki, make_pki


@pytest.mark.parametrize(
    ("text", "peer"),
    [
        ("PACS@10.1.2.3:2762/tls", Peer("PACS", "10.1.2.3", 2762, tls=True)),
        ("PACS@10.1.2.3:2762/TLS ", Peer("PACS", "10.1.2.3", 2762, tls=True)),
        ("V6@[::1]:2762/tls", Peer("V6", "::1", 2762, tls=True)),
        ("OLD@pacs.local:104", Peer("OLD", "pacs.local", 104, tls=False)),
    ],
)
def test_the_tls_option_parses_and_renders_back(text: str, peer: Peer) -> None:
    assert parse_peer(text) == peer
    assert parse_peer(str(peer)) == peer


@pytest.mark.parametrize("bad", ["P@h:104/ssl", "P@h:104/", "P@h/tls:104"])
def test_other_options_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue):
        parse_peer(bad)


def test_table_form_with_and_without_tls() -> None:
    assert peer_from_table("PACS", {"host": "10.1.2.3", "port": 2762, "tls": True}) == Peer(
        "PACS", "10.1.2.3", 2762, tls=True
    )
    assert peer_from_table("WS", {"host": "ws.local", "port": 104}) == Peer("WS", "ws.local", 104)
    for bad in (
        {"host": "h", "port": 104, "tls": "yes"},
        {"host": "h", "port": 104, "verify": False},
        {"host": "", "port": 104},
        {"host": "h", "port": 0},
        {"ae_title": "OTHER", "host": "h", "port": 104},
    ):
        with pytest.raises(InvalidValue):
            peer_from_table("PACS", bad)


def test_settings_keep_the_option_through_the_json_the_workers_read() -> None:
    settings = Settings(
        database_url="sqlite:////tmp/unused.sqlite3",
        peers="PACS@10.1.2.3:2762/tls,WS@ws.local:104",
    )
    assert settings.peers["PACS"].tls and not settings.peers["WS"].tls
    again = Settings.model_validate_json(settings.model_dump_json())
    assert again.peers == settings.peers
    assert [str(p) for p in parse_peer_list("A@h:1/tls,B@h:2")] == ["A@h:1/tls", "B@h:2"]


def test_a_tls_peer_is_reached_with_the_client_context_and_its_host_as_server_name() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    connector = PeerConnector(max_pdu=65536, connect_timeout=5.0, tls=context)
    options = connector.options(Peer("PACS", "pacs.local", 2762, tls=True), contexts=[])
    assert options["tls_args"] == (context, "pacs.local")
    assert options["ae_title"] == "PACS" and options["max_pdu"] == 65536
    assert "tls_args" not in connector.options(Peer("WS", "ws", 104))
    with pytest.raises(PeerNeedsTls):
        PeerConnector(max_pdu=0, connect_timeout=5.0).options(Peer("P", "h", 1, tls=True))


# --------------------------------------------------------------------------- contexts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


BCP195 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
}


def _tls12_suites(context: ssl.SSLContext) -> set[str]:
    return {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}


def test_every_context_follows_the_bcp_195_profile(pki: Pki) -> None:
    server = tls.server_context(pki.node.certificate, pki.node.key, pki.ca, "required")
    client = tls.client_context(pki.node.certificate, pki.node.key, pki.ca)
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert _tls12_suites(context) == BCP195
        assert context.options & ssl.OP_NO_COMPRESSION
        assert context.options & ssl.OP_NO_RENEGOTIATION
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    optional = tls.server_context(pki.node.certificate, pki.node.key, pki.ca, "optional")
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    anonymous = tls.server_context(pki.node.certificate, pki.node.key, None, "none")
    assert anonymous.verify_mode == ssl.CERT_NONE


def test_unusable_files_give_one_line_naming_them(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    cases = [
        lambda: tls.server_context(missing, pki.node.key, pki.ca, "required"),
        lambda: tls.server_context(pki.node.certificate, pki.peer.key, pki.ca, "required"),
        lambda: tls.client_context(None, None, missing),
        lambda: tls.client_context(None, None, None),
        lambda: tls.check_http_certificate(pki.node.certificate, missing),
    ]
    for case in cases:
        with pytest.raises(tls.TlsConfigError) as failure:
            case()
        assert "\n" not in str(failure.value)
    with pytest.raises(tls.TlsConfigError, match="tls_ca_bundle"):
        tls.client_context(None, None, None)
