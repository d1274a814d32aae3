"""Issue 13, finding 5, as an operator meets it: `db upgrade`, `serve`, `restore`
and `verify` with a PostgreSQL owner role (database_owner_url), and `verify`
reporting a rewritten audit trail."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.services.audit.chain import verify_audit_chain
from dicom_node.services.operations.backup import create_backup
from dicom_node.storage import FileStore
from tests.conftest import CHEAP_HASHING, NODE_ROLE, OWNER_ROLE, TwoRoleDatabase
from tests.support import Served, assert_one_line_error, run

UNPROTECTED = "audit trail is tamper-evident only"
CHEAP = {name: str(value) for name, value in CHEAP_HASHING.items()}


def _as_superuser(url: str, statement: str) -> list[tuple[object, ...]]:
    parsed = make_url(url)
    dsn = f"host={parsed.host} port={parsed.port} user=postgres dbname={parsed.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _owners(url: str) -> set[str]:
    """Who owns the tables and sequences of the public schema."""
    rows = _as_superuser(
        url,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relkind IN ('r', 'S')",
    )
    return {str(row[0]) for row in rows}


def _privileges(url: str, table: str) -> set[str]:
    found = set()
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER"):
        ((held,),) = _as_superuser(
            url, f"SELECT has_table_privilege('{NODE_ROLE}', '{table}', '{privilege}')"
        )
        if held:
            found.add(privilege)
    return found


def _assert_two_roles(url: str) -> None:
    assert _owners(url) == {OWNER_ROLE}
    assert _privileges(url, "audit_events") == {"SELECT", "INSERT"}
    assert _privileges(url, "alembic_version") == {"SELECT"}
    assert _privileges(url, "imaging_requests") == {"SELECT", "INSERT", "UPDATE", "DELETE"}


def _settings(two_role_db: TwoRoleDatabase) -> dict[str, str]:
    return {"database_url": two_role_db.node_url, "database_owner_url": two_role_db.owner_url}


def test_db_upgrade_with_an_owner_url_leaves_the_node_role_append_only_on_the_trail(
    tmp_path: Path, two_role_db: TwoRoleDatabase
) -> None:
    result = run(tmp_path, "db", "upgrade", **_settings(two_role_db))
    assert result.returncode == 0, result.stderr
    assert f"{NODE_ROLE} may only read and append to the audit trail" in result.stdout
    _assert_two_roles(two_role_db.owner_url)
    # a second run changes nothing and keeps the grants exact
    again = run(tmp_path, "db", "upgrade", **_settings(two_role_db))
    assert again.returncode == 0, again.stderr
    assert "schema already at revision" in again.stdout
    _assert_two_roles(two_role_db.owner_url)


def test_db_upgrade_grants_the_node_role_the_tables_an_upgrade_adds(
    tmp_path: Path, two_role_db: TwoRoleDatabase
) -> None:
    migrate.upgrade_schema(two_role_db.node_url, two_role_db.owner_url, revision="0006")
    assert not _as_superuser(two_role_db.owner_url, "SELECT to_regclass('sign_in_sources')")[0][0]
    result = run(tmp_path, "db", "upgrade", **_settings(two_role_db))
    assert result.returncode == 0, result.stderr
    assert "schema upgraded from 0006" in result.stdout
    # a table of revision 0007, and audit_events as 0008 left it
    assert _privileges(two_role_db.owner_url, "sign_in_sources") == {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    }
    _assert_two_roles(two_role_db.owner_url)


def test_moving_a_single_role_install_to_an_owner_role(
    tmp_path: Path, two_role_db: TwoRoleDatabase
) -> None:
    """The schema made by the node's own role: `db upgrade` with an owner URL
    says what to do (one line), and works once the tables are reassigned."""
    _as_superuser(two_role_db.owner_url, f"GRANT CREATE ON SCHEMA public TO {NODE_ROLE}")
    single = run(tmp_path, "db", "upgrade", database_url=two_role_db.node_url)
    assert single.returncode == 0, single.stderr
    refused = run(tmp_path, "db", "upgrade", **_settings(two_role_db))
    assert_one_line_error(refused, 1, f"REASSIGN OWNED BY {NODE_ROLE} TO {OWNER_ROLE}")
    _as_superuser(two_role_db.owner_url, f"REASSIGN OWNED BY {NODE_ROLE} TO {OWNER_ROLE}")
    _as_superuser(two_role_db.owner_url, f"REVOKE CREATE ON SCHEMA public FROM {NODE_ROLE}")
    moved = run(tmp_path, "db", "upgrade", **_settings(two_role_db))
    assert moved.returncode == 0, moved.stderr
    _assert_two_roles(two_role_db.owner_url)


def test_an_owner_url_that_logs_in_as_the_node_is_refused_in_one_line(
    tmp_path: Path, two_role_db: TwoRoleDatabase
) -> None:
    result = run(
        tmp_path,
        "db",
        "upgrade",
        database_url=two_role_db.owner_url,
        database_owner_url=two_role_db.owner_url,
    )
    assert_one_line_error(result, 1, "both log in as")


def test_serve_as_the_node_role_without_the_owner_url_stops_in_one_line(
    tmp_path: Path, two_role_db: TwoRoleDatabase
) -> None:
    """An empty two-role database and no owner URL: the node's role may not
    create the schema, and says so instead of a traceback."""
    result = run(tmp_path, "serve", database_url=two_role_db.node_url)
    assert_one_line_error(result, 1, "permission denied for schema public")


def _find(port: int) -> None:
    ae = AE(ae_title="AUDITED")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = "P*"
        identifier.StudyInstanceUID = ""
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind
            )
            if status
        ]
        assert statuses[-1] == 0x0000
    finally:
        assoc.release()


def test_serve_creates_the_schema_through_the_owner_and_runs_as_the_node_role(
    tmp_path: Path, two_role_db: TwoRoleDatabase, served: list[Served]
) -> None:
    added = run(
        tmp_path,
        "user",
        "add",
        "ann",
        "--role",
        "admin",
        "--password-stdin",
        stdin="a long enough password\n",
        **_settings(two_role_db),
        **CHEAP,
    )
    assert added.returncode == 0, added.stderr
    server = Served(tmp_path, **_settings(two_role_db))
    served.append(server)
    dicom_port, http_port = server.ports()
    _find(dicom_port)
    signed_in = httpx.post(
        f"http://127.0.0.1:{http_port}/api/auth/token",
        data={"username": "ann", "password": "a long enough password"},
        timeout=10,
    )
    assert signed_in.status_code == 200, signed_in.text
    _assert_two_roles(two_role_db.owner_url)
    assert not any(UNPROTECTED in line for line in server.lines), server.lines
    assert any(re.search(r"audit trail head: row \d+ sha256 [0-9a-f]{64}", x) for x in server.lines)
    verified = run(tmp_path, "verify", **_settings(two_role_db))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit trail: hash chain intact" in verified.stdout
    assert UNPROTECTED not in verified.stderr
    db = Database(two_role_db.node_url)
    try:
        report = verify_audit_chain(db)
        assert report.ok and report.rows >= 3  # user created, query, sign-in
    finally:
        db.dispose()


def test_a_single_role_node_says_once_that_the_trail_is_only_tamper_evident(
    tmp_path: Path, two_role_db: TwoRoleDatabase, served: list[Served]
) -> None:
    server = Served(tmp_path, database_url=two_role_db.owner_url)
    served.append(server)
    server.ports()
    warnings = [line for line in server.lines if UNPROTECTED in line]
    assert len(warnings) == 1, server.lines
    assert "owns audit_events" in warnings[0] and "WARNING" in warnings[0]


def test_restore_with_an_owner_url_keeps_the_chain_and_the_two_roles(
    tmp_path: Path, make_two_role_db: Callable[[], TwoRoleDatabase]
) -> None:
    source, target = make_two_role_db(), make_two_role_db()
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    assert run(tmp_path / "src", "db", "upgrade", **_settings(source)).returncode == 0
    added = run(
        tmp_path / "src",
        "user",
        "add",
        "bob",
        "--role",
        "auditor",
        "--password-stdin",
        stdin="another long password\n",
        **_settings(source),
        **CHEAP,
    )
    assert added.returncode == 0, added.stderr
    # the node's own role makes the backup (pg_dump reads what it was granted)
    backup = create_backup(
        database_url=source.node_url,
        store=FileStore(tmp_path / "src" / "data", fsync=False),
        destination=tmp_path / "backup",
        fsync=False,
    )
    assert backup.manifest.audit_head is not None
    restored = run(tmp_path / "dst", "restore", str(tmp_path / "backup"), **_settings(target))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "audit trail: hash chain intact" in restored.stdout
    assert f"recorded head {backup.manifest.audit_head} still holds" in restored.stdout
    _assert_two_roles(target.owner_url)
    verified = run(tmp_path / "dst", "verify", **_settings(target))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit trail: hash chain intact" in verified.stdout
    db = Database(target.node_url)
    try:
        with pytest.raises(Exception, match="permission denied"), db.unit_of_work() as session:
            session.execute(text("UPDATE audit_events SET action = 'forged'"))
    finally:
        db.dispose()


# --------------------------------------------------------------------------- verify


def _rewrite_second_row(db_url: str) -> int:
    """A rewrite no role could stop: the sqlite3 module with the triggers
    dropped, or the PostgreSQL superuser with them disabled."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(str(url.database))
        try:
            (row_id,) = connection.execute(
                "SELECT id FROM audit_events ORDER BY id LIMIT 1 OFFSET 1"
            ).fetchone()
            connection.execute("DROP TRIGGER audit_events_no_update")
            connection.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = ?", (row_id,))
            connection.commit()
        finally:
            connection.close()
        return int(row_id)
    ((row_id,),) = _as_superuser(db_url, "SELECT id FROM audit_events ORDER BY id LIMIT 1 OFFSET 1")
    _as_superuser(db_url, "ALTER TABLE audit_events DISABLE TRIGGER USER")
    _as_superuser(db_url, f"UPDATE audit_events SET actor = 'mallory' WHERE id = {row_id}")  # noqa: S608
    _as_superuser(db_url, "ALTER TABLE audit_events ENABLE TRIGGER USER")
    return int(str(row_id))


def test_verify_reports_a_rewritten_audit_row_and_exits_1(tmp_path: Path, db_url: str) -> None:
    for name in ("ann", "bob"):
        added = run(
            tmp_path,
            "user",
            "add",
            name,
            "--role",
            "auditor",
            "--password-stdin",
            stdin="a long enough password\n",
            database_url=db_url,
            **CHEAP,
        )
        assert added.returncode == 0, added.stderr
    clean = run(tmp_path, "verify", database_url=db_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    head = re.search(r"head row (\d+) sha256 ([0-9a-f]{64})", clean.stdout)
    assert head is not None
    # the single-role (or SQLite) install is told, once, what the chain can and cannot do
    assert clean.stderr.count(UNPROTECTED) == 1

    row_id = _rewrite_second_row(db_url)
    tampered = run(tmp_path, "verify", database_url=db_url)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert f"audit trail: row {row_id} does not match its hash (rewritten)" in tampered.stdout
    assert "no problems found" in tampered.stdout  # the store itself is fine
    anchored = run(
        tmp_path, "verify", "--audit-anchor", f"{head[1]}:{head[2]}", database_url=db_url
    )
    assert anchored.returncode == 1
    assert f"recorded head {head[1]}:{head[2]} still holds" in anchored.stdout


def test_verify_refuses_a_malformed_audit_anchor(tmp_path: Path) -> None:
    result = run(tmp_path, "verify", "--audit-anchor", "12:not-a-hash")
    assert result.returncode == 2
    assert "ID:SHA256" in result.stderr


def test_config_show_hides_the_owner_password(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "config",
        "show",
        database_url="postgresql+psycopg://node:secret@db/dicom",
        database_owner_url="postgresql+psycopg://owner:topsecret@db/dicom",
    )
    assert result.returncode == 0, result.stderr
    assert "secret" not in result.stdout
    assert "database_owner_url = postgresql+psycopg://owner:***@db/dicom" in result.stdout
