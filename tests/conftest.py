"""Fixtures: every database test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.domain.audit import SystemActor
from dicom_node.node import Node
from dicom_node.services.access import passwords
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.settings import Settings
from tests.support import SAMPLE_DIR, PostgresServer, Served, run_postgres

PG_TEMPLATE = "dicom_node_template"
# argon2id at a low cost: the suite creates hundreds of accounts, and the default
# cost (~0.1 s a hash here) would be minutes of CI. The algorithm is the same.
CHEAP_HASHING = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 1024,
    "password_hash_parallelism": 1,
}
passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)
_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with run_postgres() as server:
        with psycopg.connect(server.psycopg_dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_TEMPLATE}")
        # migrate once; every test gets a copy (CREATE DATABASE ... TEMPLATE is a file copy)
        migrate.upgrade(server.url(PG_TEMPLATE))
        yield server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh database with the current schema, on the chosen backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    return _new_postgres_database(request, template=PG_TEMPLATE)


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all, on the chosen backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    return _new_postgres_database(request, template=None)


def _new_postgres_database(request: pytest.FixtureRequest, *, template: str | None) -> str:
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"test_{next(_counter)}"
    clause = f" TEMPLATE {template}" if template else ""
    with psycopg.connect(server.psycopg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}{clause}")
    return server.url(name)


# The two roles of a hardened PostgreSQL install (db/migrate.py): the schema's
# owner, and the role the node logs in as. Server-wide, made once per server.
OWNER_ROLE = "dicom_owner"
NODE_ROLE = "dicom_app"


@dataclass(frozen=True)
class TwoRoleDatabase:
    """An empty database owned by OWNER_ROLE; ``node_url`` logs in as NODE_ROLE,
    which holds nothing in it until the owner grants (``db upgrade``, ``serve``
    creating the schema, ``restore``, all with ``database_owner_url``)."""

    name: str
    owner_url: str
    node_url: str


@pytest.fixture(scope="session")
def postgres_roles(postgres: PostgresServer) -> PostgresServer:
    with psycopg.connect(postgres.psycopg_dsn(), autocommit=True) as conn:
        for role in (OWNER_ROLE, NODE_ROLE):
            conn.execute(f"CREATE ROLE {role} LOGIN")
    return postgres


@pytest.fixture
def make_two_role_db(postgres_roles: PostgresServer) -> Callable[[], TwoRoleDatabase]:
    """New, empty PostgreSQL databases for a two-role install (not parametrized:
    SQLite has no roles)."""

    def make() -> TwoRoleDatabase:
        name = f"test_{next(_counter)}"
        with psycopg.connect(postgres_roles.psycopg_dsn(), autocommit=True) as conn:
            # the owner owns the database, and so (PostgreSQL 15+) its public schema
            conn.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
        return TwoRoleDatabase(
            name,
            owner_url=postgres_roles.url(name, user=OWNER_ROLE),
            node_url=postgres_roles.url(name, user=NODE_ROLE),
        )

    return make


@pytest.fixture
def two_role_db(make_two_role_db: Callable[[], TwoRoleDatabase]) -> TwoRoleDatabase:
    return make_two_role_db()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def node_settings(db_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "bind_host": "127.0.0.1",
        "dicom_port": 0,
        "http_port": 0,
        "shutdown_grace_seconds": 1.0,
        # in-process SCP unless a test asks for worker processes
        "dicom_workers": 1,
        **CHEAP_HASHING,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_node(db_url: str, tmp_path: Path) -> Iterator[object]:
    """Start a node in-process on ephemeral ports; ``make_node(**settings)``."""
    nodes: list[Node] = []

    def start(**overrides: object) -> Node:
        node = Node(node_settings(db_url, tmp_path / "data", **overrides))
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(make_node) -> Node:  # type: ignore[no-untyped-def]
    return make_node()  # type: ignore[no-any-return]


@pytest.fixture
def sample_node(make_node) -> Node:  # type: ignore[no-untyped-def]
    """A node holding sample_dicom/, imported as `dicom-node import` does."""
    node: Node = make_node()
    assert node.db is not None and node.store is not None
    import_files(
        node.db, node.store, list(iter_files([SAMPLE_DIR])), policy=IngestPolicy(),
        actor=SystemActor.IMPORT,
    )  # fmt: skip
    return node


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill_all()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)  # orphaned workers
