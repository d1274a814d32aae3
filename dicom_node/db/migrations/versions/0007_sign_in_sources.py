"""Sign-in: failures and lock-outs per account and source address.

A lock-out per (account, source address) means failures from one address do
not lock the account's owner out at their own workstation; the account-wide
counter on ``users`` stays, at a higher threshold, for addresses the account
never signed in from (see services/access/auth.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicom_node.db.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sign_in_sources",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("source_address", sa.String(64), nullable=False),
        sa.Column("failed_sign_ins", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_sign_in_sources_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_sign_in_sources"),
        sa.UniqueConstraint(
            "user_id", "source_address", name="uq_sign_in_sources_user_id_source_address"
        ),
    )


def downgrade() -> None:
    op.drop_table("sign_in_sources")
