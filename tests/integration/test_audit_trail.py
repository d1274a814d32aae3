# ruff: noqa: S608  (the attacks are SQL built from constants and row ids, on purpose)
"""Issue 13, finding 5: the audit trail cannot be rewritten with the node's own
database login where the database can enforce it, and any rewrite is detected.

Attacks from the finding, on the database itself: SQLite ``INSERT OR REPLACE``
(REPLACE's delete fires no delete trigger) and its other forms; PostgreSQL
``ALTER TABLE audit_events DISABLE TRIGGER USER`` then UPDATE/DELETE by the role
that owned the table. Then what no database role can stop (a raw SQLite
connection, a superuser): every rewrite, deletion or insertion breaks the hash
chain that ``verify`` checks.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.domain.audit_chain import GENESIS_HASH, row_hash
from dicom_node.services.audit.chain import (
    SHOWN_PROBLEMS,
    AuditAnchor,
    audit_protection_gap,
    verify_audit_chain,
)
from dicom_node.services.audit.record import record_audit_event
from tests.conftest import NODE_ROLE, TwoRoleDatabase

# columns an attacker's forged row fills in (all NOT NULL ones)
_FORGED_COLUMNS = "timestamp, event_code, action, outcome, details, prev_hash, row_hash"
_FORGED_VALUES = "'2026-01-01 00:00:00', '110100', 'forged', 'success', '{}'"


def _record(db: Database, count: int, *, actor: str = "tester") -> list[int]:
    """``count`` events, each in its own transaction, through the one writer."""
    for number in range(count):
        with db.unit_of_work() as session:
            record_audit_event(
                session,
                AuditRecord(
                    event_code=AuditEventCode.ORDER_RECORD,
                    action="order_created",
                    actor=actor,
                    patient_id="PAT1",
                    details={"number": number, "keys": {"b": [1, 2.5], "a": "é"}},
                ),
            )
    return _ids(db)


def _ids(db: Database) -> list[int]:
    with db.read() as session:
        return list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def _row(db: Database, row_id: int) -> dict[str, object]:
    with db.read() as session:
        found = session.execute(
            select(AuditEvent.__table__).where(AuditEvent.id == row_id)
        ).mappings()
        return dict(found.one())


def _raw(db_url: str, *statements: str) -> None:
    """What no role can stop: SQLite through the sqlite3 module with the triggers
    dropped; PostgreSQL as the superuser with the triggers disabled."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(str(url.database))
        try:
            for trigger in ("no_update", "no_delete", "no_replace"):
                connection.execute(f"DROP TRIGGER IF EXISTS audit_events_{trigger}")
            for statement in statements:
                connection.execute(statement)
            connection.commit()
        finally:
            connection.close()
        return
    dsn = f"host={url.host} port={url.port} user=postgres dbname={url.database}"
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        for statement in statements:
            pg.execute(statement)  # type: ignore[arg-type]
        pg.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")


def _rehashed(db: Database, row_id: int, **changes: object) -> str:
    """An UPDATE that rewrites a row and recomputes its hash, as an attacker who
    knows the algorithm would."""
    row = {**_row(db, row_id), **changes}
    digest = row_hash(row, str(row["prev_hash"]))
    assignments = ", ".join(f"{name} = '{value}'" for name, value in changes.items())
    return f"UPDATE audit_events SET {assignments}, row_hash = '{digest}' WHERE id = {row_id}"


# --------------------------------------------------------------------------- refused


def _fill(template: str, **values: object) -> str:
    """``{name}`` placeholders only (the statements hold JSON braces too)."""
    for name, value in values.items():
        template = template.replace(f"{{{name}}}", str(value))
    return template


SQLITE_REWRITES = {
    "insert or replace, same id": (
        f"INSERT OR REPLACE INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES ({{id}}, {_FORGED_VALUES}, 'x', 'y')"
    ),
    "replace into, same id": (
        f"REPLACE INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES ({{id}}, {_FORGED_VALUES}, 'x', 'y')"
    ),
    # the other unique key: REPLACE deletes the row whose prev_hash it repeats
    "insert or replace, same prev_hash": (
        f"INSERT OR REPLACE INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES (9999, {_FORGED_VALUES}, '{{prev_hash}}', 'y')"
    ),
    "upsert on id": (
        f"INSERT INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES ({{id}}, {_FORGED_VALUES}, 'x', 'y') "
        "ON CONFLICT (id) DO UPDATE SET action = 'forged'"
    ),
    "upsert on prev_hash": (
        f"INSERT INTO audit_events ({_FORGED_COLUMNS}) "
        f"VALUES ({_FORGED_VALUES}, '{{prev_hash}}', 'y') "
        "ON CONFLICT (prev_hash) DO UPDATE SET action = excluded.action"
    ),
    "upsert without target": (
        f"INSERT INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES ({{id}}, {_FORGED_VALUES}, 'x', 'y') "
        "ON CONFLICT DO UPDATE SET action = excluded.action"
    ),
    "update or replace": "UPDATE OR REPLACE audit_events SET action = 'forged' WHERE id = {id}",
    "delete": "DELETE FROM audit_events WHERE id = {id}",
}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("form", list(SQLITE_REWRITES))
def test_sqlite_refuses_every_form_of_rewriting_an_audit_row(db: Database, form: str) -> None:
    first, target, _last = _record(db, 3)
    before = _row(db, target)
    statement = _fill(SQLITE_REWRITES[form], id=target, prev_hash=before["prev_hash"])
    # a connection of its own, as a script with the node's file access would open
    # (recursive_triggers off, SQLite's default: REPLACE's delete fires no trigger)
    connection = sqlite3.connect(str(make_url(db.url).database))
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute(statement)
        connection.rollback()
    finally:
        connection.close()
    assert _row(db, target) == before
    assert _ids(db) == [first, target, _last]
    assert verify_audit_chain(db).ok


def test_an_upsert_over_an_audit_row_is_refused_by_the_database(db: Database) -> None:
    (target,) = _record(db, 1)
    before = _row(db, target)
    upsert = text(
        f"INSERT INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES (:id, {_FORGED_VALUES}, 'x', 'y') "
        "ON CONFLICT (id) DO UPDATE SET action = 'forged'"
    )
    with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
        session.execute(upsert, {"id": target})
    assert _row(db, target) == before


def _two_roles(two_role_db: TwoRoleDatabase) -> Database:
    migrate.upgrade_schema(two_role_db.node_url, two_role_db.owner_url)
    return Database(two_role_db.node_url)


NODE_ROLE_ATTACKS = {
    "disable triggers": "ALTER TABLE audit_events DISABLE TRIGGER USER",
    "update": "UPDATE audit_events SET action = 'forged'",
    "delete": "DELETE FROM audit_events",
    "truncate": "TRUNCATE audit_events",
    "upsert": (
        f"INSERT INTO audit_events (id, {_FORGED_COLUMNS}) "
        f"VALUES ({{id}}, {_FORGED_VALUES}, 'x', 'y') "
        "ON CONFLICT (id) DO UPDATE SET action = 'forged'"
    ),
    "drop the trigger": "DROP TRIGGER audit_events_no_update_delete ON audit_events",
    "replace the trigger function": (
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
    ),
    "add a trigger": (
        "CREATE TRIGGER t BEFORE INSERT ON audit_events FOR EACH ROW "
        "EXECUTE FUNCTION audit_events_append_only()"
    ),
    "take the table": f"ALTER TABLE audit_events OWNER TO {NODE_ROLE}",
    "drop the table": "DROP TABLE audit_events",
    "fake the schema version": "UPDATE alembic_version SET version_num = '0001'",
}


@pytest.mark.parametrize("attack", list(NODE_ROLE_ATTACKS))
def test_postgresql_refuses_the_node_role_any_change_to_the_audit_trail(
    two_role_db: TwoRoleDatabase, attack: str
) -> None:
    db = _two_roles(two_role_db)
    try:
        ids = _record(db, 3)
        before = [_row(db, row_id) for row_id in ids]
        with pytest.raises(DBAPIError) as refused, db.unit_of_work() as session:
            session.execute(text(_fill(NODE_ROLE_ATTACKS[attack], id=ids[1])))
        assert refused.value.orig.sqlstate == "42501", refused.value  # type: ignore[union-attr]
        assert [_row(db, row_id) for row_id in ids] == before
        assert verify_audit_chain(db).ok
    finally:
        db.dispose()


def test_the_findings_attack_as_the_node_role_is_refused_with_an_owner_role(
    two_role_db: TwoRoleDatabase,
) -> None:
    """The finding's exact sequence, in one transaction, as the node logs in."""
    db = _two_roles(two_role_db)
    try:
        (target,) = _record(db, 1)
        with pytest.raises(DBAPIError, match="must be owner"), db.unit_of_work() as session:
            session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            session.execute(text("UPDATE audit_events SET action = 'forged'"))
        with pytest.raises(DBAPIError, match="permission denied"), db.unit_of_work() as session:
            session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": target})
        assert _row(db, target)["action"] == "order_created"
        assert audit_protection_gap(db) is None
    finally:
        db.dispose()


def test_a_single_role_install_can_still_rewrite_but_verify_catches_it(
    two_role_db: TwoRoleDatabase,
) -> None:
    """Without an owner role (the node logs in as the schema's owner) the
    finding's attack still works; the hash chain reports it."""
    migrate.upgrade_schema(two_role_db.owner_url)
    db = Database(two_role_db.owner_url)
    try:
        _first, target, _last = _record(db, 3)
        gap = audit_protection_gap(db)
        assert gap is not None and "owns audit_events" in gap
        with db.unit_of_work() as session:
            session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            session.execute(
                text("UPDATE audit_events SET actor = 'mallory' WHERE id = :id"), {"id": target}
            )
        report = verify_audit_chain(db)
        assert report.problems == (f"row {target} does not match its hash (rewritten)",)
    finally:
        db.dispose()


def test_the_node_role_works_with_what_it_is_granted(two_role_db: TwoRoleDatabase) -> None:
    db = _two_roles(two_role_db)
    try:
        assert migrate.is_up_to_date(db.engine)
        with db.unit_of_work() as session:
            session.execute(
                text(
                    "INSERT INTO imaging_centers (name, code, created_at, updated_at) "
                    "VALUES ('C', 'C1', now(), now())"
                )
            )
            session.execute(text("UPDATE imaging_centers SET name = 'D'"))
            session.execute(text("DELETE FROM imaging_centers"))
        _record(db, 2)
        assert verify_audit_chain(db).ok
    finally:
        db.dispose()


def test_protection_gaps_are_named(db: Database) -> None:
    gap = audit_protection_gap(db)
    assert gap is not None
    # the fixture's PostgreSQL login is the superuser; SQLite has no roles
    assert ("superuser" if db.dialect == "postgresql" else "SQLite has no roles") in gap


# --------------------------------------------------------------------------- detected


def test_a_raw_rewrite_is_reported_as_rewritten(db: Database) -> None:
    _first, target, last = _record(db, 3)
    _raw(db.url, f"UPDATE audit_events SET actor = 'mallory' WHERE id = {target}")
    report = verify_audit_chain(db)
    assert not report.ok
    assert report.problems == (f"row {target} does not match its hash (rewritten)",)
    assert report.rows == 3 and report.head is not None and report.head.row_id == last


def test_a_rewrite_with_a_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    _first, target, last = _record(db, 3)
    _raw(db.url, _rehashed(db, target, actor="mallory"))
    report = verify_audit_chain(db)
    assert report.problems == (
        f"row {last} does not follow row {target} (a row between them deleted, "
        f"or row {target} rewritten with a new hash)",
    )


def test_a_deleted_row_is_reported(db: Database) -> None:
    first, target, last = _record(db, 3)
    _raw(db.url, f"DELETE FROM audit_events WHERE id = {target}")
    report = verify_audit_chain(db)
    assert report.problems == (
        f"row {last} does not follow row {first} (a row between them deleted, "
        f"or row {first} rewritten with a new hash)",
    )


def test_deleting_the_oldest_rows_is_reported(db: Database) -> None:
    first, second, _last = _record(db, 3)
    _raw(db.url, f"DELETE FROM audit_events WHERE id = {first}")
    report = verify_audit_chain(db)
    assert report.problems == (f"row {second} does not start the chain (older rows deleted)",)


def _forged(row_id: int) -> dict[str, Any]:
    return {
        "id": row_id,
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "event_code": "110100",
        "action": "forged",
        "outcome": "success",
        "actor_user_id": None,
        "actor": None,
        "actor_role": None,
        "source_address": None,
        "target_class": None,
        "target_id": None,
        "patient_id": None,
        "study_instance_uid": None,
        "accession_number": None,
        "reason": None,
        "details": {},
    }


def _insert_forged(db: Database, row_id: int, prev_hash: str) -> None:
    """A forged row, well hashed (the attacker knows the algorithm), linked to ``prev_hash``."""
    digest = row_hash(_forged(row_id), prev_hash)
    stamp = "2026-01-01 00:00:00" + ("+00" if db.dialect == "postgresql" else "")
    _raw(
        db.url,
        f"INSERT INTO audit_events (id, {_FORGED_COLUMNS}) VALUES ({row_id}, '{stamp}', "
        f"'110100', 'forged', 'success', '{{}}', '{prev_hash}', '{digest}')",
    )


def test_a_forged_row_appended_with_a_made_up_link_is_reported(db: Database) -> None:
    *_, last = _record(db, 2)
    _insert_forged(db, last + 1, "1" * 64)
    assert verify_audit_chain(db).problems == (
        f"row {last + 1} does not follow row {last} (a row between them deleted, "
        f"or row {last} rewritten with a new hash)",
    )


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_row_inserted_into_a_gap_is_reported_as_inserted(db: Database) -> None:
    """PostgreSQL ids may have gaps (a rolled-back transaction's nextval): a row
    forged into one, however well hashed, leaves the next row pointing past it."""
    (first,) = _record(db, 1)
    # the id is taken at commit, then the INSERT fails (too long a value): a gap
    with pytest.raises(DBAPIError), db.unit_of_work() as session:
        record_audit_event(
            session, AuditRecord(event_code=AuditEventCode.QUERY, action="q", actor="A" * 65)
        )
    _first, after = _record(db, 1)
    assert after > first + 1
    gap = first + 1
    _insert_forged(db, gap, "2" * 64)
    assert verify_audit_chain(db).problems == (
        f"row {gap} does not follow row {first} (a row between them deleted, "
        f"or row {first} rewritten with a new hash)",
        f"row {after} follows row {first}: the rows after {first} up to {gap} are not "
        "in the chain (inserted)",
    )


def test_cutting_off_the_newest_rows_is_found_against_a_recorded_head(db: Database) -> None:
    *_, kept, _cut, last = _record(db, 4)
    head = verify_audit_chain(db).head
    assert head is not None and head.row_id == last
    _raw(db.url, f"DELETE FROM audit_events WHERE id > {kept}")
    assert verify_audit_chain(db).ok  # what the chain alone cannot show
    report = verify_audit_chain(db, anchor=head)
    assert report.problems == (
        f"row {last}, the recorded head, is missing (the trail was cut off after it)",
    )


def test_rewriting_the_whole_tail_is_found_against_a_recorded_head(db: Database) -> None:
    _first, target, last = _record(db, 3)
    head = verify_audit_chain(db).head
    assert head is not None
    # rewrite a row and re-hash every row after it: a consistent chain again
    _raw(db.url, _rehashed(db, target, actor="mallory"))
    new_prev = str(_row(db, target)["row_hash"])
    _raw(db.url, _rehashed(db, last, prev_hash=new_prev))
    assert verify_audit_chain(db).ok
    report = verify_audit_chain(db, anchor=head)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"row {last} is not the recorded head")
    assert (
        verify_audit_chain(db, anchor=AuditAnchor(target, "0" * 64))
        .problems[0]
        .startswith(f"row {target} is not the recorded head")
    )


def test_a_trail_broken_on_every_row_keeps_the_first_problems_and_counts_the_rest(
    db: Database,
) -> None:
    """Before: every problem string was kept, though only SHOWN_PROBLEMS are
    printed: a multi-million-row trail broken on every row (a restore that
    re-serialised it) held millions of strings in memory."""
    broken = SHOWN_PROBLEMS + 70
    with db.unit_of_work() as session:
        for number in range(broken):
            record_audit_event(
                session,
                AuditRecord(event_code=AuditEventCode.QUERY, action="q", details={"n": number}),
            )
    _raw(db.url, "UPDATE audit_events SET actor = 'mallory'")
    with db.read() as session:
        ids = list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
    report = verify_audit_chain(db, anchor=AuditAnchor(ids[-1] + 1, "0" * 64))
    assert report.problems == tuple(
        f"row {row_id} does not match its hash (rewritten)" for row_id in ids[:SHOWN_PROBLEMS]
    )
    # the later rows and the missing recorded head: counted, not kept
    assert report.more_problems == broken - SHOWN_PROBLEMS + 1
    assert report.problem_count == broken + 1
    assert not report.ok
    assert report.describe().endswith(f"audit trail: ... and {report.more_problems} more problems")


def test_an_intact_chain_reports_its_head_and_a_recorded_head_that_holds(db: Database) -> None:
    *_, last = _record(db, 2)
    head = verify_audit_chain(db).head
    assert head is not None
    _record(db, 1)
    report = verify_audit_chain(db, anchor=head)
    assert report.ok and report.anchor_held
    assert f"recorded head {head} still holds" in report.describe()
    assert "hash chain intact" in report.describe()
    assert report.head is not None and report.head.row_id == last + 1


def test_the_first_row_starts_from_the_genesis_hash(db: Database) -> None:
    (first,) = _record(db, 1)
    assert _row(db, first)["prev_hash"] == GENESIS_HASH


def test_savepoints_keep_their_events_or_forget_them_with_their_changes(db: Database) -> None:
    def audit(session: Session, action: str) -> None:
        record_audit_event(
            session, AuditRecord(event_code=AuditEventCode.ORDER_RECORD, action=action)
        )

    with db.unit_of_work() as session:
        audit(session, "kept_before")
        with pytest.raises(RuntimeError), session.begin_nested():
            audit(session, "rolled_back")
            raise RuntimeError("the savepoint rolls back")
        with session.begin_nested():
            audit(session, "kept_in_savepoint")
        audit(session, "kept_after")
    with db.read() as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["kept_before", "kept_in_savepoint", "kept_after"]
    assert verify_audit_chain(db).ok


# --------------------------------------------------------------------------- concurrency


def _writers(db_url: str, threads: int, each: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def write(number: int) -> None:
        database = Database(db_url)
        try:
            start.wait()
            for index in range(each):
                with database.unit_of_work(wait_for_disk=index % 2 == 0) as session:
                    record_audit_event(
                        session,
                        AuditRecord(
                            event_code=AuditEventCode.QUERY,
                            action="query",
                            actor=f"writer{number}",
                            details={"index": index},
                        ),
                    )
                    if index % 5 == 0:  # now and then two events in one transaction
                        record_audit_event(
                            session,
                            AuditRecord(event_code=AuditEventCode.QUERY, action="query_two"),
                        )
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            database.dispose()

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors


def test_concurrent_audit_writers_keep_one_chain(db: Database) -> None:
    _writers(db.url, threads=4, each=40)
    report = verify_audit_chain(db)
    assert report.ok, report.problems
    assert report.rows == 4 * 40 + 4 * 8


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_open_transaction_holding_an_audit_event_does_not_hold_up_other_writers(
    db: Database,
) -> None:
    """The chain's lock is taken at COMMIT, not when the event is recorded: a
    long transaction (an ingest, a report) never queues C-FIND's Query events."""
    recorded, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def long_transaction() -> None:
        try:
            with db.unit_of_work() as session:
                record_audit_event(
                    session, AuditRecord(event_code=AuditEventCode.ORDER_RECORD, action="long")
                )
                session.execute(text("SELECT 1"))
                recorded.set()
                assert release.wait(timeout=60)
        except BaseException as exc:
            failures.append(exc)

    holder = threading.Thread(target=long_transaction)
    holder.start()
    try:
        assert recorded.wait(timeout=30)
        quick = Database(db.url)
        done = threading.Event()

        def quick_write() -> None:
            _record(quick, 1)
            done.set()

        writer = threading.Thread(target=quick_write, daemon=True)
        writer.start()
        assert done.wait(timeout=30), "an audit write waited for another open transaction"
        quick.dispose()
    finally:
        release.set()
        holder.join(timeout=60)
    assert not failures, failures
    report = verify_audit_chain(db)
    assert report.ok and report.rows == 2


# --------------------------------------------------------------------------- migration


def _legacy_rows(url: str) -> None:
    """Rows as revision 0007 wrote them (plain SQL: the models describe the newest schema)."""
    db = Database(url)
    try:
        with db.unit_of_work() as session:
            for number, stamp in enumerate(
                ["2025-01-01 10:00:00.123456", "2025-01-01 10:00:00", "2025-06-30 23:59:59.5"]
            ):
                session.execute(
                    text(
                        "INSERT INTO audit_events (timestamp, event_code, action, outcome, "
                        "actor, details) VALUES (:stamp, '110112', 'query', 'success', "
                        ":actor, :details)"
                    ),
                    {
                        "stamp": stamp if db.dialect == "sqlite" else f"{stamp}+00",
                        "actor": f"AE{number}",
                        "details": '{"keys": {"PatientName": "DOE^J*"}, "n": 1.5, "u": "\\u00e9"}',
                    },
                )
    finally:
        db.dispose()


def test_upgrade_to_0008_chains_the_existing_rows(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0007")
    _legacy_rows(empty_db_url)
    migrate.upgrade(empty_db_url)
    db = Database(empty_db_url)
    try:
        assert [_row(db, row_id)["actor"] for row_id in _ids(db)] == ["AE0", "AE1", "AE2"]
        report = verify_audit_chain(db)
        assert report.ok and report.rows == 3
        _record(db, 1)
        assert verify_audit_chain(db).ok
        # append-only again after the upgrade, and no REPLACE (SQLite) or UPDATE
        with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
            session.execute(text("UPDATE audit_events SET actor = 'x'"))
    finally:
        db.dispose()


def test_0008_downgrades_and_upgrades_again(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    db = Database(empty_db_url)
    try:
        _record(db, 2)
        command.downgrade(migrate.alembic_config(empty_db_url), "0007")
        with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
            session.execute(text("DELETE FROM audit_events"))
        migrate.upgrade(empty_db_url)
        assert verify_audit_chain(db).ok
    finally:
        db.dispose()


def test_revision_0008_follows_0007() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    revision = scripts.get_revision("0008")
    assert revision is not None and revision.down_revision == "0007"
