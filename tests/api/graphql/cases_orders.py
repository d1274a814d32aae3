"""The orders and reconciliation areas' operations for the permission matrix:
one per permission their root fields use (ids name nothing, inputs are
refused before anything is written: an allowed role gets NOT_FOUND or
BAD_USER_INPUT, never FORBIDDEN)."""

from __future__ import annotations

from dicom_node.domain.permissions import Permission
from tests.api.graphql.conftest import PermissionCase

NOBODY = 987654

CASES: list[PermissionCase] = [
    PermissionCase(Permission.ORDERS_READ, "{ orders(first: 1) { totalCount } }"),
    PermissionCase(Permission.ORDERS_READ, f"{{ order(id: {NOBODY}) {{ id }} }}"),
    PermissionCase(
        Permission.ORDERS_CREATE,
        'mutation { createOrder(input: {patientId: "P", patientName: "", '
        'requestedModality: "CT", studyDescription: "CT Head"}) { id } }',
    ),
    PermissionCase(
        Permission.ORDERS_CREATE,
        f"mutation {{ updateOrder(id: {NOBODY}, input: {{priority: STAT}}) {{ id }} }}",
    ),
    PermissionCase(
        Permission.ORDERS_SCHEDULE,
        f"mutation {{ scheduleOrder(id: {NOBODY}, input: {{modalityId: 1, "
        f'scheduledAt: "2026-11-24T14:30:00Z"}}) {{ id }} }}',
    ),
    PermissionCase(
        Permission.ORDERS_CANCEL, f'mutation {{ cancelOrder(id: {NOBODY}, reason: "x") {{ id }} }}'
    ),
    PermissionCase(Permission.ORDERS_PERFORM, f"mutation {{ startOrder(id: {NOBODY}) {{ id }} }}"),
    PermissionCase(
        Permission.ORDERS_PERFORM, f"mutation {{ completeOrder(id: {NOBODY}) {{ id }} }}"
    ),
    PermissionCase(Permission.RECONCILE, "{ reconciliation(first: 1) { totalCount } }"),
    PermissionCase(
        Permission.RECONCILE,
        f"mutation {{ linkStudyToOrder(studyId: {NOBODY}, "
        f'input: {{orderId: {NOBODY}, reason: "x"}}) {{ readingItemId }} }}',
    ),
    PermissionCase(
        Permission.RECONCILE,
        f'mutation {{ releaseStudyToReading(studyId: {NOBODY}, input: {{reason: "x"}}) '
        "{ readingItemId } }",
    ),
    PermissionCase(
        Permission.RECONCILE,
        f'mutation {{ createOrderFromStudy(studyId: {NOBODY}, input: {{reason: "x"}}) '
        "{ readingItemId } }",
    ),
    PermissionCase(
        Permission.RECONCILE,
        f'mutation {{ resolveReconciliationItem(itemId: {NOBODY}, input: {{reason: "x"}}) '
        "{ kind } }",
    ),
]
