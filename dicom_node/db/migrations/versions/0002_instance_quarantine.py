"""Instances: the PatientID received, and a quarantine flag for conflicts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:41:46.379345
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("received_patient_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("quarantined", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.drop_column("quarantined")
        batch_op.drop_column("received_patient_id")
