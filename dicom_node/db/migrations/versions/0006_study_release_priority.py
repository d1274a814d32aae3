"""Studies: the priority an unmatched study was released to reading at.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_priority", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.drop_column("release_priority")
