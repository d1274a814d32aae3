"""Who may do what: the one permission table of the node (reproduced in the README).

Routes name the permission they need; nothing checks a role by name anywhere
else. Ownership rules that depend on the record (a referring physician sees
only the orders they placed or are the referrer of, services/access/visibility.py;
only the assigned radiologist edits a draft; a reviewer is not the author)
live in the services, next to the state they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dicom_node.domain.enums import Role


class Permission(StrEnum):
    USERS_MANAGE = "users:manage"
    FACILITIES_READ = "facilities:read"
    FACILITIES_MANAGE = "facilities:manage"
    ORDERS_READ = "orders:read"
    ORDERS_CREATE = "orders:create"
    ORDERS_SCHEDULE = "orders:schedule"
    ORDERS_CANCEL = "orders:cancel"
    ORDERS_PERFORM = "orders:perform"
    STUDIES_READ = "studies:read"
    STUDIES_CORRECT = "studies:correct"
    STUDIES_SEND = "studies:send"
    IMAGES_STORE = "images:store"
    RECONCILE = "reconciliation:manage"
    WORKLIST_READ = "worklist:read"
    WORKLIST_CLAIM = "worklist:claim"
    WORKLIST_REASSIGN = "worklist:reassign"
    REPORTS_READ = "reports:read"
    REPORTS_WRITE = "reports:write"
    REPORTS_FINALIZE = "reports:finalize"
    CRITICAL_COMMUNICATE = "critical:communicate"
    AUDIT_READ = "audit:read"
    TURNAROUND_READ = "turnaround:read"
    CHANGES_READ = "changes:read"
    VIEW_METRICS = "metrics:read"


_A = Role.ADMIN
_S = Role.SCHEDULER
_T = Role.TECHNOLOGIST
_R = Role.RADIOLOGIST
_P = Role.REFERRING_PHYSICIAN
_U = Role.AUDITOR

ROLE_PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.USERS_MANAGE: frozenset({_A}),
    Permission.FACILITIES_READ: frozenset({_A, _S, _T, _R, _U}),
    Permission.FACILITIES_MANAGE: frozenset({_A}),
    Permission.ORDERS_READ: frozenset({_A, _S, _T, _R, _P, _U}),
    Permission.ORDERS_CREATE: frozenset({_A, _S, _P}),
    Permission.ORDERS_SCHEDULE: frozenset({_A, _S}),
    # a referring physician may cancel only an order they placed, only while requested
    Permission.ORDERS_CANCEL: frozenset({_A, _S, _P}),
    Permission.ORDERS_PERFORM: frozenset({_A, _T}),
    Permission.STUDIES_READ: frozenset({_A, _S, _T, _R, _P, _U}),
    Permission.STUDIES_CORRECT: frozenset({_A, _S, _T}),
    # a study's instances sent to a configured peer (C-STORE, as a C-MOVE's
    # sub-operations): the people who route images between systems
    Permission.STUDIES_SEND: frozenset({_A, _T}),
    # STOW-RS (DICOMweb); reading images is studies:read, within the visibility rule
    Permission.IMAGES_STORE: frozenset({_A, _T}),
    Permission.RECONCILE: frozenset({_A, _S}),
    Permission.WORKLIST_READ: frozenset({_A, _S, _T, _R, _U}),
    Permission.WORKLIST_CLAIM: frozenset({_R}),
    # radiologists need is_lead as well (checked in the service)
    Permission.WORKLIST_REASSIGN: frozenset({_A, _R}),
    Permission.REPORTS_READ: frozenset({_A, _R, _P, _U}),
    Permission.REPORTS_WRITE: frozenset({_R}),
    Permission.REPORTS_FINALIZE: frozenset({_R}),
    Permission.CRITICAL_COMMUNICATE: frozenset({_R}),
    Permission.AUDIT_READ: frozenset({_A, _U}),
    Permission.TURNAROUND_READ: frozenset({_A, _S, _R, _U}),
    Permission.CHANGES_READ: frozenset({_A, _S, _T, _R, _P, _U}),
    # GET /metrics; Prometheus itself scrapes with the static metrics_token setting
    Permission.VIEW_METRICS: frozenset({_A}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return role in ROLE_PERMISSIONS[permission]


def permission_table_markdown() -> str:
    """The table as the README shows it (a test keeps the two equal)."""
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(role.value for role in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for permission, holders in ROLE_PERMISSIONS.items():
        marks = " | ".join("x" if role in holders else "" for role in roles)
        lines.append(f"| `{permission.value}` | {marks} |")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user (or service account) a request acts for.

    ``scopes``: for a request made with a service account's API key, the
    permissions the key's scopes grant (domain/api_keys.py); the request may
    do what the role allows *and* the key grants. ``None``: a person's sign-in
    token, limited by the role alone. ``api_key_id``: the key used, if any.
    """

    user_id: int
    username: str
    role: Role
    is_lead: bool = False
    display_name: str | None = None
    scopes: frozenset[Permission] | None = None
    api_key_id: int | None = None

    def can(self, permission: Permission) -> bool:
        if self.scopes is not None and permission not in self.scopes:
            return False
        return allowed(self.role, permission)
