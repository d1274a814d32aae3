"""The group-committing audit writer (services/audit/batch.py), on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import Actor, TargetKind, query_event
from dicom_node.services.audit.batch import AuditTicket, AuditWriter
from dicom_node.services.audit.chain import verify_audit_chain


def _event(actor: str, details: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return query_event(
        "query", Actor.peer(actor, None), TargetKind.STUDY, details=details or {"keys": {}}
    )


def _count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_events_submitted_at_once_from_many_threads_are_all_committed_in_one_chain(
    db: Database,
) -> None:
    writer = AuditWriter(db)
    tickets: list[AuditTicket] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        for i in range(20):
            ticket = writer.submit(_event(f"T{n}-{i}"))
            with lock:
                tickets.append(ticket)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ticket in tickets:
        ticket.wait(timeout=60)
    assert _count(db) == 160
    report = verify_audit_chain(db)
    assert report.ok, report.describe()


def test_an_event_the_database_refuses_fails_its_own_ticket_only(db: Database) -> None:
    writer = AuditWriter(db)
    # not JSON: the chain's hashing refuses it when its transaction commits
    bad = writer.submit(_event("BAD", {"keys": object()}))
    good = [writer.submit(_event(f"OK{i}")) for i in range(5)]
    with pytest.raises(TypeError):
        bad.wait(timeout=60)
    for ticket in good:
        ticket.wait(timeout=60)
    with db.read() as session:
        actors = set(session.scalars(select(AuditEvent.actor)))
    assert actors == {f"OK{i}" for i in range(5)}
    assert verify_audit_chain(db).ok
