"""Sign-in, tokens, lock-out, and the change feed's basic contract."""

from __future__ import annotations

from sqlalchemy import select, text

from dicom_node.db.models import AuditEvent, SignInSource, User
from dicom_node.services.access import passwords
from tests.api.conftest import PASSWORD, ApiServer


def test_sign_in_returns_an_expiring_bearer_token_that_me_accepts(api: ApiServer) -> None:
    name = api.user("radiologist")
    response = api.anonymous().post(
        "/api/auth/token", data={"username": name, "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["role"] == "radiologist"
    me = api.anonymous().get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == name
    assert "reports:write" in me.json()["permissions"]


def test_routes_refuse_missing_and_bogus_tokens_with_401_json(api: ApiServer) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = api.anonymous().get("/api/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"


def test_wrong_password_is_401_and_audited_and_locks_after_repeated_failures(
    api: ApiServer,
) -> None:
    """The lock is for the address the failures came from (test_sign_in_abuse.py)."""
    name = api.user("scheduler")
    client = api.anonymous()
    for _ in range(api.settings.sign_in_max_failures):
        response = client.post("/api/auth/token", data={"username": name, "password": "wrong" * 3})
        assert response.status_code == 401
    # locked: even the right password is refused now, with the same answer an
    # unknown user gets (the audit event says which it was)
    response = client.post("/api/auth/token", data={"username": name, "password": PASSWORD})
    assert response.status_code == 401
    unknown = client.post("/api/auth/token", data={"username": "nobody", "password": PASSWORD})
    assert response.json() == unknown.json()
    with api.db.read() as session:
        failures = session.scalars(
            select(AuditEvent.reason).where(
                AuditEvent.action == "sign_in_failed", AuditEvent.actor == name
            )
        ).all()
        locked_until = session.scalar(
            select(SignInSource.locked_until)
            .join(User, User.id == SignInSource.user_id)
            .where(User.username == name, SignInSource.source_address == "127.0.0.1")
        )
    assert len(failures) == api.settings.sign_in_max_failures + 1
    # the try with the right password
    assert failures.count("account locked for this address") == 1
    assert any("; account locked for this address" in (reason or "") for reason in failures)
    assert locked_until is not None


def test_unknown_user_sign_in_is_audited_as_a_failure(api: ApiServer) -> None:
    response = api.anonymous().post(
        "/api/auth/token", data={"username": "nobody", "password": PASSWORD}
    )
    assert response.status_code == 401
    with api.db.read() as session:
        count = session.scalar(
            text(
                "SELECT count(*) FROM audit_events WHERE action = 'sign_in_failed' "
                "AND actor = 'nobody'"
            )
        )
    assert count == 1


def test_logout_revokes_the_token_and_is_audited(api: ApiServer) -> None:
    client = api.client("technologist")
    assert client.get("/api/me").status_code == 200
    assert client.post("/api/auth/logout").status_code == 204
    assert client.get("/api/me").status_code == 401
    with api.db.read() as session:
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "sign_out")
        ).all()
    assert actors == [client.username]  # type: ignore[attr-defined]


def test_password_is_stored_as_argon2_only(api: ApiServer) -> None:
    name = api.user("admin")
    with api.db.read() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == name))
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored


def test_a_hash_made_at_another_cost_is_upgraded_at_the_next_sign_in(api: ApiServer) -> None:
    name = api.user("scheduler")
    with api.db.read() as session:
        before = session.scalar(select(User.password_hash).where(User.username == name))
    passwords.configure(time_cost=2, memory_kib=2048, parallelism=1)
    try:
        api.token(name)
        with api.db.read() as session:
            after = session.scalar(select(User.password_hash).where(User.username == name))
    finally:
        passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)
    assert before is not None and after is not None
    assert "m=1024,t=1" in before and "m=2048,t=2" in after
