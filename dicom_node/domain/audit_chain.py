"""The audit trail's hash chain: what a row's hash covers, and how it is computed.

Every audit row carries ``prev_hash`` (the ``row_hash`` of the row before it in
id order; :data:`GENESIS_HASH` for the first row) and ``row_hash``, the SHA-256
of a canonical serialisation of the row's content together with ``prev_hash``.
Changing, removing or inserting a row in the middle of the trail therefore
breaks the chain at that point, whoever did it and however (the node's own
database login, a raw SQLite connection, a restored dump). Rewriting every
later row as well, or cutting rows off the end, leaves a consistent chain:
that is only detected against a head recorded elsewhere (``dicom-node verify``
prints it; backups keep it in their manifest).

This module is pure (no database): migration 0008 uses it for the rows that
existed before the chain, ``services/audit/record.py`` for every new row, and
``services/audit/chain.py`` to check the trail. The serialisation is
versioned (:data:`HASH_VERSION` is part of the hashed bytes) and must never
change for version 1: rows hashed once must verify for ever. A different
serialisation would be a version 2 beside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

HASH_VERSION = "dicom-node-audit-v1"
# the prev_hash of the first row of the trail
GENESIS_HASH = "0" * 64

# Every column of audit_events except the two hash columns, in a fixed order
# (the serialisation sorts keys anyway; the tuple says what is covered).
CHAINED_FIELDS = (
    "id",
    "timestamp",
    "event_code",
    "action",
    "outcome",
    "actor_user_id",
    "actor",
    "actor_role",
    "source_address",
    "target_class",
    "target_id",
    "patient_id",
    "study_instance_uid",
    "accession_number",
    "reason",
    "details",
)


def canonical_timestamp(value: datetime) -> str:
    """UTC with microseconds: what both databases store and give back exactly."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in an audit row")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_stored_json(value: Any) -> Any:
    """``value`` as it comes back from a JSON column: tuples become lists,
    non-string keys strings (json.dumps is what SQLAlchemy writes with)."""
    return json.loads(json.dumps(value))


def row_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    """The SHA-256 (hex) of ``row``'s chained fields and ``prev_hash``.

    ``row`` holds the values as the database gives them back (``details`` a
    JSON value, ``timestamp`` an aware datetime); see :func:`as_stored_json`
    for a value about to be written.
    """
    content: dict[str, Any] = {name: row[name] for name in CHAINED_FIELDS}
    content["timestamp"] = canonical_timestamp(row["timestamp"])
    content["prev_hash"] = prev_hash
    serialised = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{HASH_VERSION}\n{serialised}".encode("ascii")).hexdigest()
