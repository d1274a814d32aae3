"""The permission-matrix cases of the studies and worklist areas: one
operation per permission their root fields use (ids that name nothing: an
allowed role gets NOT_FOUND, never FORBIDDEN).

``reassignWorklistItem`` (worklist:reassign): the table grants it to every
radiologist, the service to a lead only (as on REST): the matrix's
radiologist is a lead; test_worklist.py checks a plain radiologist's refusal.

Not here, and why:
- the edges ``order`` (orders:read) and ``report`` (reports:read) of a study
  or an item are checked only when there is a study to lead from: the
  report edge is covered by test_studies.py on a stored study.
"""

from __future__ import annotations

from dicom_node.domain.permissions import Permission
from tests.api.graphql.conftest import PermissionCase

NO_SUCH_ID = 2_000_000_000

CASES: list[PermissionCase] = [
    PermissionCase(Permission.STUDIES_READ, "{ studies(first: 1) { totalCount } }"),
    PermissionCase(
        Permission.STUDIES_READ,
        "query ($id: Int!) { study(id: $id) { id } }",
        {"id": NO_SUCH_ID},
    ),
    PermissionCase(
        Permission.STUDIES_READ,
        "query ($uid: String!) { studyByUid(uid: $uid) { id } }",
        {"uid": "1.2.3.4.5.6.7.8.9"},
    ),
    PermissionCase(Permission.WORKLIST_READ, "{ worklist(first: 1) { totalCount } }"),
    PermissionCase(
        Permission.WORKLIST_READ,
        "query ($id: Int!) { worklistItem(id: $id) { id } }",
        {"id": NO_SUCH_ID},
    ),
    PermissionCase(
        Permission.WORKLIST_READ,
        "mutation ($id: Int!) { releaseWorklistItem(id: $id) { id } }",
        {"id": NO_SUCH_ID},
    ),
    PermissionCase(
        Permission.WORKLIST_REASSIGN,
        "mutation ($id: Int!) { reassignWorklistItem(id: $id, userId: $id) { id } }",
        {"id": NO_SUCH_ID},
    ),
    PermissionCase(
        Permission.WORKLIST_CLAIM,
        "mutation ($id: Int!) { claimWorklistItem(id: $id) { id } }",
        {"id": NO_SUCH_ID},
    ),
]
