"""What the database itself must refuse, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
    User,
)
from dicom_node.domain.audit import AuditEventCode, AuditRecord
from dicom_node.services.audit.record import record_audit_event


def _patient(session: Session, pid: str = "P1", issuer: str = "") -> Patient:
    patient = Patient(patient_id=pid, issuer_of_patient_id=issuer, patient_name="DOE^J")
    session.add(patient)
    session.flush()
    return patient


def _study(session: Session, uid: str, patient: Patient) -> DicomStudy:
    study = DicomStudy(study_instance_uid=uid, patient_pk=patient.id)
    session.add(study)
    session.flush()
    return study


def _order(session: Session, accession: str, issuer: str = "", uid: str | None = None) -> None:
    session.add(
        ImagingRequest(
            patient_id="P1",
            patient_name="DOE^J",
            patient_name_folded="doe^j",
            accession_number=accession,
            accession_issuer=issuer,
            study_instance_uid=uid,
        )
    )
    session.flush()


def test_migration_reaches_head_and_is_idempotent(db: Database) -> None:
    assert migrate.is_up_to_date(db.engine)
    migrate.upgrade(db.url)  # a second upgrade is a no-op
    assert migrate.is_up_to_date(db.engine)


def test_schema_has_every_entity_of_the_brief_and_the_index(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "users",
        "imaging_centers",
        "modalities",
        "imaging_requests",
        "dicom_studies",
        "reports",
        "report_versions",
        "critical_communications",
        "worklist_items",
        "audit_events",
        "patients",
        "dicom_series",
        "dicom_instances",
        "performed_procedure_steps",
    } <= tables


def test_query_indexes_exist(db: Database) -> None:
    inspector = inspect(db.engine)

    def indexed(table: str) -> set[tuple[str, ...]]:
        found = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        found |= {tuple(uc["column_names"]) for uc in inspector.get_unique_constraints(table)}
        return found  # type: ignore[return-value]

    assert ("patient_name_folded",) in indexed("patients")
    assert ("study_date",) in indexed("dicom_studies")
    assert ("accession_number",) in indexed("dicom_studies")
    assert ("study_pk",) in indexed("dicom_series")
    assert ("series_pk",) in indexed("dicom_instances")
    assert ("queue_type", "status", "priority_rank", "due_at") in indexed("worklist_items")


def test_duplicate_study_instance_uid_is_refused(db: Database) -> None:
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        patient = _patient(session)
        _study(session, "1.2.3", patient)
        _study(session, "1.2.3", patient)


def test_duplicate_series_and_sop_instance_uids_are_refused(db: Database) -> None:
    with db.unit_of_work() as session:
        study = _study(session, "1.2.3", _patient(session))
        series = DicomSeries(series_instance_uid="1.2.3.1", study_pk=study.id)
        session.add(series)
        session.flush()
        series_pk = series.id
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.add(DicomSeries(series_instance_uid="1.2.3.1", study_pk=study.id))
        session.flush()

    def instance() -> DicomInstance:
        return DicomInstance(
            sop_instance_uid="1.2.3.1.1",
            series_pk=series_pk,
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            file_path="x",
            file_size=1,
            sha256="0",
            received_at=datetime.now(UTC),
        )

    with db.unit_of_work() as session:
        session.add(instance())
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.add(instance())


def test_accession_number_is_unique_per_issuer_only(db: Database) -> None:
    with db.unit_of_work() as session:
        _order(session, "ACC1", issuer="HOSP_A")
        _order(session, "ACC1", issuer="HOSP_B")  # same number, other issuer: allowed
        _order(session, "ACC2")
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        _order(session, "ACC1", issuer="HOSP_A")


def test_orders_without_accession_yet_do_not_collide(db: Database) -> None:
    with db.unit_of_work() as session:
        _order(session, None)  # type: ignore[arg-type]
        _order(session, None)  # type: ignore[arg-type]


def test_username_is_unique(db: Database) -> None:
    def user() -> User:
        return User(username="ann", email=None, password_hash="x", role="admin")

    with db.unit_of_work() as session:
        session.add(user())
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.add(user())


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.add(DicomStudy(study_instance_uid="9.9", patient_pk=424242))
        session.flush()


def test_unknown_state_values_are_refused(db: Database) -> None:
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.add(User(username="bob", password_hash="x", role="superuser"))
        session.flush()


def _one_audit_event(db: Database) -> int:
    with db.unit_of_work() as session:
        record_audit_event(
            session,
            AuditRecord(event_code=AuditEventCode.ORDER_RECORD, action="order_created"),
        )
    with db.read() as session:
        event = session.query(AuditEvent).one()
        assert event.timestamp.tzinfo is not None
        return event.id


def test_audit_events_refuse_update_in_the_database(db: Database) -> None:
    event_id = _one_audit_event(db)
    with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == event_id).values(action="x"))
    with db.read() as session:
        assert session.get(AuditEvent, event_id).action == "order_created"  # type: ignore[union-attr]


def test_audit_events_refuse_delete_in_the_database(db: Database) -> None:
    event_id = _one_audit_event(db)
    with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
        session.execute(delete(AuditEvent))
    with db.read() as session:
        assert session.get(AuditEvent, event_id) is not None


# SQLite has no TRUNCATE; its DELETE without WHERE is covered above.
@pytest.mark.parametrize("backend", ["postgresql"])
def test_audit_events_refuse_truncate_on_postgresql(db: Database) -> None:
    _one_audit_event(db)
    with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
        session.execute(text("TRUNCATE audit_events"))
    with db.read() as session:
        assert session.query(AuditEvent).count() == 1


def test_upgrade_to_0003_fills_the_normalised_times_of_existing_studies(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url, "0002")
    db = Database(empty_db_url)
    try:
        with db.unit_of_work() as session:
            patient = _patient(session)
            session.execute(
                text(
                    "INSERT INTO dicom_studies (study_instance_uid, patient_pk, accession_issuer, "
                    "study_time, series_count, instance_count, metadata_status, status, "
                    "completeness, released_to_reading, created_at, updated_at) VALUES "
                    "('1.2.9', :patient, '', '1015', 0, 0, 'pending', 'queued', 'receiving', "
                    ":no, :now, :now)"
                ),
                {
                    "patient": patient.id,
                    "no": False,
                    "now": datetime.now(UTC).replace(tzinfo=None),
                },
            )
        migrate.upgrade(empty_db_url)
        with db.read() as session:
            study = session.scalars(select(DicomStudy)).one()
        assert study.study_time_norm == "101500.000000"
    finally:
        db.dispose()


def test_upgrade_from_the_first_revision_keeps_existing_rows(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0001")
    db = Database(empty_db_url)
    try:
        with db.unit_of_work() as session:
            # plain SQL: the models describe the newest schema, not revision 0001's
            now = datetime.now(UTC).replace(tzinfo=None)
            study_pk = session.execute(
                text(
                    "INSERT INTO dicom_studies (study_instance_uid, patient_pk, accession_issuer, "
                    "series_count, instance_count, metadata_status, status, completeness, "
                    "released_to_reading, created_at, updated_at) VALUES ('1.2.3', :patient, '', "
                    "0, 0, 'pending', 'queued', 'receiving', :no, :now, :now) RETURNING id"
                ),
                {"patient": _patient(session).id, "no": False, "now": now},
            ).scalar_one()
            series_pk = session.execute(
                text(
                    "INSERT INTO dicom_series (series_instance_uid, study_pk, instance_count, "
                    "created_at, updated_at) VALUES ('1.2.3.1', :study, 0, :now, :now) "
                    "RETURNING id"
                ),
                {"study": study_pk, "now": now},
            ).scalar_one()
            session.execute(
                text(
                    "INSERT INTO dicom_instances (sop_instance_uid, series_pk, sop_class_uid, "
                    "transfer_syntax_uid, file_path, file_size, sha256, received_at) "
                    "VALUES ('1.2.3.1.1', :series, '1.2', '1.2.840.10008.1.2.1', 'x', 1, '0', "
                    ":now)"
                ),
                {"series": series_pk, "now": now},
            )
        migrate.upgrade(empty_db_url)
        assert migrate.is_up_to_date(db.engine)
        with db.read() as session:
            instance = session.scalars(select(DicomInstance)).one()
            assert instance.quarantined is False
            assert instance.received_patient_id is None
    finally:
        db.dispose()
