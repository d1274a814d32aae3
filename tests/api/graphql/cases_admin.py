"""The admin area's operations (users, facilities) and the audit area's (the
trail, turnaround) for the permission matrix: one per permission their root
fields use."""

from __future__ import annotations

from dicom_node.domain.permissions import Permission
from tests.api.graphql.conftest import PermissionCase

CASES: list[PermissionCase] = [
    PermissionCase(Permission.USERS_MANAGE, "{ users(first: 1) { totalCount } }"),
    PermissionCase(Permission.FACILITIES_READ, "{ imagingCenters(first: 1) { totalCount } }"),
    PermissionCase(Permission.FACILITIES_READ, "{ modalities(first: 1) { totalCount } }"),
    PermissionCase(
        Permission.USERS_MANAGE,
        "mutation { updateUser(id: 987654, input: {isLead: true}) { id } }",
    ),
    PermissionCase(
        Permission.FACILITIES_MANAGE,
        'mutation { updateImagingCenter(id: 987654, input: {location: "x"}) { id } }',
    ),
    PermissionCase(
        Permission.FACILITIES_MANAGE,
        'mutation { updateModality(id: 987654, input: {name: "x"}) { id } }',
    ),
    PermissionCase(Permission.AUDIT_READ, "{ auditEvents(first: 1) { totalCount } }"),
    PermissionCase(Permission.TURNAROUND_READ, "{ turnaround { groupBy } }"),
]
