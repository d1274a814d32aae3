"""The `dicom-node` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.db import migrate
from dicom_node.domain.enums import Role
from tests.support import (
    Served,
    assert_one_line_error,
    dcmtk_env,
    dcmtk_tool,
    free_port,
    run,
)


def test_help_documents_every_command(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("serve", "db", "user", "demo", "config"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    assert "DICOM_NODE_" in result.stdout
    for sub in (("db", "--help"), ("user", "add", "--help")):
        assert run(tmp_path, *sub).returncode == 0


@pytest.mark.parametrize(
    ("setting", "value", "text"),
    [
        ("dicom_port", "abc", "DICOM_NODE_DICOM_PORT"),
        ("ae_title", "THIS_AE_TITLE_IS_TOO_LONG", "DICOM_NODE_AE_TITLE"),
        ("peers", "PACS@nowhere", "DICOM_NODE_PEERS"),
    ],
)
def test_invalid_setting_stops_serve_with_one_line_and_creates_nothing(
    tmp_path: Path, setting: str, value: str, text: str
) -> None:
    result = run(tmp_path, "serve", **{setting: value})
    assert_one_line_error(result, 2, text)
    assert not (tmp_path / "data").exists()


def test_broken_config_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("dicom_port = = 1\n")
    result = run(tmp_path, "--config", "bad.toml", "serve")
    assert_one_line_error(result, 2, "bad.toml is not valid TOML")


def test_unreachable_database_is_one_line_and_nothing_is_created(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://node:secret@127.0.0.1:{free_port()}/dicom"
    result = run(tmp_path, "serve", database_url=url)
    assert_one_line_error(result, 1, "is unreachable")
    assert "secret" not in result.stderr  # the password never reaches the log
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("which", ["dicom_port", "http_port"])
def test_port_already_in_use_is_one_line(tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"dicom_port": "0", "http_port": "0", which: str(port)}
        result = run(tmp_path, "serve", **ports)
    label = "DICOM" if which == "dicom_port" else "HTTP"
    assert_one_line_error(result, 1, f"{label} port 127.0.0.1:{port} is already in use")


def test_database_with_foreign_tables_is_refused(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "dicom-node.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE someone_elses (id INTEGER)")
    result = run(tmp_path, "serve")
    assert_one_line_error(result, 1, "has tables but no dicom-node schema version")


def test_db_upgrade_creates_then_reports_the_schema(tmp_path: Path, empty_db_url: str) -> None:
    head = migrate.head_revision()
    first = run(tmp_path, "db", "upgrade", database_url=empty_db_url)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from empty to {head}" in first.stdout
    again = run(tmp_path, "db", "upgrade", database_url=empty_db_url)
    assert f"already at revision {head}" in again.stdout
    current = run(tmp_path, "db", "current", database_url=empty_db_url)
    assert f"revision {head} (up to date)" in current.stdout


def test_user_add_reads_the_password_from_stdin(tmp_path: Path, db_url: str) -> None:
    def add(name: str, password: str) -> subprocess.CompletedProcess[str]:
        return run(
            tmp_path,
            "user",
            "add",
            name,
            "--role",
            "admin",
            "--password-stdin",
            stdin=f"{password}\n",
            database_url=db_url,
        )

    created = add("chief", "a long enough password")
    assert created.returncode == 0, created.stderr
    assert "created user chief (role admin" in created.stdout
    assert_one_line_error(add("chief", "a long enough password"), 1, "already exists")
    assert_one_line_error(add("shorty", "short"), 1, "at least 10 characters")


def test_user_add_without_a_terminal_asks_for_password_stdin(tmp_path: Path) -> None:
    result = run(tmp_path, "user", "add", "chief", "--role", "admin")
    assert_one_line_error(result, 1, "--password-stdin")


def _demo_users(stdout: str) -> dict[str, tuple[str, str]]:
    """username -> (role, password), from the lines `demo` prints."""
    users = re.findall(r"^  (demo\.\S+)\s+(\S+)\s+(\S+)$", stdout, re.MULTILINE)
    return {username: (role, password) for username, role, password in users}


def _printed_command(stdout: str, program: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if f": {program} " in line)
    return shlex.split(line.split(": ", 1)[1])


def test_demo_loads_on_a_fresh_embedded_node(tmp_path: Path) -> None:
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    assert "3 scheduled orders created" in result.stdout
    users = _demo_users(result.stdout)
    # each user with its role, one per role: the admin and the auditor included
    assert {role for role, _ in users.values()} == {role.value for role in Role}
    passwords = {password for _, password in users.values()}
    assert len(passwords) == 1 and len(next(iter(passwords))) >= 12
    assert next(iter(passwords)) not in result.stderr  # printed, never logged
    assert "/docs" in result.stdout
    assert (tmp_path / "data" / "dicom-node.sqlite3").exists()
    again = run(tmp_path, "demo")
    assert again.returncode == 0, again.stderr
    assert not _demo_users(again.stdout)
    assert "passwords are unchanged" in again.stdout


def test_what_demo_says_to_try_next_works_against_serve(
    tmp_path: Path, served: list[Served]
) -> None:
    """The sign-in, storescu and findscu lines `demo` prints, run as printed
    against `serve` with the same settings (free ports instead of the defaults)."""
    ports = {"dicom_port": str(free_port()), "http_port": str(free_port())}
    demo = run(tmp_path, "demo", **ports)
    assert demo.returncode == 0, demo.stderr
    server = Served(tmp_path, **ports)
    served.append(server)
    server.ports()
    docs = re.search(r"sign in to the API at (\S+)/docs", demo.stdout)
    assert docs and docs.group(1) == f"http://127.0.0.1:{ports['http_port']}"
    assert httpx.get(f"{docs.group(1)}/docs", timeout=10).status_code == 200
    for username, (role, password) in _demo_users(demo.stdout).items():
        token = httpx.post(
            f"{docs.group(1)}/api/auth/token",
            data={"username": username, "password": password},
            timeout=10,
        )
        assert token.status_code == 200, username
        me = httpx.get(
            f"{docs.group(1)}/api/me",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=10,
        )
        assert me.json()["role"] == role
    store = _printed_command(demo.stdout, "/usr/bin/storescu")
    sent = subprocess.run(store, capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    assert sent.returncode == 0, sent.stderr
    find = _printed_command(demo.stdout, "/usr/bin/findscu")
    found = subprocess.run(find, capture_output=True, text=True, env=dcmtk_env(), timeout=60)
    assert found.returncode == 0, found.stderr
    answers = found.stdout + found.stderr
    for accession in ("DEMOACC0001", "DEMOACC0002", "DEMOACC0003", "DEMOACC0099"):
        assert accession in answers
    assert server.stop() == 0
    password = next(iter(_demo_users(demo.stdout).values()))[1]
    assert not any(password in line for line in server.lines)


def test_config_show_hides_the_database_password(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "config",
        "show",
        database_url="postgresql+psycopg://node:secret@db/dicom",
        peers="PACS@h:104",
    )
    assert result.returncode == 0, result.stderr
    assert "secret" not in result.stdout
    assert "peers = PACS@h:104" in result.stdout


def test_serve_starts_everything_answers_and_stops_on_sigterm(
    tmp_path: Path, empty_db_url: str, served: list[Served]
) -> None:
    server = Served(tmp_path, database_url=empty_db_url)
    served.append(server)
    dicom_port, http_port = server.ports()
    echo = subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", "DICOM_NODE", "127.0.0.1", str(dicom_port)],
        capture_output=True,
        env=dcmtk_env(),
        timeout=30,
    )
    assert echo.returncode == 0
    health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert server.stop(signal.SIGTERM) == 0
    assert server.wait_for_line(r"INFO dicom_node: stopped")


def test_sigint_aborts_an_association_still_open_after_the_grace_period(
    tmp_path: Path, served: list[Served]
) -> None:
    server = Served(tmp_path, shutdown_grace_seconds="1")
    served.append(server)
    dicom_port, _ = server.ports()
    ae = AE(ae_title="LINGERER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    started = time.monotonic()
    assert server.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 15
    server.wait_for_line(r"aborting association from LINGERER at [0-9.:]+ at shutdown")
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    # the database is left consistent: the node starts again on it
    restarted = Served(tmp_path)
    served.append(restarted)
    restarted.ports()
    assert restarted.stop() == 0
