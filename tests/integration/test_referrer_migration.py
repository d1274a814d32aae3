"""Migration 0011 on a database the previous release wrote: orders referenced
by studies and work items (SQLite refused the table rebuild a batch migration
does), existing orders linked to their referring physician by name, and the
way back."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from dicom_node.db import migrate
from dicom_node.db.engine import Database


def _rows_of_revision_0010(db: Database) -> dict[str, int]:
    """Users, a patient, orders, a study and a work item as the node wrote them
    at 0010 (plain SQL: the models describe the newest schema)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    ids: dict[str, int] = {}
    with db.unit_of_work() as session:

        def user(name: str, display: str | None, *, active: bool = True) -> int:
            return int(
                session.execute(
                    text(
                        "INSERT INTO users (username, password_hash, role, display_name, "
                        "is_active, failed_sign_ins, is_lead, created_at, updated_at) VALUES "
                        "(:name, 'x', 'referring_physician', :display, :active, 0, :no, "
                        ":now, :now) RETURNING id"
                    ),
                    {"name": name, "display": display, "active": active, "no": False, "now": now},
                ).scalar_one()
            )

        ids["ferrer"] = user("ferrer", "Ferrer^Ray")
        user("twin1", "Twin^Tom")
        user("twin2", "TWIN^TOM")  # the same DICOM name twice: links nobody
        user("gone", "Gone^Gina", active=False)

        def order(referrer: str | None) -> int:
            return int(
                session.execute(
                    text(
                        "INSERT INTO imaging_requests (patient_id, issuer_of_patient_id, "
                        "patient_name, patient_name_folded, accession_issuer, priority, "
                        "status, referring_physician_name, referring_physician_name_folded, "
                        "created_at, updated_at) VALUES ('P1', '', 'DOE^JOHN', 'doe^john', "
                        "'', 'routine', 'scheduled', :referrer, :folded, :now, :now) "
                        "RETURNING id"
                    ),
                    {
                        "referrer": referrer,
                        "folded": referrer.lower() if referrer else None,
                        "now": now,
                    },
                ).scalar_one()
            )

        ids["for_ferrer"] = order("FERRER^RAY^^")
        ids["for_twins"] = order("Twin^Tom")
        ids["for_gone"] = order("Gone^Gina")
        ids["for_nobody"] = order(None)
        patient = session.execute(
            text(
                "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, "
                "patient_name_folded, created_at, updated_at) VALUES ('P1', '', 'DOE^JOHN', "
                "'doe^john', :now, :now) RETURNING id"
            ),
            {"now": now},
        ).scalar_one()
        study = session.execute(
            text(
                "INSERT INTO dicom_studies (study_instance_uid, patient_pk, accession_issuer, "
                "imaging_request_id, series_count, instance_count, metadata_status, status, "
                "completeness, released_to_reading, created_at, updated_at) VALUES "
                "('1.2.826.0.1.11', :patient, '', :order, 1, 1, 'matched', 'acquired', "
                "'complete', :no, :now, :now) RETURNING id"
            ),
            {"patient": patient, "order": ids["for_ferrer"], "no": False, "now": now},
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO worklist_items (dicom_study_id, imaging_request_id, queue_type, "
                "status, priority, priority_rank, overdue, version, created_at, updated_at) VALUES "
                "(:study, :order, 'reading', 'pending', 'routine', 3, :no, 1, :now, :now)"
            ),
            {"study": study, "order": ids["for_ferrer"], "no": False, "now": now},
        )
    return ids


def _referrers(db: Database) -> dict[int, int | None]:
    with db.read() as session:
        return {
            int(order_id): referrer
            for order_id, referrer in session.execute(
                text("SELECT id, referring_physician_id FROM imaging_requests")
            )
        }


def test_0011_upgrades_a_populated_database_and_links_orders_by_name(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url, "0010")
    db = Database(empty_db_url)
    try:
        ids = _rows_of_revision_0010(db)
        migrate.upgrade(empty_db_url)
        assert migrate.is_up_to_date(db.engine)
        linked = _referrers(db)
        assert linked[ids["for_ferrer"]] == ids["ferrer"]  # the PN rule: case, trailing ^
        assert linked[ids["for_twins"]] is None  # ambiguous
        assert linked[ids["for_gone"]] is None  # inactive
        assert linked[ids["for_nobody"]] is None
        with db.read() as session:  # nothing the orders held was lost
            assert session.execute(text("SELECT count(*) FROM worklist_items")).scalar() == 1
            assert (
                session.execute(text("SELECT imaging_request_id FROM dicom_studies")).scalar()
                == ids["for_ferrer"]
            )

        # and back, with the rows still referencing the orders, and up again
        command.downgrade(migrate.alembic_config(empty_db_url), "0010")
        with db.read() as session:
            columns = {
                row[0]
                for row in session.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'imaging_requests'"
                    )
                    if db.engine.dialect.name == "postgresql"
                    else text("SELECT name FROM pragma_table_info('imaging_requests')")
                )
            }
        assert "referring_physician_id" not in columns
        migrate.upgrade(empty_db_url)
        assert _referrers(db)[ids["for_ferrer"]] == ids["ferrer"]
    finally:
        db.dispose()
