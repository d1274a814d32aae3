"""Studies and series: StudyTime/SeriesTime normalised for TM range matching.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 17:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicom_node.domain.vr import normalize_tm

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = (("dicom_studies", "study_time"), ("dicom_series", "series_time"))


def upgrade() -> None:
    connection = op.get_bind()
    for table, column in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(f"{column}_norm", sa.String(length=13), nullable=True))
        rows = connection.execute(
            sa.text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608
        ).all()
        for row_id, value in rows:
            connection.execute(
                sa.text(f"UPDATE {table} SET {column}_norm = :norm WHERE id = :id"),  # noqa: S608
                {"norm": normalize_tm(value), "id": row_id},
            )


def downgrade() -> None:
    for table, column in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(f"{column}_norm")
