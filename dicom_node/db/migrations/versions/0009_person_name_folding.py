"""Person names: every PN key matched by one case-insensitive rule.

A folded copy (domain/names.py) next to every PN column the node matches:
ReferringPhysicianName of studies and orders, and the PN attributes indexed
from now on: NameOfPhysiciansReadingStudy (studies), PerformingPhysicianName
(series), the worklist's RequestingPhysician and
ScheduledPerformingPhysicianName (orders). The rows written before this
revision get their copies here, and the PatientName copies are folded again:
the fold now also drops trailing empty components (``DOE^JOHN^^`` is
``DOE^JOHN``). The newly indexed attributes stay empty for what was stored
before; the files keep them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 12:00:00
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from dicom_node.domain.names import fold_person_name

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PN = 324  # the PN columns' width (db/models.py); a folded copy is cut to it
_BATCH = 5000

# table -> PN columns added with their folded copy
_NEW_NAMES = {
    "dicom_studies": ("name_of_physicians_reading_study",),
    "dicom_series": ("performing_physician_name",),
    "imaging_requests": ("requesting_physician", "scheduled_performing_physician_name"),
}
# table -> existing PN columns given a folded copy
_NEW_COPIES = {
    "dicom_studies": ("referring_physician_name",),
    "imaging_requests": ("referring_physician_name",),
}
# (table, PN column) whose copies exist already, folded again; then those of _NEW_COPIES
_REFOLDED = (
    ("patients", "patient_name"),
    ("imaging_requests", "patient_name"),
    *((table, column) for table, columns in _NEW_COPIES.items() for column in columns),
)


def upgrade() -> None:
    for table in dict.fromkeys([*_NEW_NAMES, *_NEW_COPIES]):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in _NEW_NAMES.get(table, ()):
                batch_op.add_column(sa.Column(column, sa.String(length=_PN), nullable=True))
            for column in (*_NEW_NAMES.get(table, ()), *_NEW_COPIES.get(table, ())):
                batch_op.add_column(
                    sa.Column(f"{column}_folded", sa.String(length=_PN), nullable=True)
                )
    for table, column in _REFOLDED:
        _fold_existing(table, column)


def _fold_existing(table: str, column: str) -> None:
    """Set ``<column>_folded`` of every row holding a name, in batches of ids;
    only rows whose copy changes are written."""
    connection = op.get_bind()
    rows = sa.table(
        table,
        sa.column("id", sa.BigInteger()),
        sa.column(column, sa.String()),
        sa.column(f"{column}_folded", sa.String()),
    )
    source, copy = rows.c[column], rows.c[f"{column}_folded"]
    update = (
        sa.update(rows)
        .where(rows.c.id == sa.bindparam("row_id"))
        .values({copy: sa.bindparam("folded")})
    )
    last = None
    while True:
        query = sa.select(rows.c.id, source, copy).where(source.is_not(None))
        if last is not None:
            query = query.where(rows.c.id > last)
        batch = connection.execute(query.order_by(rows.c.id).limit(_BATCH)).all()
        if not batch:
            return
        changed = list(_changed(batch))
        if changed:
            connection.execute(update, changed)
        last = batch[-1][0]


def _changed(batch: Sequence[Any]) -> Iterator[dict[str, object]]:
    for row_id, name, current in batch:
        folded = fold_person_name(name)[:_PN]
        if folded != current:
            yield {"row_id": row_id, "folded": folded}


def downgrade() -> None:
    for table in dict.fromkeys([*_NEW_NAMES, *_NEW_COPIES]):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in (*_NEW_NAMES.get(table, ()), *_NEW_COPIES.get(table, ())):
                batch_op.drop_column(f"{column}_folded")
            for column in _NEW_NAMES.get(table, ()):
                batch_op.drop_column(column)
