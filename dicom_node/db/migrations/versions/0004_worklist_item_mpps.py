"""Work items: the MPPS behind a reconciliation item for an unscheduled exam.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("worklist_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "performed_procedure_step_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.create_foreign_key(
            "fk_worklist_items_performed_procedure_step_id",
            "performed_procedure_steps",
            ["performed_procedure_step_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("worklist_items", schema=None) as batch_op:
        batch_op.drop_constraint(
            "fk_worklist_items_performed_procedure_step_id", type_="foreignkey"
        )
        batch_op.drop_column("performed_procedure_step_id")
