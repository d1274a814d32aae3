"""Commits wait for the disk flush, except the few records that opt out (the
Query audit before C-FIND matches), and only for their own transaction."""

from __future__ import annotations

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.services.query.find import record_query


def _waits_for_disk(db: Database, session: Session) -> bool:
    """As the node's own setting leaves it (the test server itself runs with
    synchronous_commit off, for speed: only an override in the session counts)."""
    if db.dialect == "postgresql":
        setting, source = session.execute(
            text("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")
        ).one()
        return not (setting == "off" and source == "session")
    return session.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL


def test_only_the_transaction_that_opts_out_skips_the_flush(db: Database) -> None:
    for _ in range(3):  # the same pooled connections, turn and turn about
        with db.unit_of_work(wait_for_disk=False) as session:
            assert not _waits_for_disk(db, session)
        with db.unit_of_work() as session:
            assert _waits_for_disk(db, session)
        with db.read() as session:
            assert _waits_for_disk(db, session)


def test_the_query_audit_is_committed_without_waiting_for_the_disk(db: Database) -> None:
    seen: list[bool] = []

    def note(session: Session, *_: object) -> None:
        seen.append(_waits_for_disk(db, session))

    event.listen(Session, "before_commit", note)
    try:
        record_query(db, level="STUDY", keys={"PatientID": "X"}, actor="SCU", source_address=None)
    finally:
        event.remove(Session, "before_commit", note)
    assert seen == [False]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 1
