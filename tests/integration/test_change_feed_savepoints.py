"""The change feed and savepoints (``session.begin_nested()``), on SQLite and PostgreSQL.

A savepoint that rolls back, with its error caught, takes with it the feed
entries recorded inside it, not those the transaction recorded before it: those
changes commit, so their entries must too. A savepoint's release is no COMMIT:
the entries wait for the real one (and on PostgreSQL the feed's advisory lock
is not taken early, which would reverse the lock order with the audit chain's).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dicom_node.db.changes import FEED_LOCK_KEY, record_change
from dicom_node.db.engine import Database
from dicom_node.db.models import ChangeLogEntry, DicomStudy, ImagingRequest, Patient, User
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.workflow.study_metadata import correct_study


class _Abort(Exception):
    pass


def _order(session: Session, patient_id: str) -> int:
    order = ImagingRequest(
        patient_id=patient_id,
        patient_name="DOE^JANE",
        patient_name_folded="doe^jane",
        requested_modality="CT",
        status="requested",
    )
    session.add(order)
    session.flush()
    return order.id


def _feed(db: Database) -> list[tuple[str, int, str]]:
    with db.read() as session:
        rows = session.scalars(select(ChangeLogEntry).order_by(ChangeLogEntry.seq)).all()
        return [(row.entity, row.entity_id, row.action) for row in rows]


def _core_entry(session: Session, entity_id: int) -> None:
    """An entry as ingest records it (Core statements, no ORM flush)."""
    record_change(
        session,
        entity="study",
        entity_id=entity_id,
        action="updated",
        payload={"status": "queued"},
    )


def test_entries_recorded_before_a_rolled_back_savepoint_commit_with_their_changes(
    db: Database,
) -> None:
    with db.unit_of_work() as session:
        before = _order(session, "BEFORE")
        _core_entry(session, 901)
        try:
            with session.begin_nested():
                _order(session, "INSIDE")
                _core_entry(session, 902)
                raise _Abort
        except _Abort:
            pass
        after = _order(session, "AFTER")
    with db.read() as session:
        committed = set(session.scalars(select(ImagingRequest.id)))
    assert before in committed and after in committed
    # the order that rolled back with its savepoint is not announced
    assert _feed(db) == [
        ("order", before, "created"),
        ("study", 901, "updated"),
        ("order", after, "created"),
    ]


def test_an_inner_savepoint_rolls_back_its_own_entries_only(db: Database) -> None:
    with db.unit_of_work() as session:
        first = _order(session, "FIRST")
        with session.begin_nested():
            outer = _order(session, "OUTER")
            try:
                with session.begin_nested():
                    _order(session, "INNER")
                    _core_entry(session, 903)
                    raise _Abort
            except _Abort:
                pass
            _core_entry(session, 904)
    assert _feed(db) == [
        ("order", first, "created"),
        ("order", outer, "created"),
        ("study", 904, "updated"),
    ]


def test_a_released_savepoint_rolled_back_by_its_parent_leaves_nothing(db: Database) -> None:
    with db.unit_of_work() as session:
        kept = _order(session, "KEPT")
        try:
            with session.begin_nested():
                with session.begin_nested():
                    _order(session, "RELEASED")
                    _core_entry(session, 905)
                raise _Abort
        except _Abort:
            pass
    assert _feed(db) == [("order", kept, "created")]


def test_the_outer_rollback_drops_every_entry(db: Database) -> None:
    with pytest.raises(_Abort), db.unit_of_work() as session:
        _order(session, "GONE")
        with session.begin_nested():
            _order(session, "ALSO_GONE")
        try:
            with session.begin_nested():
                _order(session, "ROLLED_BACK")
                raise _Abort
        except _Abort:
            pass
        _core_entry(session, 906)
        raise _Abort
    assert _feed(db) == []
    # and nothing is left over for the next transaction of the node
    with db.unit_of_work() as session:
        last = _order(session, "NEXT")
    assert _feed(db) == [("order", last, "created")]


def _feed_rows_and_lock(session: Session) -> tuple[int, int]:
    """(change_log rows this transaction sees, feed advisory locks it holds)."""
    rows = int(session.scalar(select(func.count()).select_from(ChangeLogEntry)) or 0)
    if session.get_bind().dialect.name != "postgresql":
        return rows, 0
    # a bigint advisory key is stored as classid (high half) and objid (low half)
    locks = session.scalar(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND classid = 0 AND objid = :key"
        ),
        {"key": FEED_LOCK_KEY},
    )
    return rows, int(locks or 0)


def _study_of_a_lone_patient(db: Database) -> tuple[int, int, int]:
    """(user id, study id, id of an existing patient to move the study to)."""
    with db.unit_of_work() as session:
        user = User(username="corrector", password_hash="x", role=Role.TECHNOLOGIST.value)
        lone = Patient(patient_id="PAT-OLD", patient_name="DOE^JANE")
        other = Patient(patient_id="PAT-NEW", patient_name="DOE^JANE")
        session.add_all([user, lone, other])
        session.flush()
        study = DicomStudy(
            study_instance_uid=generate_uid(), patient_pk=lone.id, metadata_status="matched"
        )
        session.add(study)
        session.flush()
        return user.id, study.id, other.id


def test_a_study_correction_writes_the_feed_at_commit_not_at_a_savepoint_release(
    db: Database,
) -> None:
    """The study moves to an existing patient and its old, now empty, patient
    record is removed in a savepoint (services/query/studies.py): the study's entry
    was flushed before that savepoint and must not be written at its release."""
    user_id, study_id, target_pk = _study_of_a_lone_patient(db)
    entries_before = len(_feed(db))
    principal = Principal(user_id=user_id, username="corrector", role=Role.TECHNOLOGIST)
    seen: dict[str, Any] = {}
    with db.unit_of_work() as session:
        summary = correct_study(
            session,
            principal=principal,
            study_id=study_id,
            changes={"patient_id": "PAT-NEW"},
            reason="wrong MRN",
            source_address=None,
        )
        seen["rows"], seen["locks"] = _feed_rows_and_lock(session)
    assert summary.patient_id == "PAT-NEW"
    assert seen == {"rows": entries_before, "locks": 0}
    with db.read() as session:
        study = session.get(DicomStudy, study_id)
        assert study is not None and study.patient_pk == target_pk
        assert session.scalar(select(Patient).where(Patient.patient_id == "PAT-OLD")) is None
        last = session.scalars(
            select(ChangeLogEntry)
            .where(ChangeLogEntry.entity == "study", ChangeLogEntry.entity_id == study_id)
            .order_by(ChangeLogEntry.seq.desc())
        ).first()
    assert last is not None and last.payload["metadata_status"] == "corrected"
