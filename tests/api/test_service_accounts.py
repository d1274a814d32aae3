"""Service accounts and their API keys, over the real API on SQLite and PostgreSQL:
made by an admin, shown once, stored hashed, scoped, expiring, revocable,
audited, never a way to sign in or to manage the node."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import ApiKey, AuditEvent, Base, ImagingRequest
from dicom_node.db.types import utcnow
from dicom_node.domain.api_keys import KEY_PATTERN
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import AuthenticationFailed
from dicom_node.domain.permissions import Permission
from dicom_node.services.access.api_keys import authenticate_key
from dicom_node.services.access.service_accounts import create_service_account, issue_key
from tests.api.conftest import ApiServer
from tests.conftest import TwoRoleDatabase
from tests.support import assert_one_line_error, run


def _account(admin: httpx.Client, name: str = "ohif-viewer", role: str = "technologist") -> int:
    response = admin.post(
        "/api/service-accounts", json={"name": name, "role": role, "description": "OHIF"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == name and body["role"] == role and body["is_active"]
    return int(body["id"])


def _key(admin: httpx.Client, account: int, *scopes: str, **extra: Any) -> dict[str, Any]:
    response = admin.post(
        f"/api/service-accounts/{account}/keys", json={"scopes": list(scopes), **extra}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _with_key(api: ApiServer, key: str) -> httpx.Client:
    client = api.anonymous()
    client.headers["Authorization"] = f"Bearer {key}"
    return client


def _events(api: ApiServer, action: str) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_a_key_reads_what_its_scopes_and_role_allow_and_nothing_else(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    issued = _key(admin, account, "read-images", label="reading room 2")
    key = issued["key"]
    assert key.startswith("dnk_") and len(key) == 47
    assert issued["prefix"] == key[:12] and issued["scopes"] == ["read-images"]
    viewer = _with_key(api, key)

    assert viewer.get("/api/studies").status_code == 200
    # the role (technologist) may read orders and store images; the key's scope does not
    refused = viewer.get("/api/orders")
    assert refused.status_code == 403, refused.text
    assert "scopes" in refused.json()["error"]["message"]
    # neither role nor scope: managing users or service accounts
    assert viewer.get("/api/users").status_code == 403
    assert (
        viewer.post("/api/service-accounts", json={"name": "x1", "role": "auditor"}).status_code
        == 403
    )

    # what the caller may do, as /api/me says it: the role narrowed by the scopes
    assert viewer.get("/api/me").json()["permissions"] == ["studies:read"]

    # the query the key made is audited with the service account as actor
    (query,) = [e for e in _events(api, "study_search") if e.actor == "ohif-viewer"]
    assert query.event_code == "110112" and query.actor_role == "technologist"


def test_a_store_scope_on_a_role_that_may_store(api: ApiServer) -> None:
    admin = api.client("admin")
    technologist = _account(admin, "pipeline", "technologist")
    key = _key(admin, technologist, "store-images")["key"]
    pipeline = _with_key(api, key)
    assert pipeline.get("/api/studies").status_code == 403
    # what STOW-RS (POST /dicomweb/studies) checks
    principal = authenticate_key(api.db, key, source_address=None)
    assert principal.can(Permission.IMAGES_STORE)
    assert not principal.can(Permission.STUDIES_READ)
    assert not principal.can(Permission.ORDERS_PERFORM)  # the role's, not the key's
    # a scope the role does not hold is refused when the key is made
    auditor = _account(admin, "siem", "auditor")
    response = admin.post(
        f"/api/service-accounts/{auditor}/keys", json={"scopes": ["store-images"]}
    )
    assert response.status_code == 422, response.text
    assert _key(admin, auditor, "read-audit")["scopes"] == ["read-audit"]


def test_the_key_is_shown_once_and_stored_only_as_its_hash(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    key = _key(admin, account, "read-images")["key"]
    assert _with_key(api, key).get("/api/studies").status_code == 200
    with api.db.read() as session:
        (row,) = session.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert row["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in str(value) or key[12:] in str(value) for value in row.values())
    listed = admin.get(f"/api/service-accounts/{account}/keys")
    assert listed.status_code == 200
    (shown,) = listed.json()
    assert "key" not in shown and key[12:] not in listed.text
    assert shown["prefix"] == key[:12] and shown["last_used_at"] is not None
    assert shown["last_used_from"] == "127.0.0.1"
    assert admin.get("/api/service-accounts").json()["items"][0]["active_keys"] == 1
    # service accounts are not listed among people
    assert "ohif-viewer" not in admin.get("/api/users").text


def test_revoked_expired_unknown_and_deactivated_keys_get_401(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    revoked = _key(admin, account, "read-images")
    expired = _key(admin, account, "read-images")
    for issued in (revoked, expired):
        assert _with_key(api, issued["key"]).get("/api/studies").status_code == 200

    gone = admin.delete(f"/api/service-accounts/{account}/keys/{revoked['id']}")
    assert gone.status_code == 204
    assert _with_key(api, revoked["key"]).get("/api/studies").status_code == 401
    with api.db.unit_of_work() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == expired["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert _with_key(api, expired["key"]).get("/api/studies").status_code == 401
    unknown = "dnk_" + "A" * 43
    assert _with_key(api, unknown).get("/api/studies").status_code == 401
    assert _with_key(api, "dnk_short").get("/api/studies").status_code == 401

    live = _key(admin, account, "read-images")["key"]
    off = admin.patch(f"/api/service-accounts/{account}", json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert _with_key(api, live).get("/api/studies").status_code == 401
    # a deactivated account gets no new key
    conflict = admin.post(f"/api/service-accounts/{account}/keys", json={"scopes": ["read-images"]})
    assert conflict.status_code == 409
    assert (
        admin.patch(f"/api/service-accounts/{account}", json={"is_active": True}).status_code == 200
    )
    assert _with_key(api, live).get("/api/studies").status_code == 200

    reasons = {event.reason for event in _events(api, "api_key_refused")}
    assert reasons == {
        "key revoked",
        "key expired",
        "unknown key",
        "malformed key",
        "service account deactivated",
    }
    assert {e.outcome for e in _events(api, "api_key_refused")} == {"minor_failure"}


def test_a_key_refused_again_and_again_is_recorded_once(api: ApiServer) -> None:
    unknown = _with_key(api, "dnk_" + "B" * 43)
    for _ in range(20):
        assert unknown.get("/api/studies").status_code == 401
    refused = [e for e in _events(api, "api_key_refused") if e.actor == "dnk_BBBBBBBB"]
    assert len(refused) == 1


def test_making_using_and_revoking_a_key_is_audited_without_the_key(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    issued = _key(admin, account, "read-images")
    viewer = _with_key(api, issued["key"])
    for _ in range(25):  # a viewer's burst of requests: one use event, not 25
        assert viewer.get("/api/studies").status_code == 200
    assert admin.delete(f"/api/service-accounts/{account}/keys/{issued['id']}").status_code == 204
    # revoking again changes nothing and records nothing
    assert admin.delete(f"/api/service-accounts/{account}/keys/{issued['id']}").status_code == 204

    (created,) = _events(api, "service_account_created")
    assert created.event_code == "110114" and created.actor == admin.username  # type: ignore[attr-defined]
    (made,) = _events(api, "api_key_created")
    (used,) = _events(api, "api_key_used")
    (revoked,) = _events(api, "api_key_revoked")
    assert made.event_code == revoked.event_code == "110113"
    assert used.event_code == "110114"
    assert used.actor == "ohif-viewer" and used.actor_user_id == account
    assert used.source_address == "127.0.0.1"
    for event in (created, made, used, revoked):
        assert event.target_id == str(account)
        assert issued["key"][12:] not in str(event.details)
    assert made.details["prefix"] == issued["prefix"]
    assert made.details["scopes"] == ["read-images"]
    assert used.details["first_use"] is True


def test_only_admins_manage_service_accounts(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    for role in Role:
        if role is Role.ADMIN:
            continue
        other = api.client(role.value)
        assert (
            other.post("/api/service-accounts", json={"name": "x2", "role": "auditor"}).status_code
            == 403
        )
        keys = other.post(f"/api/service-accounts/{account}/keys", json={"scopes": ["read-images"]})
        assert keys.status_code == 403, role
        assert other.get(f"/api/service-accounts/{account}/keys").status_code == 403
    # a service account is never an admin
    refused = admin.post("/api/service-accounts", json={"name": "root-bot", "role": "admin"})
    assert refused.status_code == 422, refused.text
    # nor made one afterwards through the users API
    promoted = admin.patch(f"/api/users/{account}", json={"role": "admin"})
    assert promoted.status_code == 422, promoted.text
    # the name is shared with people: taken is taken
    api.user("scheduler", username="taken-name")
    assert (
        admin.post(
            "/api/service-accounts", json={"name": "taken-name", "role": "auditor"}
        ).status_code
        == 409
    )


def test_a_service_account_never_signs_in(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    key = _key(admin, account, "read-images")["key"]
    anonymous = api.anonymous()
    response = anonymous.post("/api/auth/token", data={"username": "ohif-viewer", "password": key})
    assert response.status_code == 401
    # the token endpoint is a password form: a key in the header does not sign in either
    with_header = _with_key(api, key).post(
        "/api/auth/token", data={"username": "ohif-viewer", "password": "x"}
    )
    assert with_header.status_code == 401
    (failed, _) = _events(api, "sign_in_failed")
    assert failed.reason is not None and "service account" in failed.reason
    # nor sign out: a key is revoked by an admin, and no sign_out event is written
    assert _with_key(api, key).post("/api/auth/logout").status_code == 422
    assert _with_key(api, key).get("/api/studies").status_code == 200
    assert not [e for e in _events(api, "sign_out") if e.actor == "ohif-viewer"]
    # and an admin cannot give it a password to sign in with
    reset = admin.post(f"/api/users/{account}/password", json={"password": "long enough password"})
    assert reset.status_code == 422, reset.text


def test_key_lifetimes_follow_the_settings(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin)
    default = _key(admin, account, "read-images")
    lifetime = datetime.fromisoformat(default["expires_at"]) - datetime.fromisoformat(
        default["created_at"]
    )
    assert lifetime == timedelta(days=api.settings.api_key_default_days)
    short = _key(admin, account, "read-images", expires_in_days=7)
    lifetime = datetime.fromisoformat(short["expires_at"]) - datetime.fromisoformat(
        short["created_at"]
    )
    assert lifetime == timedelta(days=7)
    too_long = admin.post(
        f"/api/service-accounts/{account}/keys",
        json={"scopes": ["read-images"], "expires_in_days": api.settings.api_key_max_days + 1},
    )
    assert too_long.status_code == 422


def test_migrations_equal_the_models_and_downgrade(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    db = Database(empty_db_url)
    try:
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        command.downgrade(migrate.alembic_config(empty_db_url), "0012")
        with db.engine.connect() as connection:
            assert "kind" not in {
                c["name"] for c in db.engine.dialect.get_columns(connection, "users")
            }
        migrate.upgrade(empty_db_url)
        with pytest.raises(IntegrityError), db.unit_of_work() as session:
            session.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, is_active, "
                    "failed_sign_ins, is_lead, kind, created_at, updated_at) VALUES "
                    "('r2', '!', 'auditor', true, 0, false, 'robot', :t, :t)"
                ),
                {"t": utcnow()},
            )
    finally:
        db.dispose()


def test_the_node_role_uses_keys_on_a_two_role_database(two_role_db: TwoRoleDatabase) -> None:
    """The least-privilege role gets what keys need from the grant of each upgrade."""
    migrate.upgrade_schema(two_role_db.node_url, two_role_db.owner_url)
    db = Database(two_role_db.node_url)
    try:
        with db.unit_of_work() as session:
            account = create_service_account(
                session, name="bot", role="radiologist", actor=Actor.system(SystemActor.CLI)
            )
            issued = issue_key(
                session,
                account.id,
                scopes=["read-images"],
                expires_in_days=None,
                default_days=30,
                max_days=60,
                actor=Actor.system(SystemActor.CLI),
            )
        principal = authenticate_key(db, issued.key, source_address="192.0.2.1")
        assert principal.username == "bot" and principal.api_key_id == issued.info.id
        with db.read() as session:
            used = session.scalar(select(ApiKey.last_used_from))
        assert used == "192.0.2.1"
        with db.unit_of_work() as session:
            session.execute(update(ApiKey).values(revoked_at=utcnow()))
        with pytest.raises(AuthenticationFailed):
            authenticate_key(db, issued.key, source_address="192.0.2.1")
    finally:
        db.dispose()


def test_an_operator_makes_a_key_on_the_command_line(tmp_path: Path, db: Database) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = run(tmp_path, "service-account", *args, database_url=db.url)
        assert result.returncode == 0, result.stderr
        return result

    created = cli("create", "orthanc", "--role", "radiologist", "--description", "Orthanc")
    assert "created service account orthanc (role radiologist" in created.stdout
    made = cli("key", "orthanc", "--scope", "read-images", "--days", "30", "--label", "pull")
    key = made.stdout.strip()  # the key alone on standard output, for a script to take
    assert KEY_PATTERN.fullmatch(key), made.stdout
    assert "shown this once" in made.stderr
    principal = authenticate_key(db, key, source_address=None)
    assert principal.username == "orthanc" and principal.can(Permission.STUDIES_READ)
    listed = cli("keys", "orthanc").stdout
    assert key[:12] in listed and key[12:] not in listed and "read-images" in listed
    key_id = listed.split()[0]
    cli("revoke", "orthanc", key_id)
    with pytest.raises(AuthenticationFailed):
        authenticate_key(db, key, source_address=None)
    refused = run(tmp_path, "service-account", "create", "root", "--role", "admin")
    assert refused.returncode == 2  # not a choice
    unknown = run(
        tmp_path, "service-account", "key", "nobody", "--scope", "read-images", database_url=db.url
    )
    assert_one_line_error(unknown, 1, "no service account 'nobody'")


def test_the_live_event_stream_keeps_a_key_s_stream_open(api: ApiServer) -> None:
    """The stream re-checks its credential on every poll: a key must pass it.
    (``read-orders`` beside ``read-changes``: the feed shows a key only the
    entities its scopes read.)"""
    admin = api.client("admin")
    account = _account(admin, "portal", "scheduler")
    key = _key(admin, account, "read-changes", "read-orders")["key"]
    with api.db.unit_of_work() as session:
        order = ImagingRequest(
            patient_id="P1", patient_name="DOE^J", patient_name_folded="doe^j", status="requested"
        )
        session.add(order)
        session.flush()
        order_id = order.id
    with httpx.stream(
        "GET",
        f"{api.base_url}/api/events",
        params={"since": 0},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = []
        for line in response.iter_lines():
            if line.startswith(("event: ", "data: ")):
                events.append(line)
            if line.startswith("data: ") or line == "event: end":
                break
    assert events[0] == "event: order.created", events
    assert f'"entity_id": {order_id}' in events[1] or f'"entity_id":{order_id}' in events[1]


def test_the_change_feed_shows_a_key_only_the_entities_its_scopes_read(api: ApiServer) -> None:
    admin = api.client("admin")
    account = _account(admin, "portal", role="scheduler")
    feed_only = _with_key(api, _key(admin, account, "read-changes")["key"])
    with_orders = _with_key(api, _key(admin, account, "read-changes", "read-orders")["key"])
    with api.db.unit_of_work() as session:
        order = ImagingRequest(
            patient_id="P1",
            patient_name="DOE^JANE",
            patient_name_folded="doe^jane",
            requested_modality="CT",
            status="requested",
        )
        session.add(order)
        session.flush()
        order_id = order.id

    def entities(client: httpx.Client) -> set[tuple[str, int]]:
        answer = client.get("/api/changes", params={"since": 0})
        assert answer.status_code == 200, answer.text
        return {(item["entity"], item["entity_id"]) for item in answer.json()["items"]}

    # the role (scheduler) reads orders; a key without read-orders does not see them
    assert ("order", order_id) not in entities(feed_only)
    assert ("order", order_id) in entities(with_orders)
