"""Where each page lives, which paths are pages, and the navigation.

One place for the pages' URLs: the security headers give every path here the
pages' Content-Security-Policy (``is_page_path``), the HTTP metrics count them
as ``pages``, and the header's navigation shows a link only to a user whose
role holds the link's permission (from the one permission table). A page under
a prefix not listed here would get the API's policy, which loads nothing: the
omission shows up as a broken page in the browser tests, never as a page
without a policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.domain.permissions import Permission, Principal

HOME_URL = "/"
SIGN_IN_URL = "/sign-in"
SIGN_OUT_URL = "/sign-out"
STATIC_URL = "/static"
WORKLIST_URL = "/worklist"
# /viewer/{study_uid}: the study viewer with the report editor beside the images
VIEWER_URL = "/viewer"
# /reports/{report_id}/print: a report as the referrer prints it
REPORTS_URL = "/reports"
ORDERS_URL = "/orders"
SCHEDULED_STEPS_URL = "/scheduled-steps"
RECONCILIATION_URL = "/reconciliation"
# the referring physician's own orders, studies and signed reports
REFERRALS_URL = "/referrals"
ADMIN_URL = "/admin"
# where a technologist (studies:send without users:manage) sends a study
SEND_STUDY_URL = ADMIN_URL + "/send"
AUDIT_URL = "/audit"
TURNAROUND_URL = "/turnaround"

# a page is one of these paths or below one of these prefixes (``/`` only exactly)
PAGE_PREFIXES: tuple[str, ...] = (
    SIGN_IN_URL,
    SIGN_OUT_URL,
    WORKLIST_URL,
    VIEWER_URL,
    REPORTS_URL,
    ORDERS_URL,
    SCHEDULED_STEPS_URL,
    RECONCILIATION_URL,
    REFERRALS_URL,
    ADMIN_URL,
    AUDIT_URL,
    TURNAROUND_URL,
)


def is_page_path(path: str) -> bool:
    """Whether ``path`` is answered by a page (not the API, DICOMweb or assets)."""
    if path == HOME_URL:
        return True
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PAGE_PREFIXES)


@dataclass(frozen=True)
class NavLink:
    url: str
    label: str
    permission: Permission
    # what the page is for, on the home page
    about: str
    # a link shown only to a referring physician, or never to one (their pages
    # differ: they read their own referrals, not the reading worklist)
    referrer: bool | None = None
    # not shown to a role holding this one: its page is reached from another link
    unless: Permission | None = None


NAVIGATION: tuple[NavLink, ...] = (
    NavLink(
        WORKLIST_URL,
        "Worklist",
        Permission.WORKLIST_READ,
        "the studies waiting to be read: claim one, open it, report it",
        referrer=False,
    ),
    NavLink(
        REFERRALS_URL,
        "My referrals",
        Permission.ORDERS_READ,
        "your orders, their studies and the signed reports",
        referrer=True,
    ),
    NavLink(
        ORDERS_URL,
        "Orders",
        Permission.ORDERS_READ,
        "the orders: book, schedule and cancel them if your role may",
        referrer=False,
    ),
    NavLink(
        SCHEDULED_STEPS_URL,
        "Scheduled steps",
        Permission.ORDERS_READ,
        "what each modality's worklist holds",
        referrer=False,
    ),
    NavLink(
        RECONCILIATION_URL,
        "Reconciliation",
        Permission.RECONCILE,
        "studies that arrived without a matching order",
    ),
    NavLink(
        TURNAROUND_URL,
        "Turnaround",
        Permission.TURNAROUND_READ,
        "order-to-complete and complete-to-signed times, SLA breaches",
    ),
    NavLink(AUDIT_URL, "Audit trail", Permission.AUDIT_READ, "who did what, when; export as CSV"),
    NavLink(
        SEND_STUDY_URL,
        "Send a study",
        Permission.STUDIES_SEND,
        "send a study to a configured DICOM peer",
        unless=Permission.USERS_MANAGE,
    ),
    NavLink(
        ADMIN_URL,
        "Administration",
        Permission.USERS_MANAGE,
        "users, imaging centers, modalities, node status, sending studies",
    ),
)


def navigation_for(user: Principal) -> list[NavLink]:
    """The header's links this user may follow."""
    is_referrer = user.role.value == "referring_physician"
    return [
        link
        for link in NAVIGATION
        if user.can(link.permission)
        and link.referrer in (None, is_referrer)
        and not (link.unless is not None and user.can(link.unless))
    ]
