"""Migration 0009: rows written before it get their PN folded copies (backfill)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, ImagingRequest, Patient
from dicom_node.domain.query import Level
from dicom_node.services.query.find import find_entities
from dicom_node.services.query.modality_worklist import find_scheduled_steps


def _rows_of_revision_0008(db: Database) -> None:
    """A patient, a study and a scheduled order as the node wrote them at 0008:
    plain SQL, the models describe the newest schema. The old fold kept
    trailing empty components, and ReferringPhysicianName had no copy."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.unit_of_work() as session:
        patient = session.execute(
            text(
                "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, "
                "patient_name_folded, created_at, updated_at) VALUES ('OLD1', '', "
                "'DOE^JOHN^^', 'doe^john^^', :now, :now) RETURNING id"
            ),
            {"now": now},
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO dicom_studies (study_instance_uid, patient_pk, accession_issuer, "
                "referring_physician_name, series_count, instance_count, metadata_status, "
                "status, completeness, released_to_reading, created_at, updated_at) VALUES "
                "('1.2.826.0.1.9', :patient, '', 'García^José', 1, 1, 'pending', 'acquired', "
                "'receiving', :no, :now, :now)"
            ),
            {"patient": patient, "no": False, "now": now},
        )
        session.execute(
            text(
                "INSERT INTO imaging_requests (patient_id, issuer_of_patient_id, patient_name, "
                "patient_name_folded, accession_issuer, priority, status, "
                "referring_physician_name, scheduled_at, created_at, updated_at) VALUES "
                "('OLD1', '', 'DOE^JOHN^^', 'doe^john^^', '', 'routine', 'scheduled', "
                "'Wong^Anna=王^安娜', :now, :now, :now)"
            ),
            {"now": now},
        )


def test_upgrade_to_0009_folds_the_names_of_existing_rows(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0008")
    db = Database(empty_db_url)
    try:
        _rows_of_revision_0008(db)
        migrate.upgrade(empty_db_url)
        assert migrate.is_up_to_date(db.engine)
        with db.read() as session:
            patient = session.scalars(select(Patient)).one()
            study = session.scalars(select(DicomStudy)).one()
            order = session.scalars(select(ImagingRequest)).one()
            assert patient.patient_name_folded == "doe^john"
            assert study.referring_physician_name_folded == "garcía^josé"
            assert order.patient_name_folded == "doe^john"
            assert order.referring_physician_name_folded == "wong^anna=王^安娜"
            # the newly indexed names are unknown for what was stored before
            assert study.name_of_physicians_reading_study is None
            assert order.scheduled_performing_physician_name is None

            # and they match by the PN rule, in C-FIND's compiler ...
            found = find_entities(
                session,
                level=Level.STUDY,
                keys={"ReferringPhysicianName": "GARCÍA^JOSÉ", "PatientName": "doe^john"},
                limit=10,
            )
            assert [row["ReferringPhysicianName"] for row in found.matches] == ["García^José"]
        # ... and in the worklist's
        steps = find_scheduled_steps(
            db,
            top={"ReferringPhysicianName": "王^安娜", "PatientName": "DOE^JOHN"},
            step={},
            limit=10,
            actor="test",
        )
        assert [s.top["ReferringPhysicianName"] for s in steps.steps] == ["Wong^Anna=王^安娜"]
    finally:
        db.dispose()
