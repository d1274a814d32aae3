"""Schema migrations (alembic), driven from code so the installed package carries them.

Two database roles on PostgreSQL (``database_owner_url``): the schema belongs to
an owner role the node never logs in as; the node's role (``database_url``)
gets DML on the tables it works with and only INSERT and SELECT on the audit
trail, so not even a compromised node can rewrite, delete or stop the trail's
protection (an owner alone may ALTER a table, e.g. DISABLE TRIGGER).
:func:`upgrade_schema` migrates as the owner and grants the node's role what
it needs, after every upgrade (a new table is covered at once). Default
privileges (ALTER DEFAULT PRIVILEGES) are deliberately not used: they would
hand full DML on every future table, an append-only one included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# What the node's role may do, per table (everything else: SELECT, INSERT,
# UPDATE, DELETE). The audit trail is append-only; the schema version is the
# owner's to change.
NODE_TABLE_PRIVILEGES = {
    "audit_events": "SELECT, INSERT",
    "alembic_version": "SELECT",
}
NODE_DEFAULT_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# nextval() needs USAGE; pg_dump (backups run as the node) reads sequences with SELECT
NODE_SEQUENCE_PRIVILEGES = "USAGE, SELECT"

# the relations of the schema (current_schema(): where the migrations create them)
_RELATIONS_SQL = """
SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner,
       pg_has_role(current_user, c.relowner, 'MEMBER') AS owned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S')
ORDER BY c.relname
"""


class SchemaAccessError(Exception):
    """The owner and node roles cannot be set up as configured; one line for the operator."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is alembic's interpolation character; a password may contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def upgrade_schema(
    database_url: str, owner_url: str = "", revision: str = "head"
) -> tuple[str | None, str | None]:
    """Create or upgrade the schema the way the node's commands must; returns
    the revisions before and after.

    Without ``owner_url`` (SQLite, or a single-role PostgreSQL install) the
    node's own login migrates and owns the schema. With it, the owner
    migrates, then the node's role is granted what it needs (again after
    every upgrade), and the node's own login must then see the schema at
    ``revision`` (the two URLs lead to the same database).
    """
    if not owner_url:
        before = _revision_at(database_url)
        try:
            upgrade(database_url, revision)
        except SQLAlchemyError as exc:
            # e.g. a two-role database whose owner URL was left out: no CREATE
            raise SchemaAccessError(f"the upgrade failed: {_reason(exc)}") from None
        return before, _revision_at(database_url)
    if make_url(database_url).get_backend_name() != "postgresql":
        raise SchemaAccessError("database_owner_url is for PostgreSQL only (SQLite has no roles)")
    role = node_role(database_url)
    # the roles first: the owner cannot even read the version of a schema it does not own
    _as_owner(owner_url, lambda connection: _check_roles(connection, role))
    before = _revision_at(owner_url)
    try:
        upgrade(owner_url, revision)
    except SQLAlchemyError as exc:
        raise SchemaAccessError(f"the upgrade as the owner failed: {_reason(exc)}") from None
    grant_node_role(owner_url, role)
    expected = _script_directory().get_current_head() if revision == "head" else revision
    found = _revision_at(database_url)
    if found != expected:
        raise SchemaAccessError(
            f"the owner upgraded the schema to {expected}, but database_url sees revision "
            f"{found or 'none'}: database_owner_url and database_url name different databases"
        )
    return before, found


def _revision_at(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    except SQLAlchemyError as exc:
        raise SchemaAccessError(f"cannot read the schema revision: {_reason(exc)}") from None
    finally:
        engine.dispose()


def node_role(database_url: str) -> str:
    """The role the node logs in as: database_url's user, else whom libpq picks."""
    username = make_url(database_url).username
    if username:
        return username
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT current_user")).scalar_one())
    finally:
        engine.dispose()


def grant_node_role(owner_url: str, role: str) -> None:
    """As the owner: the node's role gets exactly :data:`NODE_TABLE_PRIVILEGES`
    (and DML elsewhere) on every table of the schema, and what it needs on the
    sequences. Everything else it held there is revoked first, so running this
    again (every ``db upgrade`` does) restores the intended state."""
    _as_owner(owner_url, lambda connection: _grant(connection, role))


def _as_owner(owner_url: str, work: Callable[[Connection], None]) -> None:
    """``work`` in one transaction of the owner's; a database error in one line."""
    engine = make_engine(owner_url)
    try:
        with engine.begin() as connection:
            work(connection)
    except SQLAlchemyError as exc:
        raise SchemaAccessError(f"as database_owner_url's role: {_reason(exc)}") from None
    finally:
        engine.dispose()


def _reason(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _check_roles(connection: Connection, role: str) -> None:
    _owned_relations(connection, role)


def _owned_relations(connection: Connection, role: str) -> list[Row[Any]]:
    """The owner and node roles are two roles, and the owner owns every table and
    sequence of the schema (an install that began with one role: it does not
    yet); the schema's relations."""
    owner = str(connection.execute(text("SELECT current_user")).scalar_one())
    if role == owner:
        raise SchemaAccessError(
            f"database_owner_url and database_url both log in as {role!r}: the owner must be "
            "another role, or leave database_owner_url empty (single-role install)"
        )
    if not connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first():
        raise SchemaAccessError(f"role {role!r} (database_url's user) does not exist")
    relations = list(connection.execute(text(_RELATIONS_SQL)).all())
    foreign = sorted({str(row.owner) for row in relations if not row.owned})
    if foreign:
        raise SchemaAccessError(
            f"tables of the schema are owned by {', '.join(foreign)}, not by {owner}: as a "
            f"superuser, run REASSIGN OWNED BY {', '.join(foreign)} TO {owner} in this "
            "database first (docs: two database roles)"
        )
    return relations


def _grant(connection: Connection, role: str) -> None:
    quote = connection.dialect.identifier_preparer.quote_identifier
    relations = _owned_relations(connection, role)
    schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
    if not connection.execute(
        text("SELECT has_schema_privilege(:r, :s, 'USAGE')"), {"r": role, "s": schema}
    ).scalar_one():
        connection.execute(text(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quote(role)}"))
    grantee = quote(role)
    for row in relations:
        name = f"{quote(schema)}.{quote(str(row.relname))}"
        if row.relkind == "S":
            connection.execute(text(f"REVOKE ALL ON SEQUENCE {name} FROM {grantee}"))
            connection.execute(
                text(f"GRANT {NODE_SEQUENCE_PRIVILEGES} ON SEQUENCE {name} TO {grantee}")
            )
            continue
        privileges = NODE_TABLE_PRIVILEGES.get(str(row.relname), NODE_DEFAULT_TABLE_PRIVILEGES)
        connection.execute(text(f"REVOKE ALL ON TABLE {name} FROM {grantee}"))
        connection.execute(text(f"GRANT {privileges} ON TABLE {name} TO {grantee}"))


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str | None:
    return _script_directory().get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
