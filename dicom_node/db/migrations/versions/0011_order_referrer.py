"""The order's referring physician as a user (the referrer's visibility rule).

A referring physician saw only orders they had created themselves; an order a
scheduler booked for them, with their name in ReferringPhysicianName, stayed
invisible to them, report included. ``referring_physician_id`` names the user
the order is for (services/access/visibility.py). Existing orders keep it
empty: who they were for was never recorded as a user.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot add a foreign key to an existing table in place
    with op.batch_alter_table("imaging_requests") as batch:
        batch.add_column(
            sa.Column(
                "referring_physician_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch.create_foreign_key(
            "fk_imaging_requests_referring_physician_id_users",
            "users",
            ["referring_physician_id"],
            ["id"],
        )
        batch.create_index("ix_imaging_requests_referring_physician_id", ["referring_physician_id"])


def downgrade() -> None:
    with op.batch_alter_table("imaging_requests") as batch:
        batch.drop_index("ix_imaging_requests_referring_physician_id")
        batch.drop_constraint(
            "fk_imaging_requests_referring_physician_id_users", type_="foreignkey"
        )
        batch.drop_column("referring_physician_id")
