"""The order's referring physician as a user (the referrer's visibility rule).

A referring physician saw only orders they had created themselves; an order a
scheduler booked for them, with their name in ReferringPhysicianName, stayed
invisible to them, report included. ``referring_physician_id`` names the user
the order is for (services/access/visibility.py). Existing orders are linked
as new ones are (``services/workflow/order_referrer.py``): an order whose
ReferringPhysicianName is the DICOM name (display name, by the PN folding
rule) of exactly one active referring physician is theirs; others stay
unlinked until a scheduler picks the physician.

SQLite: the column is added in place (ADD COLUMN ... REFERENCES). A batch
rebuild would drop and recreate imaging_requests, which rows of studies, work
items and reports reference: with foreign keys on, SQLite refuses the DROP
(and with cascading keys it would delete them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from dicom_node.domain.names import fold_person_name

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_FK = "fk_imaging_requests_referring_physician_id_users"
_INDEX = "ix_imaging_requests_referring_physician_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE imaging_requests ADD COLUMN referring_physician_id INTEGER "
            f"CONSTRAINT {_FK} REFERENCES users (id)"
        )
    else:
        op.add_column(
            "imaging_requests",
            sa.Column("referring_physician_id", sa.BigInteger(), nullable=True),
        )
        op.create_foreign_key(_FK, "imaging_requests", "users", ["referring_physician_id"], ["id"])
    op.create_index(_INDEX, "imaging_requests", ["referring_physician_id"])
    _link_by_name()


def _link_by_name() -> None:
    """The name rule of order_referrer.matched_referrer, over the orders already
    stored (a copy here: a migration must not change when the service does)."""
    bind = op.get_bind()
    by_name: dict[str, list[int]] = defaultdict(list)
    for user_id, display in bind.execute(
        sa.text(
            "SELECT id, display_name FROM users WHERE role = 'referring_physician' AND is_active"
        )
    ):
        folded = fold_person_name(display.strip()) if display else ""
        if folded:
            by_name[folded].append(user_id)
    if not by_name:
        return
    orders = bind.execute(
        sa.text(
            "SELECT id, referring_physician_name FROM imaging_requests "
            "WHERE referring_physician_name IS NOT NULL"
        )
    ).all()
    for order_id, name in orders:
        found = by_name.get(fold_person_name(name))
        if found is not None and len(found) == 1:
            bind.execute(
                sa.text(
                    "UPDATE imaging_requests SET referring_physician_id = :user WHERE id = :id"
                ),
                {"user": found[0], "id": order_id},
            )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="imaging_requests")
    if op.get_bind().dialect.name == "sqlite":
        # in place again (SQLite 3.35+): no rebuild of a table others reference
        op.execute("ALTER TABLE imaging_requests DROP COLUMN referring_physician_id")
    else:
        op.drop_constraint(_FK, "imaging_requests", type_="foreignkey")
        op.drop_column("imaging_requests", "referring_physician_id")
