"""Service accounts and their API keys.

``users.kind``: ``person`` (signs in with a password) or ``service`` (a viewer,
a pipeline, a portal: calls with an API key, never signs in). ``api_keys``: the
keys, stored as SHA-256 only (services/access/api_keys.py). The node's
PostgreSQL role gets DML on the new table from the grant every upgrade runs
(db/migrate.py).

SQLite: the column is added in place (ADD COLUMN with its CHECK); a batch
rebuild would drop and recreate ``users``, which most tables reference.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicom_node.db.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CHECK = "ck_users_kind_allowed"
_KINDS = "kind IN ('person', 'service')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE users ADD COLUMN kind VARCHAR(16) DEFAULT 'person' NOT NULL "
            f"CONSTRAINT {_CHECK} CHECK ({_KINDS})"
        )
    else:
        op.add_column(
            "users",
            sa.Column("kind", sa.String(16), nullable=False, server_default="person"),
        )
        op.create_check_constraint(_CHECK, "users", _KINDS)
    op.create_table(
        "api_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.String(256), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by_user_id", ID, nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_from", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_keys_user_id_users"),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"], ["users.id"], name="fk_api_keys_created_by_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
    if op.get_bind().dialect.name == "sqlite":
        # in place again (SQLite 3.35+; the column's own CHECK goes with it)
        op.execute("ALTER TABLE users DROP COLUMN kind")
    else:
        op.drop_constraint(_CHECK, "users", type_="check")
        op.drop_column("users", "kind")
