"""The C-FIND Query audit event, group-committed (services/audit/batch.py), over
real associations: every query gets its row, no query is answered before its
row is committed, and a failed audit write fails the query as it always did."""

from __future__ import annotations

import threading
import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from sqlalchemy import func, select, text

from dicom_node.db.models import AuditEvent
from dicom_node.node import Node
from dicom_node.scp import status
from dicom_node.services.audit.chain import verify_audit_chain
from dicom_node.services.audit.record import AUDIT_CHAIN_LOCK_KEY

MODEL = StudyRootQueryRetrieveInformationModelFind


def _identifier(patient_id: str = "") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.PatientID = patient_id
    return ds


def _queries(node: Node) -> int:
    assert node.db is not None
    with node.db.read() as session:
        count = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "query")
        )
    return int(count or 0)


def _associate(node: Node, title: str = "AUDITSCU"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=title)
    ae.add_requested_context(MODEL)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def test_no_answer_comes_before_the_querys_audit_row_is_committed(sample_node: Node) -> None:
    assoc = _associate(sample_node)
    try:
        for n in range(30):
            # matches, no match: the final response is the whole answer then
            identifier = _identifier("" if n % 2 else "NO-SUCH-PATIENT")
            for code_ds, _ in assoc.send_c_find(identifier, MODEL):
                assert code_ds
                # the row is committed before the first response, final or not
                assert _queries(sample_node) == n + 1, f"query {n}: answered before its audit row"
    finally:
        assoc.release()


def test_concurrent_queries_each_get_their_row_and_the_chain_verifies(sample_node: Node) -> None:
    errors: list[str] = []

    def peer(n: int) -> None:
        assoc = _associate(sample_node, f"PEER{n}")
        try:
            for _ in range(5):
                statuses = [int(s.Status) for s, _ in assoc.send_c_find(_identifier(), MODEL) if s]
                if statuses[-1] != status.SUCCESS:
                    errors.append(f"peer {n}: {statuses}")
        finally:
            assoc.release()

    threads = [threading.Thread(target=peer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert _queries(sample_node) == 30
    assert sample_node.db is not None
    assert {actor for (actor,) in _actors(sample_node)} == {f"PEER{n}" for n in range(6)}
    report = verify_audit_chain(sample_node.db)
    assert report.ok, report.describe()


def _actors(node: Node) -> list[tuple[str]]:
    assert node.db is not None
    with node.db.read() as session:
        rows = session.execute(select(AuditEvent.actor).where(AuditEvent.action == "query"))
        return [(str(actor),) for (actor,) in rows]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_query_whose_audit_commit_is_held_up_gets_no_answer_until_it_commits(
    sample_node: Node,
) -> None:
    """PostgreSQL: hold the audit chain's lock; the node's audit transaction
    waits for it (seen in pg_locks), and meanwhile the peer has nothing."""
    assert sample_node.db is not None
    responses: list[int] = []
    with sample_node.db.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": AUDIT_CHAIN_LOCK_KEY})
        holder.commit()
        assoc = _associate(sample_node)

        def query() -> None:
            for code_ds, _ in assoc.send_c_find(_identifier(), MODEL):
                responses.append(int(code_ds.Status) if code_ds else -1)

        thread = threading.Thread(target=query)
        thread.start()
        deadline = time.monotonic() + 30
        while not _waiting_for_the_chain_lock(sample_node):
            assert time.monotonic() < deadline, "the audit write never reached the lock"
            time.sleep(0.01)
        assert responses == []  # the query is done, its audit row is not: nothing sent
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": AUDIT_CHAIN_LOCK_KEY})
        holder.commit()
        thread.join(timeout=60)
        assoc.release()
    assert responses[-1] == status.SUCCESS and len(responses) > 1
    assert _queries(sample_node) == 1


def _waiting_for_the_chain_lock(node: Node) -> bool:
    assert node.db is not None
    with node.db.engine.connect() as conn:
        waiting = conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND objid = :k AND NOT granted"
            ),
            {"k": AUDIT_CHAIN_LOCK_KEY},
        )
    return bool(waiting)


# A real failure of the audit write: the database refuses the Query event's INSERT.
_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_query_event BEFORE INSERT ON audit_events"
        " WHEN NEW.action = 'query'"
        " BEGIN SELECT RAISE(ABORT, 'query event refused (test)'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_query_event() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'query event refused (test)'; END $$",
        "CREATE TRIGGER refuse_query_event BEFORE INSERT ON audit_events FOR EACH ROW"
        " WHEN (NEW.action = 'query') EXECUTE FUNCTION refuse_query_event()",
    ],
}
_ACCEPT = {
    "sqlite": ["DROP TRIGGER refuse_query_event"],
    "postgresql": [
        "DROP TRIGGER refuse_query_event ON audit_events",
        "DROP FUNCTION refuse_query_event()",
    ],
}


def _run(node: Node, statements: dict[str, list[str]]) -> None:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        for statement in statements[node.db.dialect]:
            session.execute(text(statement))


def test_a_query_whose_audit_row_cannot_be_written_gets_no_match_and_a_failure(
    sample_node: Node,
) -> None:
    """As with the synchronous write before: nothing is answered, the peer gets
    0xC001 "query failed" (the node's own fault), and the node goes on."""
    _run(sample_node, _REFUSE)
    assoc = _associate(sample_node)
    try:
        answers = [
            (int(s.Status), str(s.get("ErrorComment", "")), found)
            for s, found in assoc.send_c_find(_identifier(), MODEL)
            if s
        ]
        assert answers == [(status.UNABLE_TO_PROCESS_INTERNAL, "query failed", None)]
        _run(sample_node, _ACCEPT)
        statuses = [int(s.Status) for s, _ in assoc.send_c_find(_identifier(), MODEL) if s]
        assert statuses[-1] == status.SUCCESS and len(statuses) > 1
    finally:
        assoc.release()
    assert _queries(sample_node) == 1  # the refused one has no row: it was not answered
