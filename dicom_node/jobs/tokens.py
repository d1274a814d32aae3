"""Token purge: bearer tokens that expired or were revoked, and stale per-address
sign-in records, deleted every ``token_purge_interval_seconds``.

A spent token can never sign anyone in again (``authenticate`` refuses it), but
it was kept for ever: a table growing by a row per sign-in, each row a SHA-256
an attacker with a copy of the database could at least count and date. Sign-in
and sign-out stay in the audit trail. One call of ``services.auth.purge_spent_tokens``,
in batches (a unit of work each), so a first run after months never holds
SQLite's write lock for long; a second node running the same tick finds
nothing left to delete.
"""

from __future__ import annotations

import logging
from datetime import datetime

from dicom_node.db.engine import Database
from dicom_node.services.access.auth import PurgeResult, purge_spent_tokens

log = logging.getLogger("dicom_node.jobs.tokens")


def run_token_purge(db: Database, *, now: datetime | None = None) -> PurgeResult:
    result = purge_spent_tokens(db, now=now)
    log.info("token purge: %s", result)
    return result
