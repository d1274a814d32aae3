"""Sign-in abuse (issue 13, finding 9): bounded password hashing, a lock-out an
attacker cannot turn against an account, and the purge of spent tokens.

Other source addresses are real: the client binds its socket to another
loopback address (127.0.0.0/8 is all this host's), so the server sees it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from dicom_node.db.models import ApiToken, AuditEvent, SignInSource, User
from dicom_node.jobs.tokens import run_token_purge
from dicom_node.services.access import passwords
from dicom_node.services.access.auth import source_key
from dicom_node.settings import Settings
from tests.api.conftest import PASSWORD, ApiServer
from tests.conftest import node_settings

NEW_PASSWORD = "another horse battery"


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    # two failures lock an address; twenty from new addresses lock the account
    return node_settings(db_url, tmp_path / "data", sign_in_max_failures=2)


def _from(api: ApiServer, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (a loopback address)."""
    client = httpx.Client(
        base_url=api.base_url,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )
    api.clients.append(client)
    return client


def _sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post("/api/auth/token", data={"username": username, "password": password})


def _reasons(api: ApiServer, username: str) -> list[str]:
    with api.db.read() as session:
        return [
            reason or ""
            for reason in session.scalars(
                select(AuditEvent.reason)
                .where(AuditEvent.action == "sign_in_failed", AuditEvent.actor == username)
                .order_by(AuditEvent.id)
            )
        ]


def test_failures_from_another_address_do_not_lock_the_owner_out(api: ApiServer) -> None:
    """Before: five wrong passwords from anywhere (here two) locked the account
    for everyone, admins included, for the whole lock-out."""
    admin = api.user("admin")
    attacker = _from(api, "127.0.0.2")
    for _ in range(api.settings.sign_in_max_failures + 2):
        assert _sign_in(attacker, admin, "wrong" * 3).status_code == 401
    # the attacker's address is locked: even the right password is refused there
    refused = _sign_in(attacker, admin, PASSWORD)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    # the owner, at their own workstation, signs in (never having done so before)
    owner = _from(api, "127.0.0.1")
    assert _sign_in(owner, admin, PASSWORD).status_code == 200
    reasons = _reasons(api, admin)
    assert reasons[: api.settings.sign_in_max_failures] == [
        "wrong password",
        "wrong password; account locked for this address",
    ]
    assert reasons[-1] == "account locked for this address"  # the right password, refused
    with api.db.read() as session:
        rows = {row.source_address: row for row in session.scalars(select(SignInSource))}
    assert rows["127.0.0.2"].locked_until is not None
    assert rows["127.0.0.1"].locked_until is None
    assert rows["127.0.0.1"].last_success_at is not None


def test_a_distributed_attacker_is_bounded_by_a_lock_for_new_addresses_only(
    api: ApiServer,
) -> None:
    """Many addresses, each below its own lock-out: after ten times the
    per-address limit the account is locked for addresses it never signed in
    from. Its owner's known address keeps working; an admin's password reset
    lifts the lock."""
    name = api.user("radiologist")
    assert _sign_in(_from(api, "127.0.0.1"), name, PASSWORD).status_code == 200  # yesterday
    per_address = api.settings.sign_in_max_failures
    threshold = 10 * per_address
    addresses = [f"127.0.1.{n}" for n in range(1, threshold // (per_address - 1) + 1)]
    tried = 0
    for address in addresses:
        client = _from(api, address)
        for _ in range(per_address - 1):  # never locks its own address
            if tried < threshold:
                assert _sign_in(client, name, "guess" * 3).status_code == 401
                tried += 1
    assert tried == threshold
    # the account is now locked for new addresses: the right password is refused
    newcomer = _from(api, "127.0.2.1")
    assert _sign_in(newcomer, name, PASSWORD).status_code == 401
    assert _reasons(api, name)[-1] == "account locked for new addresses"
    with api.db.read() as session:
        alerts = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "account_locked")
        ).all()
        locked_until = session.scalar(select(User.locked_until).where(User.username == name))
    assert [a.event_code for a in alerts] == ["110113"]
    assert locked_until is not None
    assert locked_until > datetime.now(UTC) + timedelta(hours=23)
    # the owner at their own workstation is not locked out
    assert _sign_in(_from(api, "127.0.0.1"), name, PASSWORD).status_code == 200
    # an admin's password reset lifts the lock for everyone
    admin = api.client("admin")
    with api.db.read() as session:
        user_id = session.scalar(select(User.id).where(User.username == name))
    reset = admin.post(f"/api/users/{user_id}/password", json={"password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert _sign_in(newcomer, name, NEW_PASSWORD).status_code == 200


def test_source_key_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::5") != source_key("2001:db8:1:3::5")
    assert source_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_key(None) == "unknown"
    assert source_key("x" * 100) == "x" * 64


@pytest.fixture
def gate() -> Iterator[None]:
    """The hashing gate as a test sets it; the suite's default afterwards."""
    yield
    passwords.configure_concurrency(
        max_concurrent=passwords.DEFAULT_MAX_CONCURRENT,
        wait_seconds=passwords.DEFAULT_WAIT_SECONDS,
    )


def test_concurrent_sign_ins_never_hash_more_than_the_limit_at_once(
    api: ApiServer, gate: None
) -> None:
    """Before: sixteen concurrent bogus sign-ins ran sixteen argon2 hashes at
    once (64 MiB each by default: the node reached 1.3 GB)."""
    passwords.configure_concurrency(max_concurrent=2, wait_seconds=30)
    passwords.configure(time_cost=2, memory_kib=8192, parallelism=1)  # slower, so they overlap
    try:
        name = api.user("scheduler")
        answers: list[int] = []
        lock = threading.Lock()

        def attempt(n: int) -> None:
            response = _sign_in(api.anonymous(), name if n % 2 else f"nobody{n}", "bogus" * 3)
            with lock:
                answers.append(response.status_code)

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)
    assert answers == [401] * 8
    load = passwords.hashing_load()
    assert load.peak_running == 2
    assert load.running == 0 and load.waiting == 0


def test_a_sign_in_that_waits_too_long_for_a_hashing_slot_is_503_with_retry_after(
    api: ApiServer, gate: None
) -> None:
    name = api.user("scheduler")
    passwords.configure_concurrency(max_concurrent=1, wait_seconds=0.2)
    with passwords.hashing_turn():  # the one slot, busy
        response = _sign_in(api.anonymous(), name, PASSWORD)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "service_unavailable"
    # nothing was judged: no failure counted, no audit event
    assert _reasons(api, name) == []
    assert _sign_in(api.anonymous(), name, PASSWORD).status_code == 200


def test_waiting_sign_ins_are_bounded_the_rest_are_told_at_once(api: ApiServer, gate: None) -> None:
    """A waiting sign-in holds one of the API's threads: a flood must not take
    every thread the other routes need."""
    passwords.configure_concurrency(max_concurrent=1, wait_seconds=30)
    waiters = passwords.WAITERS_PER_SLOT
    answers: list[int] = []
    signed_in = api.client("technologist")  # signed in before the flood
    with passwords.hashing_turn():
        threads = [
            threading.Thread(
                target=lambda: answers.append(
                    _sign_in(api.anonymous(), "nobody", PASSWORD).status_code
                )
            )
            for _ in range(waiters)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while passwords.hashing_load().waiting < waiters:
            assert time.monotonic() < deadline, "the sign-ins did not queue"
            time.sleep(0.01)
        one_more = _sign_in(api.anonymous(), "nobody", PASSWORD)
        assert one_more.status_code == 503
        # the rest of the API still answers meanwhile
        assert signed_in.get("/api/me").status_code == 200
    for thread in threads:
        thread.join(30)
    assert answers == [401] * waiters


def test_the_purge_job_deletes_spent_tokens_and_stale_address_records(api: ApiServer) -> None:
    live = api.client("technologist")
    revoked = api.client("technologist")
    assert revoked.post("/api/auth/logout").status_code == 204
    expiring = api.client("scheduler")
    name = api.user("radiologist")
    attacker = _from(api, "127.0.0.3")
    assert _sign_in(attacker, name, "wrong" * 3).status_code == 401
    now = datetime.now(UTC)
    with api.db.unit_of_work() as session:
        owner = select(User.id).where(
            User.username == expiring.username  # type: ignore[attr-defined]
        )
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == owner.scalar_subquery())
            .values(expires_at=now - timedelta(minutes=1))
        )
        total = session.scalar(select(func.count(ApiToken.id)))
    assert total == 3  # live, revoked, expired

    first = run_token_purge(api.db, now=now)
    assert first.tokens_deleted == 2
    assert first.sign_in_records_deleted == 0  # a failure a moment ago still counts
    assert live.get("/api/me").status_code == 200
    assert expiring.get("/api/me").status_code == 401
    # 91 days on: the address record no longer counts for anything
    later = run_token_purge(api.db, now=now + timedelta(days=91))
    assert later.sign_in_records_deleted >= 1
    with api.db.read() as session:
        left = session.scalars(select(SignInSource.source_address)).all()
    assert "127.0.0.3" not in left
    assert run_token_purge(api.db, now=now).tokens_deleted == 0  # nothing left to do


def test_a_username_with_control_characters_is_an_unknown_user(api: ApiServer) -> None:
    """Before: a NUL in the username was a 500 on PostgreSQL (found by schemathesis)."""
    response = _sign_in(api.anonymous(), "B\x00\x0cadmin", PASSWORD)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert _reasons(api, "b??admin") == ["unknown user"]
