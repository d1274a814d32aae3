"""The (SOP class, transfer syntax) pairs the store holds (db/held_syntaxes.py),
for the C-GET acceptor: written by ingest with the instance row, exact, never
removed, backfilled by migration 0010; read in one query (services/query/retrieve.py
HeldSyntaxes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from sqlalchemy import delete, event, inspect, select, text
from sqlalchemy.orm import Session

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.held_syntaxes import held_syntaxes, record_held_syntax
from dicom_node.db.models import DicomInstance, HeldSyntax
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.query.retrieve import HeldSyntaxes
from dicom_node.storage import FileStore
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, to_bytes

MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"


def _store(db: Database, store: FileStore, syntax: str, count: int) -> None:
    study = generate_uid()
    for _ in range(count):
        ds = ct_dataset(study_uid=study)
        ds.file_meta.TransferSyntaxUID = syntax
        result = store_instance(
            db,
            store,
            part10=to_bytes(ds),
            source=Source(calling_ae_title="T"),
            policy=IngestPolicy(),
        )
        assert result.outcome is StoreOutcome.STORED


def _pairs(db: Database) -> set[tuple[str, str]]:
    with db.read() as session:
        rows = session.execute(select(HeldSyntax.sop_class_uid, HeldSyntax.transfer_syntax_uid))
        return {(str(a), str(b)) for a, b in rows}


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements run on ``db`` meanwhile."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


def test_ingest_records_each_pair_exactly_and_never_removes_one(
    db: Database, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "store")
    held = HeldSyntaxes(db)
    assert held.of([CT_IMAGE_STORAGE]) == {}

    _store(db, store, ExplicitVRLittleEndian, 3)
    # at once: no sample, no time to live
    assert held.of([CT_IMAGE_STORAGE, MR]) == {CT_IMAGE_STORAGE: {ExplicitVRLittleEndian}}
    _store(db, store, ImplicitVRLittleEndian, 1)
    assert held.of([CT_IMAGE_STORAGE]) == {
        CT_IMAGE_STORAGE: {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    }
    assert held.of([MR]) == {}

    # purged instances leave their pairs: a stale pair only makes the C-GET
    # acceptor prefer a native syntax (scp/get_negotiation.py)
    with db.unit_of_work() as session:
        session.execute(delete(DicomInstance))
    assert _pairs(db) == {
        (CT_IMAGE_STORAGE, ExplicitVRLittleEndian),
        (CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
    }


def test_a_known_pair_costs_ingest_no_statement(db: Database, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    with _statements(db) as seen:
        _store(db, store, ImplicitVRLittleEndian, 1)
    # the first instance of the pair writes it (insert-if-absent, one statement)
    assert len([s for s in seen if "held_syntaxes" in s]) == 1

    with _statements(db) as seen:
        _store(db, store, ImplicitVRLittleEndian, 200)
    assert seen  # the listener sees ingest's statements
    assert [s for s in seen if "held_syntaxes" in s] == []
    assert _pairs(db) == {(CT_IMAGE_STORAGE, ImplicitVRLittleEndian)}


def test_a_pair_written_by_another_process_is_inserted_again_harmlessly(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """Each process (here: each Database, its own pool) knows its own pairs;
    the table decides, its primary key ignoring the second insert."""
    store = FileStore(tmp_path / "store")
    _store(db, store, ExplicitVRLittleEndian, 1)
    other = Database(db_url)
    try:
        with _statements(other) as seen:
            _store(other, store, ExplicitVRLittleEndian, 2)
        assert len([s for s in seen if "held_syntaxes" in s]) == 1
    finally:
        other.dispose()
    assert _pairs(db) == {(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)}


def test_a_rolled_back_pair_is_not_taken_as_known(db: Database) -> None:
    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), db.unit_of_work() as session:
        record_held_syntax(session, SC, JPEGBaseline8Bit)
        raise Abandoned
    assert _pairs(db) == set()

    # nor when the same session goes on to commit another transaction
    with Session(db.engine) as session:
        with pytest.raises(Abandoned), session.begin():
            record_held_syntax(session, SC, JPEGBaseline8Bit)
            raise Abandoned
        with session.begin():
            record_held_syntax(session, SC, ExplicitVRLittleEndian)
    assert _pairs(db) == {(SC, ExplicitVRLittleEndian)}

    with db.unit_of_work() as session:  # written now: the rollbacks were not forgotten
        record_held_syntax(session, SC, JPEGBaseline8Bit)
    assert _pairs(db) == {(SC, JPEGBaseline8Bit), (SC, ExplicitVRLittleEndian)}
    with _statements(db) as seen, db.unit_of_work() as session:
        record_held_syntax(session, SC, JPEGBaseline8Bit)
    assert [s for s in seen if "held_syntaxes" in s] == []


def test_the_table_is_keyed_by_sop_class_then_syntax(db: Database) -> None:
    key = inspect(db.engine).get_pk_constraint("held_syntaxes")
    assert key["constrained_columns"] == ["sop_class_uid", "transfer_syntax_uid"]


def _instances_of_revision_0009(db: Database, pairs: list[tuple[str, str]]) -> None:
    """Instances stored before 0010 (no held_syntaxes table yet), in plain SQL:
    the models describe the newest schema, and their change-feed hooks write
    columns a 0009 database does not have."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.unit_of_work() as session:
        patient = session.execute(
            text(
                "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, "
                "patient_name_folded, created_at, updated_at) VALUES ('OLD1', '', 'DOE^J', "
                "'doe^j', :now, :now) RETURNING id"
            ),
            {"now": now},
        ).scalar_one()
        study = session.execute(
            text(
                "INSERT INTO dicom_studies (study_instance_uid, patient_pk, accession_issuer, "
                "series_count, instance_count, metadata_status, status, completeness, "
                "released_to_reading, created_at, updated_at) VALUES (:uid, :patient, '', 1, "
                ":count, 'pending', 'acquired', 'receiving', :no, :now, :now) RETURNING id"
            ),
            {
                "uid": generate_uid(),
                "patient": patient,
                "count": len(pairs),
                "no": False,
                "now": now,
            },
        ).scalar_one()
        series = session.execute(
            text(
                "INSERT INTO dicom_series (series_instance_uid, study_pk, instance_count, "
                "created_at, updated_at) VALUES (:uid, :study, :count, :now, :now) RETURNING id"
            ),
            {"uid": generate_uid(), "study": study, "count": len(pairs), "now": now},
        ).scalar_one()
        for sop_class, syntax in pairs:
            uid = generate_uid()
            session.execute(
                text(
                    "INSERT INTO dicom_instances (sop_instance_uid, series_pk, sop_class_uid, "
                    "transfer_syntax_uid, file_path, file_size, sha256, received_at, quarantined) "
                    "VALUES (:uid, :series, :sop_class, :syntax, :path, 1, :sha, :now, :no)"
                ),
                {
                    "uid": uid,
                    "series": series,
                    "sop_class": sop_class,
                    "syntax": syntax,
                    "path": f"x/{uid}.dcm",
                    "sha": "0" * 64,
                    "now": now,
                    "no": False,
                },
            )


def test_upgrade_to_0010_backfills_the_pairs_of_the_stored_instances(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url, "0009")
    db = Database(empty_db_url)
    try:
        _instances_of_revision_0009(
            db,
            [
                (SC, JPEGBaseline8Bit),
                (SC, JPEGBaseline8Bit),
                (SC, ExplicitVRLittleEndian),
                (CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
            ],
        )
        migrate.upgrade(empty_db_url)
        assert migrate.is_up_to_date(db.engine)
        assert _pairs(db) == {
            (SC, JPEGBaseline8Bit),
            (SC, ExplicitVRLittleEndian),
            (CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
        }
        with db.read() as session:
            assert held_syntaxes(session, [SC]) == {
                SC: frozenset({JPEGBaseline8Bit, ExplicitVRLittleEndian})
            }
    finally:
        db.dispose()
