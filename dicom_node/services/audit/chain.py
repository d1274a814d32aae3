"""Checking the audit trail's hash chain (``dicom-node verify``, restore) and
whether the database keeps the node itself from changing the trail.

What a break in the chain means (rows in id order; domain/audit_chain.py):

- a row whose ``row_hash`` is not the hash of its content: the row was
  rewritten after it was written (its hash left as it was);
- a row whose ``prev_hash`` is not the ``row_hash`` of the row before it: a
  row between them was deleted, or the row before it was rewritten together
  with its hash; when ``prev_hash`` names an earlier row, the rows between
  were inserted;
- a first row whose ``prev_hash`` is not the genesis value: the oldest rows
  were deleted.

A consistent chain proves the trail was not changed in its middle since each
row was written. It cannot show rows cut off its end, or the whole tail
rewritten with fresh hashes: for that, compare the head with one recorded
elsewhere (``verify`` prints and logs it, the node logs it at start, backups
keep it in their manifest; ``verify --audit-anchor ID:SHA256`` checks a
recorded head still holds).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit_chain import GENESIS_HASH, row_hash

log = logging.getLogger("dicom_node.audit")

_BATCH = 5000
# recent row hashes remembered to tell an insertion from a deletion
_RECENT = 10_000
# the problems listed one by one; the rest are counted
SHOWN_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """A head recorded earlier (``verify`` output, a log line, a backup manifest)."""

    row_id: int
    row_hash: str

    @classmethod
    def parse(cls, value: str) -> AuditAnchor:
        """``ID:SHA256`` as ``verify`` prints the head; ValueError otherwise."""
        row_id, _, digest = value.strip().partition(":")
        digest = digest.strip().lower()
        if not row_id.strip().isdigit() or len(digest) != 64:
            raise ValueError("expected ID:SHA256, e.g. 1234:9f86d081...")
        if any(char not in "0123456789abcdef" for char in digest):
            raise ValueError("the SHA-256 must be 64 hex digits")
        return cls(int(row_id), digest)

    def __str__(self) -> str:
        return f"{self.row_id}:{self.row_hash}"


@dataclass(frozen=True, slots=True)
class AuditChainReport:
    rows: int
    head: AuditAnchor | None
    # the first SHOWN_PROBLEMS problems, in id order; more_problems counts the rest
    problems: tuple[str, ...] = ()
    # the recorded head that was checked, if any, and whether it still holds
    anchor: AuditAnchor | None = None
    anchor_held: bool = False
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.more_problems

    def describe(self) -> str:
        if self.head is None:
            summary = "audit trail: no rows"
        else:
            summary = (
                f"audit trail: {self.rows} rows, head row {self.head.row_id} "
                f"sha256 {self.head.row_hash} (record it elsewhere: "
                "verify --audit-anchor ID:SHA256 checks it later)"
            )
        lines = [summary]
        if self.anchor is not None and self.anchor_held:
            lines.append(f"audit trail: recorded head {self.anchor} still holds")
        if self.ok:
            lines.append("audit trail: hash chain intact")
        lines.extend(f"audit trail: {problem}" for problem in self.problems)
        if self.more_problems:
            lines.append(f"audit trail: ... and {self.more_problems} more problems")
        return "\n".join(lines)


@dataclass(slots=True)
class _Walk:
    anchor: AuditAnchor | None
    rows: int = 0
    previous_id: int | None = None
    previous_hash: str = GENESIS_HASH
    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    # the first SHOWN_PROBLEMS only, the rest counted: a trail broken on every
    # row (a restore that re-serialised it) has millions
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0
    anchor_seen: bool = False
    anchor_held: bool = False

    def _problem(self, text: str) -> None:
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def check(self, row: dict[str, Any]) -> None:
        row_id = int(row["id"])
        self.rows += 1
        if row_hash(row, row["prev_hash"]) != row["row_hash"]:
            self._problem(f"row {row_id} does not match its hash (rewritten)")
        if row["prev_hash"] != self.previous_hash:
            self._problem(self._link_problem(row_id, row["prev_hash"]))
        if self.anchor is not None and row_id == self.anchor.row_id:
            self.anchor_seen = True
            self.anchor_held = row["row_hash"] == self.anchor.row_hash
            if not self.anchor_held:
                self._problem(
                    f"row {row_id} is not the recorded head {self.anchor.row_id}:"
                    f"{self.anchor.row_hash} (the trail up to it was rewritten)"
                )
        # go on from this row: each later break is reported on its own
        self.previous_id, self.previous_hash = row_id, row["row_hash"]
        self.recent[row["row_hash"]] = row_id
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)

    def _link_problem(self, row_id: int, prev_hash: str) -> str:
        if self.previous_id is None:
            return f"row {row_id} does not start the chain (older rows deleted)"
        earlier = self.recent.get(prev_hash)
        if earlier is not None:
            return (
                f"row {row_id} follows row {earlier}: the rows after {earlier} up to "
                f"{self.previous_id} are not in the chain (inserted)"
            )
        return (
            f"row {row_id} does not follow row {self.previous_id} (a row between them "
            f"deleted, or row {self.previous_id} rewritten with a new hash)"
        )

    def finish(self) -> AuditChainReport:
        if self.anchor is not None and not self.anchor_seen:
            where = (
                "the trail was cut off after it"
                if self.previous_id is None or self.anchor.row_id > self.previous_id
                else "deleted"
            )
            self._problem(f"row {self.anchor.row_id}, the recorded head, is missing ({where})")
        head = (
            AuditAnchor(self.previous_id, self.previous_hash)
            if self.previous_id is not None
            else None
        )
        return AuditChainReport(
            self.rows,
            head,
            tuple(self.problems),
            self.anchor,
            self.anchor_held,
            self.more_problems,
        )


def verify_audit_chain(db: Database, *, anchor: AuditAnchor | None = None) -> AuditChainReport:
    """Walk the whole trail in id order and report every break of its chain.

    Rows committed while the walk runs are checked too (they are appended
    after the rows already read: ids are handed out in commit order). Memory
    stays at one batch whatever the trail's length.
    """
    walk = _Walk(anchor)
    for row in _rows(db):
        walk.check(row)
    report = walk.finish()
    if report.head is not None:
        # a log line is a copy of the head outside the database (log shipping)
        log.info(
            "audit trail head: row %d sha256 %s (%s)",
            report.head.row_id,
            report.head.row_hash,
            "chain intact" if report.ok else f"{report.problem_count} problems",
        )
    return report


def _rows(db: Database) -> Iterator[dict[str, Any]]:
    table = AuditEvent.__table__
    last_id: int | None = None
    while True:
        query = select(table).order_by(table.c.id).limit(_BATCH)
        if last_id is not None:
            query = query.where(table.c.id > last_id)
        with db.read() as session:
            rows = [dict(row) for row in session.execute(query).mappings()]
        if not rows:
            return
        yield from rows
        last_id = int(rows[-1]["id"])


def audit_head(db: Database) -> AuditAnchor | None:
    """The newest row of the trail and its hash."""
    with db.read() as session:
        head = session.execute(
            select(AuditEvent.id, AuditEvent.row_hash).order_by(AuditEvent.id.desc()).limit(1)
        ).first()
    return AuditAnchor(int(head[0]), str(head[1])) if head is not None else None


# PostgreSQL: can the role the node logs in as change audit_events other than
# by INSERT? Ownership of the table or its schema (membership counts: SET ROLE)
# lets it ALTER (DISABLE TRIGGER) or DROP it; a superuser can do anything.
_PROTECTION_SQL = """
SELECT current_user AS role,
       r.rolsuper AS superuser,
       pg_has_role(current_user, c.relowner, 'MEMBER') AS owns_table,
       pg_has_role(current_user, n.nspowner, 'MEMBER') AS owns_schema,
       has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
         OR has_table_privilege(c.oid, 'TRUNCATE') OR has_table_privilege(c.oid, 'TRIGGER')
         AS may_change
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_roles r ON r.rolname = current_user
WHERE c.oid = 'audit_events'::regclass
"""


def audit_protection_gap(db: Database) -> str | None:
    """Why the node's own database login could rewrite the audit trail, or None
    when the database refuses it (PostgreSQL with a separate owner role)."""
    if db.dialect != "postgresql":
        return "SQLite has no roles: whoever can write the database file, the node included"
    with db.engine.connect() as connection:
        found = connection.execute(text(_PROTECTION_SQL)).mappings().one()
    role = found["role"]
    if found["superuser"]:
        return f"the node logs in as the superuser {role}"
    if found["owns_table"]:
        return f"the node's role {role} owns audit_events (it may ALTER it: DISABLE TRIGGER)"
    if found["owns_schema"]:
        return f"the node's role {role} owns the schema of audit_events (it may DROP it)"
    if found["may_change"]:
        return f"the node's role {role} holds UPDATE, DELETE, TRUNCATE or TRIGGER on audit_events"
    return None


def warn_if_unprotected(db: Database) -> None:
    """One log line when the database does not keep the node from changing the
    trail (``serve`` and ``verify`` call this once)."""
    gap = audit_protection_gap(db)
    if gap is None:
        return
    if db.dialect != "postgresql":
        # a fact of the embedded database, nothing an operator can change: said at
        # INFO, so every start of a default install does not raise a warning
        log.info(
            "audit trail is tamper-evident only (verify checks its hash chain), not "
            "tamper-proof: %s; PostgreSQL with database_owner_url makes it so",
            gap,
        )
        return
    log.warning(
        "audit trail is tamper-evident only (verify checks its hash chain), not "
        "tamper-proof: %s; give the schema an owner role and set database_owner_url",
        gap,
    )


def announce_audit_trail(db: Database) -> None:
    """At start: the protection warning if any, and the head at INFO (a copy of
    it outside the database, wherever the logs are shipped)."""
    warn_if_unprotected(db)
    head = audit_head(db)
    if head is not None:
        log.info("audit trail head: row %d sha256 %s", head.row_id, head.row_hash)
