"""Audit trail: a hash chain over every row, and no REPLACE over an existing row.

``prev_hash`` and ``row_hash`` on audit_events (domain/audit_chain.py), computed
here for the rows written before this revision, in id order; ``prev_hash`` is
unique, so the chain cannot fork. What the chain proves about rows older than
this upgrade: that they were not changed after it.

SQLite: ``INSERT OR REPLACE`` (and ``REPLACE INTO``) over an existing id - or
an existing prev_hash - deleted the old row without firing the delete trigger
(REPLACE's deletes fire triggers only under ``PRAGMA recursive_triggers``,
which a connection chooses itself), then inserted a rewritten one. A BEFORE
INSERT trigger now refuses any insert that would collide with an existing row,
before the conflict resolution runs; ``ON CONFLICT DO UPDATE`` is refused by it
as well (and would fire the UPDATE trigger).

PostgreSQL has no REPLACE; its ``ON CONFLICT DO UPDATE`` fires the UPDATE
trigger (and needs the UPDATE privilege, which the node's role no longer has
when the schema has an owner role: db/migrate.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicom_node.db.types import UTCDateTime
from dicom_node.domain.audit_chain import GENESIS_HASH, row_hash

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_APPEND_ONLY_MESSAGE = "audit_events is append-only"
_BATCH = 5000
_UNIQUE = "uq_audit_events_prev_hash"

# audit_events as this revision reads it (the models describe the newest schema)
_audit = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger()),
    sa.column("timestamp", UTCDateTime()),
    sa.column("event_code", sa.String()),
    sa.column("action", sa.String()),
    sa.column("outcome", sa.String()),
    sa.column("actor_user_id", sa.BigInteger()),
    sa.column("actor", sa.String()),
    sa.column("actor_role", sa.String()),
    sa.column("source_address", sa.String()),
    sa.column("target_class", sa.String()),
    sa.column("target_id", sa.String()),
    sa.column("patient_id", sa.String()),
    sa.column("study_instance_uid", sa.String()),
    sa.column("accession_number", sa.String()),
    sa.column("reason", sa.Text()),
    sa.column("details", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # the table is rebuilt below (NOT NULL): its triggers go with the old one
        _drop_sqlite_triggers()
    else:
        op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))
    _chain_existing_rows()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("row_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(_UNIQUE, ["prev_hash"])
    if sqlite:
        _create_sqlite_triggers(refuse_replace=True)
    else:
        op.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_sqlite_triggers()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint(_UNIQUE, type_="unique")
        batch_op.drop_column("row_hash")
        batch_op.drop_column("prev_hash")
    if sqlite:
        _create_sqlite_triggers(refuse_replace=False)


def _chain_existing_rows() -> None:
    """Hash every existing row, oldest id first, in batches (keyset paging: the
    trail may hold millions of Query events)."""
    bind = op.get_bind()
    columns = [column for column in _audit.c if column.name not in ("prev_hash", "row_hash")]
    update = (
        sa.update(_audit)
        .where(_audit.c.id == sa.bindparam("b_id"))
        .values(prev_hash=sa.bindparam("b_prev"), row_hash=sa.bindparam("b_hash"))
    )
    previous, last_id = GENESIS_HASH, None
    while True:
        query = sa.select(*columns).order_by(_audit.c.id).limit(_BATCH)
        if last_id is not None:
            query = query.where(_audit.c.id > last_id)
        rows = bind.execute(query).mappings().all()
        if not rows:
            return
        hashed = []
        for row in rows:
            digest = row_hash(dict(row), previous)
            hashed.append({"b_id": row["id"], "b_prev": previous, "b_hash": digest})
            previous = digest
        bind.execute(update, hashed)
        last_id = rows[-1]["id"]


def _drop_sqlite_triggers() -> None:
    for name in ("no_update", "no_delete", "no_replace"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_events_{name}")


def _create_sqlite_triggers(*, refuse_replace: bool) -> None:
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
        )
    if refuse_replace:
        # every unique key of the table: a REPLACE over any of them deletes the
        # row it collides with (without the delete trigger) and writes its own
        op.execute(
            "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "  # noqa: S608
            "WHEN EXISTS (SELECT 1 FROM audit_events "
            "WHERE id = NEW.id OR prev_hash = NEW.prev_hash) "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
        )
