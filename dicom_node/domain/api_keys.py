"""Service accounts and their API keys: the vocabulary (no I/O).

A service account is a user row of kind ``service``: it holds a role of the
permission table like a person, never signs in with a password, and calls the
API with an API key. Each key carries scopes; a scope names permissions, and
a request made with the key may do only what both the account's role and the
key's scopes allow (``Principal.can``). No scope grants managing users or
facilities: a key can never administer the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

from dicom_node.domain.permissions import Permission


class UserKind(StrEnum):
    """A person signs in with a password; a service account (a viewer, a
    pipeline, a portal) never does: it calls with an API key."""

    PERSON = "person"
    SERVICE = "service"


class KeyScope(StrEnum):
    READ_IMAGES = "read-images"
    STORE_IMAGES = "store-images"
    READ_ORDERS = "read-orders"
    READ_REPORTS = "read-reports"
    READ_CHANGES = "read-changes"
    READ_AUDIT = "read-audit"


SCOPE_PERMISSIONS: dict[KeyScope, frozenset[Permission]] = {
    # QIDO-RS, WADO-RS, rendered, and the study listing of the REST API
    KeyScope.READ_IMAGES: frozenset({Permission.STUDIES_READ}),
    # STOW-RS
    KeyScope.STORE_IMAGES: frozenset({Permission.IMAGES_STORE}),
    KeyScope.READ_ORDERS: frozenset({Permission.ORDERS_READ}),
    KeyScope.READ_REPORTS: frozenset({Permission.REPORTS_READ}),
    # the change feed: a pipeline that follows new studies and reports
    KeyScope.READ_CHANGES: frozenset({Permission.CHANGES_READ}),
    # a SIEM exporting the audit trail
    KeyScope.READ_AUDIT: frozenset({Permission.AUDIT_READ}),
}

# "dnk_" (dicom-node key) and 43 characters of base64url: 256 random bits. The
# fixed prefix lets a secret scanner or a grep of a leaked file find keys.
KEY_PREFIX = "dnk_"
KEY_PATTERN = re.compile(r"dnk_[A-Za-z0-9_-]{43}")
# what a list shows of a key (and what the audit trail names it by): the prefix
# and 8 characters, 48 bits, too few to guess the rest from
SHOWN_LENGTH = len(KEY_PREFIX) + 8


def permissions_of(scopes: Iterable[KeyScope]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for scope in scopes:
        granted |= SCOPE_PERMISSIONS[scope]
    return frozenset(granted)


def parse_scopes(stored: str) -> tuple[KeyScope, ...]:
    """The scopes of a stored key (space-separated); a name this version does
    not know grants nothing."""
    known = {scope.value for scope in KeyScope}
    return tuple(KeyScope(name) for name in stored.split() if name in known)


def looks_like_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (not a sign-in token)."""
    return token.startswith(KEY_PREFIX)
