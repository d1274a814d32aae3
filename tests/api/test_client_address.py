"""Who is calling (issue 13, security review): the client address that the
sign-in lock-out counts and the audit trail records is the TCP peer's, or the
one a trusted proxy (Settings.trusted_proxies) put in X-Forwarded-For; never a
header a client wrote itself.

Before: the node's uvicorn believed X-Forwarded-For and X-Forwarded-Proto from
127.0.0.1 and ::1 (uvicorn's default, or FORWARDED_ALLOW_IPS) and took any
string as the client host. A local process, or a proxy passing on the client's
own header, chose its address: it locked the owner out at the owner's address,
forged audit source addresses, and turned on HSTS over plain HTTP.

A real node (node.py's uvicorn configuration) is served; other source
addresses are real: the client binds its socket to another loopback address
(127.0.0.0/8 is all this host's), so the server sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, SignInSource
from dicom_node.domain.audit import Actor, AuditEventCode, AuditRecord, SystemActor
from dicom_node.node import Node
from dicom_node.services.access.users import create_user
from dicom_node.services.audit.record import record_audit_event
from tests.api.conftest import PASSWORD

WRONG = "not the password"
StartNode = Callable[..., Node]


def _database(node: Node) -> Database:
    assert node.db is not None
    return node.db


def _admin(node: Node, name: str = "owner") -> str:
    with _database(node).unit_of_work() as session:
        create_user(
            session,
            username=name,
            password=PASSWORD,
            role="admin",
            display_name=name,
            actor=Actor.system(SystemActor.CLI),
        )
    return name


def _from(node: Node, address: str, clients: list[httpx.Client]) -> httpx.Client:
    """A client whose connections come from ``address`` (a loopback address)."""
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{node.http_port}",
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )
    clients.append(client)
    return client


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for client in opened:
        client.close()


def _sign_in(client: httpx.Client, username: str, password: str, **headers: str) -> httpx.Response:
    return client.post(
        "/api/auth/token", data={"username": username, "password": password}, headers=headers
    )


def _sign_in_sources(node: Node) -> list[tuple[str | None, int, bool]]:
    with _database(node).read() as session:
        return [
            (event.source_address, event.failed_sign_ins, event.locked_until is not None)
            for event in session.scalars(select(SignInSource).order_by(SignInSource.id))
        ]


def _audit_sources(node: Node, username: str) -> list[tuple[str, str | None]]:
    with _database(node).read() as session:
        return [
            (event.action, event.source_address)
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.actor == username).order_by(AuditEvent.id)
            )
        ]


@pytest.mark.parametrize("environment", [None, "*"], ids=["uvicorn-default", "env-star"])
def test_a_client_cannot_choose_its_address_with_x_forwarded_for(
    make_node: StartNode,
    clients: list[httpx.Client],
    monkeypatch: pytest.MonkeyPatch,
    environment: str | None,
) -> None:
    """The reviewer's attack: the owner signs in from 127.0.0.2; a process on
    127.0.0.1 fails twice claiming X-Forwarded-For: 127.0.0.2. Before: the
    owner's address was locked and the audit trail named it as the source."""
    if environment is None:
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    else:  # uvicorn's own switch, which the node's setting overrides
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", environment)
    node = make_node(sign_in_max_failures=2)
    owner_name = _admin(node)
    owner = _from(node, "127.0.0.2", clients)
    assert _sign_in(owner, owner_name, PASSWORD).status_code == 200
    attacker = _from(node, "127.0.0.1", clients)
    for _ in range(2):
        refused = _sign_in(attacker, owner_name, WRONG, **{"X-Forwarded-For": "127.0.0.2"})
        assert refused.status_code == 401
    forged = _sign_in(attacker, owner_name, WRONG, **{"X-Forwarded-For": "10.66.66.66"})
    assert forged.status_code == 401

    # the owner still signs in from their own address
    assert _sign_in(owner, owner_name, PASSWORD).status_code == 200
    assert _sign_in_sources(node) == [
        ("127.0.0.2", 0, False),
        ("127.0.0.1", 0, True),  # the attacker locked themselves out
    ]
    assert _audit_sources(node, owner_name) == [
        ("sign_in", "127.0.0.2"),
        ("sign_in_failed", "127.0.0.1"),
        ("sign_in_failed", "127.0.0.1"),
        ("sign_in_failed", "127.0.0.1"),
        ("sign_in", "127.0.0.2"),
    ]
    # nor does X-Forwarded-Proto make plain HTTP look like HTTPS (HSTS)
    health = attacker.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in health.headers


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_header_of_a_client_not_listed_as_a_proxy_is_ignored(
    make_node: StartNode, clients: list[httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.3")
    node = make_node(trusted_proxies=["127.0.0.1"])
    name = _admin(node)
    stranger = _from(node, "127.0.0.3", clients)
    assert _sign_in(stranger, name, WRONG, **{"X-Forwarded-For": "127.0.0.9"}).status_code == 401
    assert _audit_sources(node, name) == [("sign_in_failed", "127.0.0.3")]


def test_a_trusted_proxy_s_forwarded_address_is_the_client_s(
    make_node: StartNode, clients: list[httpx.Client]
) -> None:
    """With trusted_proxies = ["127.0.0.1"] the proxy's header is believed: the
    lock-out counts, and the audit trail records, the address it forwarded
    (the last one it did not itself trust, as nginx appends); anything there
    that is not an IP address, however long, is an unknown address (before,
    a 70-character one failed the audit INSERT on PostgreSQL: 500)."""
    node = make_node(sign_in_max_failures=2, trusted_proxies=["127.0.0.1"])
    name = _admin(node)
    proxy = _from(node, "127.0.0.1", clients)
    for _ in range(2):
        assert _sign_in(proxy, name, WRONG, **{"X-Forwarded-For": "127.0.0.2"}).status_code == 401
    # the client's own header, passed on with its address appended by the proxy
    appended = {"X-Forwarded-For": "127.0.0.2, 127.0.0.4"}
    assert _sign_in(proxy, name, PASSWORD, **appended).status_code == 200
    assert _sign_in(proxy, name, WRONG, **{"X-Forwarded-For": "h" * 70}).status_code == 401
    assert (
        _sign_in(proxy, name, WRONG, **{"X-Forwarded-For": "[::ffff:127.0.0.6]:4242"}).status_code
        == 401
    )
    assert _sign_in_sources(node) == [
        ("127.0.0.2", 0, True),  # locked (the count starts again)
        ("127.0.0.4", 0, False),
        ("unknown", 1, False),
        ("127.0.0.6", 1, False),
    ]
    assert _audit_sources(node, name) == [
        ("sign_in_failed", "127.0.0.2"),
        ("sign_in_failed", "127.0.0.2"),
        ("sign_in", "127.0.0.4"),
        ("sign_in_failed", None),
        ("sign_in_failed", "127.0.0.6"),
    ]
    # the proxy terminates TLS: its X-Forwarded-Proto turns HSTS on
    health = proxy.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert health.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_proxy_network_with_host_bits_set_is_trusted_as_its_network(
    make_node: StartNode, clients: list[httpx.Client]
) -> None:
    """The setting accepts 127.0.0.5/30 (as 127.0.0.4/30); uvicorn reads a
    network strictly and would have taken it as a name that never matches."""
    node = make_node(trusted_proxies=["127.0.0.5/30"])
    name = _admin(node)
    proxy = _from(node, "127.0.0.6", clients)
    assert _sign_in(proxy, name, WRONG, **{"X-Forwarded-For": "127.0.0.2"}).status_code == 401
    outsider = _from(node, "127.0.0.8", clients)
    assert _sign_in(outsider, name, WRONG, **{"X-Forwarded-For": "127.0.0.2"}).status_code == 401
    assert _audit_sources(node, name) == [
        ("sign_in_failed", "127.0.0.2"),
        ("sign_in_failed", "127.0.0.8"),
    ]


def test_the_audit_writer_holds_a_source_address_to_its_column(db: Database) -> None:
    """Defensive: a caller that passes a longer address does not fail the
    INSERT (PostgreSQL refuses it) and with it the change it audits."""
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            AuditRecord(event_code=AuditEventCode.QUERY, action="x", source_address="a" * 100),
        )
    with db.read() as session:
        assert session.scalar(select(AuditEvent.source_address)) == "a" * 64
