"""The reports area's operations for the permission matrix: one per permission
its root fields use (ids name nothing: an allowed role gets NOT_FOUND)."""

from __future__ import annotations

from dicom_node.domain.permissions import Permission
from tests.api.graphql.conftest import PermissionCase

MISSING = 987654

CASES: list[PermissionCase] = [
    PermissionCase(Permission.REPORTS_READ, "{ reports(first: 1) { totalCount } }"),
    PermissionCase(
        Permission.REPORTS_READ, "query($id: Int!) { report(id: $id) { id } }", {"id": MISSING}
    ),
    PermissionCase(
        Permission.REPORTS_WRITE,
        "mutation($s: Int!) { createReport(input: {studyId: $s}) { id } }",
        {"s": MISSING},
    ),
    PermissionCase(
        Permission.REPORTS_WRITE,
        'mutation($id: Int!) { updateReport(id: $id, input: {findings: "x"}) { id } }',
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.REPORTS_WRITE,
        "mutation($id: Int!) { submitReport(id: $id) { id } }",
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.REPORTS_WRITE,
        "mutation($id: Int!) { addendum(id: $id, input: {}) { id } }",
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.REPORTS_FINALIZE,
        "mutation($id: Int!) { signReport(id: $id) { id } }",
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.REPORTS_FINALIZE,
        'mutation($id: Int!) { returnReport(id: $id, comment: "why") { id } }',
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.CRITICAL_COMMUNICATE,
        """mutation($id: Int!) {
          recordCriticalCommunication(reportId: $id, input: {
            finding: "f", communicatedTo: "Dr W", method: PHONE,
            communicatedAt: "2026-01-01T00:00:00Z"
          }) { id }
        }""",
        {"id": MISSING},
    ),
    PermissionCase(
        Permission.CRITICAL_COMMUNICATE,
        """mutation($id: Int!) {
          acknowledgeCriticalCommunication(reportId: $id, communicationId: $id) { id }
        }""",
        {"id": MISSING},
    ),
]
