"""The change feed records the order behind each entry, not one owner.

``change_log.owner_user_id`` named the one user (the order's requester) who
could see an entry, fixed when it was written. An order now has two possible
viewers among referring physicians, its requester and its referrer, and the
referrer can be linked later; so each entry records the order behind it
(``order_id``; a report's only once final) and the visibility rule
(services/access/visibility.py) is applied when the feed is read.

Existing entries get the order of their row: an order's own id, a study's or a
work item's order; a report entry only where it had an owner (it was final).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.add_column(sa.Column("order_id", sa.BigInteger(), nullable=True))
        batch.create_index("ix_change_log_order_id", ["order_id"])
    op.execute("UPDATE change_log SET order_id = entity_id WHERE entity = 'order'")
    op.execute(
        "UPDATE change_log SET order_id = (SELECT imaging_request_id FROM dicom_studies "
        "WHERE dicom_studies.id = change_log.entity_id) WHERE entity = 'study'"
    )
    op.execute(
        "UPDATE change_log SET order_id = (SELECT imaging_request_id FROM worklist_items "
        "WHERE worklist_items.id = change_log.entity_id) WHERE entity = 'worklist_item'"
    )
    op.execute(
        "UPDATE change_log SET order_id = (SELECT dicom_studies.imaging_request_id "
        "FROM reports JOIN dicom_studies ON dicom_studies.id = reports.dicom_study_id "
        "WHERE reports.id = change_log.entity_id) "
        "WHERE entity = 'report' AND owner_user_id IS NOT NULL"
    )
    with op.batch_alter_table("change_log") as batch:
        batch.drop_column("owner_user_id")


def downgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.add_column(sa.Column("owner_user_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE change_log SET owner_user_id = (SELECT requested_by_id FROM imaging_requests "
        "WHERE imaging_requests.id = change_log.order_id) WHERE order_id IS NOT NULL"
    )
    with op.batch_alter_table("change_log") as batch:
        batch.drop_index("ix_change_log_order_id")
        batch.drop_column("order_id")
