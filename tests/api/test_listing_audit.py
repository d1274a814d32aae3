"""Listings that show patient data leave a Query audit event (issue 13, finding
6): one per request, with the query parameters and the counts; the polled
worklist once per interval per user, address and listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import select, text

from api.listing_audit import RepeatedListingAudit
from dicom_node.db.models import AuditEvent, ImagingRequest
from dicom_node.services.ingest.instances import IngestPolicy, Source, store_instance
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes


def _orders(api: ApiServer, count: int) -> None:
    with api.db.unit_of_work() as session:
        for n in range(count):
            session.add(
                ImagingRequest(
                    patient_id=f"P{n}",
                    patient_name=f"DOE^JANE{n}",
                    patient_name_folded=f"doe^jane{n}",
                    patient_birth_date="19700101",
                    requested_modality="CT",
                    status="requested",
                    accession_number=f"ACC{n}",
                )
            )


def _queries(api: ApiServer, action: str) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_every_order_listing_is_audited_once_with_its_parameters_and_counts(
    api: ApiServer,
) -> None:
    """Before: only a listing narrowed to a patient was audited; 500 orders with
    names, ids and birth dates left no trace."""
    _orders(api, 3)
    client = api.client("scheduler")
    asks: list[dict[str, Any]] = [
        {"limit": 500},
        {"status": "requested"},
        {"accession_number": "ACC1"},
        {"sort": "-patient_name", "limit": 2},
        {"patient_id": "P2"},  # narrowed: the service's own event, not a second one
    ]
    for params in asks:
        assert client.get("/api/orders", params=params).status_code == 200
    events = _queries(api, "orders_queried")
    assert len(events) == len(asks)
    assert {e.event_code for e in events} == {"110112"}
    assert {e.actor for e in events} == {client.username}  # type: ignore[attr-defined]
    assert {e.source_address for e in events} == {"127.0.0.1"}
    first, by_status, by_accession, sorted_page, by_patient = (e.details for e in events)
    assert first["query"]["limit"] == 500
    assert (first["matches"], first["returned"]) == (3, 3)
    assert by_status["query"]["status"] == ["requested"]
    assert by_accession["query"]["accession_number"] == "ACC1"
    assert (by_accession["matches"], by_accession["returned"]) == (1, 1)
    assert sorted_page["query"]["sort"] == "-patient_name"
    assert (sorted_page["matches"], sorted_page["returned"]) == (3, 2)
    assert events[-1].patient_id == "P2" and by_patient["matches"] == 1


def test_every_reconciliation_listing_is_audited_once(api: ApiServer, tmp_path: Path) -> None:
    # an unmatched study (no order claims it): patient name, id and birth date listed
    store_instance(
        api.db,
        FileStore(tmp_path / "store", fsync=False),
        part10=to_bytes(ct_dataset(study_uid=generate_uid())),
        source=Source(calling_ae_title="CT1", address="127.0.0.1:1"),
        policy=IngestPolicy(duplicate_policy="keep"),
    )
    client = api.client("scheduler")
    listed = client.get("/api/reconciliation", params={"limit": 500})
    assert listed.status_code == 200
    assert listed.json()["total"] >= 1
    patient = listed.json()["items"][0]["patient_id"]
    narrowed = client.get("/api/reconciliation", params={"patient_id": patient})
    assert narrowed.status_code == 200
    events = _queries(api, "reconciliation_queried")
    assert len(events) == 2
    whole, by_patient = events
    assert whole.event_code == "110112"
    assert whole.details["query"] == {"limit": 500, "offset": 0}
    assert whole.details["matches"] == listed.json()["total"]
    assert whole.details["returned"] == len(listed.json()["items"])
    assert by_patient.patient_id == patient


def test_the_polled_worklist_is_audited_once_per_interval_per_user_and_listing(
    api: ApiServer,
) -> None:
    reader = api.client("radiologist")
    other = api.client("radiologist")
    for _ in range(3):
        assert reader.get("/api/worklist").status_code == 200
    assert reader.get("/api/worklist", params={"modality": "CT"}).status_code == 200
    assert other.get("/api/worklist").status_code == 200
    events = _queries(api, "worklist_queried")
    assert [(e.actor, e.details["query"].get("modality")) for e in events] == [
        (reader.username, None),  # type: ignore[attr-defined]
        (reader.username, "CT"),  # type: ignore[attr-defined]
        (other.username, None),  # type: ignore[attr-defined]
    ]
    assert events[0].event_code == "110112"
    assert events[0].details["query"]["queue"] == "reading"
    assert events[0].details["matches"] == 0


# A real failure of the audit write: the database refuses the event's INSERT.
_REFUSE_WORKLIST_EVENTS = {
    "sqlite": [
        "CREATE TRIGGER refuse_worklist_event BEFORE INSERT ON audit_events"
        " WHEN NEW.action = 'worklist_queried'"
        " BEGIN SELECT RAISE(ABORT, 'worklist event refused (test)'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_worklist_event() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'worklist event refused (test)'; END $$",
        "CREATE TRIGGER refuse_worklist_event BEFORE INSERT ON audit_events FOR EACH ROW"
        " WHEN (NEW.action = 'worklist_queried') EXECUTE FUNCTION refuse_worklist_event()",
    ],
}
_ACCEPT_WORKLIST_EVENTS = {
    "sqlite": ["DROP TRIGGER refuse_worklist_event"],
    "postgresql": [
        "DROP TRIGGER refuse_worklist_event ON audit_events",
        "DROP FUNCTION refuse_worklist_event()",
    ],
}


def _run(api: ApiServer, statements: dict[str, list[str]]) -> None:
    with api.db.unit_of_work() as session:
        for statement in statements[api.db.dialect]:
            session.execute(text(statement))


def test_a_worklist_listing_whose_event_was_not_written_is_audited_at_the_next(
    api: ApiServer,
) -> None:
    """Before: the listing was marked audited before its event was written; when
    the write failed (500) the repeats of the next five minutes returned patient
    data with no event at all."""
    reader = api.client("radiologist")
    _run(api, _REFUSE_WORKLIST_EVENTS)
    # after a 500 the server closes the connection (Starlette re-raises the error
    # to uvicorn): not kept alive, so the next request never meets a reset socket
    failed = reader.get("/api/worklist", headers={"Connection": "close"})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert _queries(api, "worklist_queried") == []
    _run(api, _ACCEPT_WORKLIST_EVENTS)
    assert reader.get("/api/worklist").status_code == 200
    events = _queries(api, "worklist_queried")
    assert len(events) == 1
    # the failed request showed nothing: not a repeat
    assert "repeats_since_last_event" not in events[0].details
    # this one was written: repeats are counted again
    assert reader.get("/api/worklist").status_code == 200
    assert len(_queries(api, "worklist_queried")) == 1


def test_a_listing_whose_event_was_not_written_is_due_again_with_its_repeats() -> None:
    audit = RepeatedListingAudit(interval=300)
    assert audit.due("k", now=0) == 0
    assert audit.due("k", now=10) is None
    assert audit.due("k", now=300) == 1  # the caller's write fails:
    assert audit.due("k", now=301) is None  # (served while that write was under way)
    audit.not_written("k", 1)
    assert audit.due("k", now=302) == 2  # the poll at 10 and the one at 301
    assert audit.due("k", now=303) is None
    audit.not_written("new", 0)  # forgotten meanwhile (more keys than remembered)
    assert audit.due("new", now=304) == 0


def test_a_repeated_listing_is_due_again_after_the_interval_with_its_repeat_count() -> None:
    audit = RepeatedListingAudit(interval=300)
    assert audit.due("k", now=0) == 0
    assert audit.due("k", now=10) is None
    assert audit.due("k", now=299) is None
    assert audit.due("other", now=299) == 0
    assert audit.due("k", now=300) == 2  # the two polls folded into this event
    assert audit.due("k", now=301) is None
