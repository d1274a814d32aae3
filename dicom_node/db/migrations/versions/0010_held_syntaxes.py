"""The (SOP class, transfer syntax) pairs the store holds, for the C-GET acceptor.

The C-GET acceptor (scp/get_negotiation.py) puts a lossy syntax first for a
storage SOP class only when the store holds that class in that syntax alone.
It read that from a sample of the most recent instances, cached for a minute,
so an instance of the class in another syntax (stored since, or older than
the sample) could make it accept a syntax that instance cannot be sent in.
This table holds every pair exactly: filled here from the instances already
stored, then by ingest with the first instance of each new pair, in the same
transaction (db/held_syntaxes.py). A pair is never removed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_syntaxes",
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sop_class_uid", "transfer_syntax_uid", name="pk_held_syntaxes"),
    )
    # one statement: the database reads the instances once, whatever their number
    op.execute(
        "INSERT INTO held_syntaxes (sop_class_uid, transfer_syntax_uid) "
        "SELECT DISTINCT sop_class_uid, transfer_syntax_uid FROM dicom_instances"
    )


def downgrade() -> None:
    op.drop_table("held_syntaxes")
