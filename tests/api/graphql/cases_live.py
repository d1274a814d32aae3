"""Permission-matrix cases of the subscriptions (api/graphql/subscriptions.py).

Each subscribes with ``since: -1``: the permission is checked first (FORBIDDEN),
then the argument (BAD_USER_INPUT), so an allowed role's subscription ends at
once too, and the matrix needs no change in the feed to tell the two apart.
``me`` needs no permission: it is not a case.
"""

from __future__ import annotations

from dicom_node.domain.permissions import Permission
from tests.api.graphql.conftest import PermissionCase

CASES: list[PermissionCase] = [
    PermissionCase(Permission.CHANGES_READ, "subscription { changes(since: -1) { seq } }"),
    PermissionCase(Permission.WORKLIST_READ, "subscription { worklistChanges(since: -1) { seq } }"),
    PermissionCase(Permission.REPORTS_READ, "subscription { reportChanges(since: -1) { seq } }"),
    PermissionCase(Permission.ORDERS_READ, "subscription { orderChanges(since: -1) { seq } }"),
]
