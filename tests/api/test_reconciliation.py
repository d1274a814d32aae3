"""Reconciliation over real HTTP, with studies that arrived through the ingest service."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from dicom_node.db.models import (
    AuditEvent,
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Modality,
    PerformedProcedureStep,
    User,
    WorklistItem,
)
from dicom_node.domain.enums import CompletenessEvidence
from dicom_node.domain.matching import SlaPolicy
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.workflow.completeness import complete_study
from dicom_node.services.workflow.mpps import MppsCreate, ScheduledStepRef, create_mpps
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes

SLOT = "2026-11-24T14:30:00Z"


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def events(api: ApiServer, action: str, target_id: object | None = None) -> list[AuditEvent]:
    with api.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target_id is not None:
            query = query.where(AuditEvent.target_id == str(target_id))
        return list(session.scalars(query.order_by(AuditEvent.id)))


def complete(api: ApiServer, study_id: int) -> None:
    with api.db.unit_of_work() as session:
        study = session.get(DicomStudy, study_id)
        assert study is not None
        complete_study(
            session,
            study,
            evidence=CompletenessEvidence.MANUAL,
            now=datetime.now(UTC),
            sla=SlaPolicy(),
            actor="test",
        )


def arrive(
    api: ApiServer,
    store: FileStore,
    *,
    study_uid: str | None = None,
    patient_id: str = "PAT1",
    patient_name: str = "DOE^JANE",
    accession: str = "",
    complete_it: bool = True,
) -> int:
    """A one-image CT study received through the ingest service; its id."""
    uid = study_uid or generate_uid()
    image = ct_dataset(
        study_uid=uid, patient_id=patient_id, patient_name=patient_name, accession=accession
    )
    result = store_instance(
        api.db,
        store,
        part10=to_bytes(image),
        source=Source(calling_ae_title="CT_MAIN_1"),
        policy=IngestPolicy(),
    )
    assert result.outcome is StoreOutcome.STORED
    with api.db.read() as session:
        study_id = session.scalar(select(DicomStudy.id).where(DicomStudy.study_instance_uid == uid))
    assert study_id is not None
    if complete_it:
        complete(api, study_id)
    return study_id


def study(api: ApiServer, study_id: int) -> DicomStudy:
    with api.db.read() as session:
        row = session.get(DicomStudy, study_id)
        assert row is not None
        return row


def order_row(api: ApiServer, order_id: int) -> ImagingRequest:
    with api.db.read() as session:
        row = session.get(ImagingRequest, order_id)
        assert row is not None
        return row


def items(api: ApiServer, study_id: int) -> list[tuple[str, str, str]]:
    with api.db.read() as session:
        rows = session.execute(
            select(WorklistItem.queue_type, WorklistItem.status, WorklistItem.priority)
            .where(WorklistItem.dicom_study_id == study_id)
            .order_by(WorklistItem.id)
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def scheduled_order(
    api: ApiServer, scheduler: httpx.Client, *, patient_id: str = "PAT1", **fields: Any
) -> dict[str, Any]:
    with api.db.unit_of_work() as session:
        modality_id = session.scalar(select(Modality.id).where(Modality.dicom_ae_title == "CT_1"))
        if modality_id is None:
            center = ImagingCenter(name="Main", code="MAIN")
            session.add(center)
            session.flush()
            device = Modality(
                imaging_center_id=center.id, name="CT", type="CT", dicom_ae_title="CT_1"
            )
            session.add(device)
            session.flush()
            modality_id = device.id
    body = {
        "patient_id": patient_id,
        "patient_name": "DOE^JANE",
        "patient_birth_date": "19700101",
        "patient_sex": "F",
        "requested_modality": "CT",
        "study_description": f"CT {generate_uid()[-6:]}",
        "priority": "urgent",
    } | fields
    created = scheduler.post("/api/orders", json=body)
    assert created.status_code == 201, created.text
    response = scheduler.post(
        f"/api/orders/{created.json()['id']}/schedule",
        json={"modality_id": modality_id, "scheduled_at": SLOT},
    )
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


# --------------------------------------------------------------------------- listing


def test_listing_shows_unmatched_and_conflicting_studies_then_unscheduled_exams(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    unmatched = arrive(api, store, patient_id="U1")
    conflict_order = scheduled_order(api, scheduler, patient_id="C1")
    conflict = arrive(
        api,
        store,
        study_uid=conflict_order["study_instance_uid"],
        patient_id="C1",
        patient_name="SOMEONE^ELSE",
    )
    matched_order = scheduled_order(api, scheduler, patient_id="M1")
    matched = arrive(api, store, study_uid=matched_order["study_instance_uid"], patient_id="M1")
    assert (study(api, conflict).metadata_status, study(api, matched).metadata_status) == (
        "conflict",
        "matched",
    )
    with api.db.unit_of_work() as session:
        step = PerformedProcedureStep(
            sop_instance_uid=generate_uid(),
            status="IN PROGRESS",
            performed_station_ae_title="US_1",
            accession_number=None,
        )
        session.add(step)
        session.flush()
        session.add(
            WorklistItem(
                performed_procedure_step_id=step.id, queue_type="reconciliation", status="pending"
            )
        )

    page = scheduler.get("/api/reconciliation")
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 3
    kinds = [(e["kind"], e["study_id"], e["metadata_status"]) for e in body["items"]]
    assert kinds == [
        ("study", unmatched, "unmatched"),
        ("study", conflict, "conflict"),
        ("procedure_step", None, None),
    ]
    first, second, third = body["items"]
    assert first["worklist_item_id"] is not None and first["worklist_status"] == "pending"
    assert (first["patient_id"], first["modality"]) == ("U1", "CT")
    assert second["linked_order_id"] == conflict_order["id"]
    assert third["performed_station_ae_title"] == "US_1"

    only = scheduler.get("/api/reconciliation", params={"metadata_status": "conflict"}).json()
    assert [e["study_id"] for e in only["items"]] == [conflict]
    tail = scheduler.get("/api/reconciliation", params={"offset": 2, "limit": 1}).json()
    assert (tail["total"], [e["kind"] for e in tail["items"]]) == (3, ["procedure_step"])
    newest = scheduler.get("/api/reconciliation", params={"sort": "-created_at", "limit": 2})
    assert [e["study_id"] for e in newest.json()["items"]] == [conflict, unmatched]
    bad_sort = scheduler.get("/api/reconciliation", params={"sort": "secret"})
    assert error(bad_sort, 422)["field"] == "query.sort"

    by_patient = scheduler.get("/api/reconciliation", params={"patient_id": "U1"}).json()
    assert [e["study_id"] for e in by_patient["items"]] == [unmatched]
    # every listing is a Query; the one narrowed to a patient names them
    query = events(api, "reconciliation_queried")[-1]
    assert query.event_code == "110112" and query.patient_id == "U1"

    for role in ("technologist", "radiologist", "referring_physician", "auditor"):
        assert api.client(role).get("/api/reconciliation").status_code == 403


# --------------------------------------------------------------------------- link


def test_linking_a_complete_unmatched_study_performs_the_order_and_queues_it_for_reading(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store)  # no UID or accession of the order: unmatched
    assert items(api, study_id) == [("reconciliation", "pending", "routine")]

    response = scheduler.post(
        f"/api/reconciliation/{study_id}/link",
        json={"order_id": order["id"], "reason": "modality operator typed no accession"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["study"]["metadata_status"] == "matched"
    assert body["order"]["status"] == "performed"
    assert body["reading_item_id"] is not None

    row = study(api, study_id)
    assert (row.metadata_status, row.imaging_request_id) == ("matched", order["id"])
    linked = order_row(api, order["id"])
    assert linked.status == "performed"
    assert linked.exam_started_at is not None and linked.exam_completed_at is not None
    # the reconciliation item is closed; reading work is queued at the order's priority
    assert items(api, study_id) == [
        ("reconciliation", "completed", "routine"),
        ("reading", "pending", "urgent"),
    ]
    (event,) = events(api, "study_linked", study_id)
    assert event.reason == "modality operator typed no accession"
    assert event.details["before"] == {"metadata_status": "unmatched", "imaging_request_id": None}
    assert event.details["after"] == {
        "metadata_status": "matched",
        "imaging_request_id": order["id"],
    }
    assert event.actor == scheduler.username  # type: ignore[attr-defined]
    transitions = [e.action for e in events(api, "order_in_progress", order["id"])] + [
        e.action for e in events(api, "order_performed", order["id"])
    ]
    assert transitions == ["order_in_progress", "order_performed"]
    # done in the scheduler's name, with the reconciliation reason
    for action in ("order_in_progress", "order_performed"):
        (moved,) = events(api, action, order["id"])
        assert (moved.actor, moved.actor_role) == (scheduler.username, "scheduler")  # type: ignore[attr-defined]
        assert moved.actor_user_id is not None
        assert "modality operator typed no accession" in (moved.reason or "")
    assert len(events(api, "worklist_item_completed")) == 1

    assert scheduler.get("/api/reconciliation").json()["total"] == 0
    again = scheduler.post(
        f"/api/reconciliation/{study_id}/link", json={"order_id": order["id"], "reason": "again"}
    )
    assert error(again, 409)["current_state"] == "matched"


def test_a_linked_study_still_arriving_starts_the_order_and_is_read_once_complete(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store, complete_it=False)
    body = scheduler.post(
        f"/api/reconciliation/{study_id}/link", json={"order_id": order["id"], "reason": "same"}
    ).json()
    assert (body["order"]["status"], body["reading_item_id"]) == ("in_progress", None)
    assert items(api, study_id) == []
    complete(api, study_id)  # what the stability job does later
    assert items(api, study_id) == [("reading", "pending", "urgent")]
    assert order_row(api, order["id"]).status == "performed"


def test_another_patients_order_needs_force_and_the_override_is_audited(
    api: ApiServer, store: FileStore
) -> None:
    admin = api.client("admin")
    order = scheduled_order(api, admin, patient_id="PAT9")
    study_id = arrive(api, store, patient_id="PAT1")
    url = f"/api/reconciliation/{study_id}/link"
    refused = admin.post(url, json={"order_id": order["id"], "reason": "same person"})
    body = error(refused, 409)
    assert body["existing"]["id"] == order["id"] and body["existing"]["patient_id"] == "PAT9"
    assert study(api, study_id).metadata_status == "unmatched"

    forced = admin.post(url, json={"order_id": order["id"], "reason": "MRN merged", "force": True})
    assert forced.status_code == 200, forced.text
    (event,) = events(api, "study_linked", study_id)
    assert event.details["forced"] is True
    assert "PatientID" in event.details["mismatched_attributes"]
    assert event.reason == "MRN merged"


def test_a_conflicting_study_links_to_the_order_it_claims_without_force(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store, study_uid=order["study_instance_uid"], patient_name="DOE^JANET")
    assert study(api, study_id).metadata_status == "conflict"
    assert items(api, study_id) == [("reconciliation", "pending", "urgent")]
    response = scheduler.post(
        f"/api/reconciliation/{study_id}/link",
        json={"order_id": order["id"], "reason": "name typo at the modality"},
    )
    assert response.status_code == 200, response.text
    (event,) = events(api, "study_linked", study_id)
    assert event.details["before"]["metadata_status"] == "conflict"
    assert event.details["mismatched_attributes"] == ["PatientName"]
    assert event.details["forced"] is False
    assert items(api, study_id) == [
        ("reconciliation", "completed", "urgent"),
        ("reading", "pending", "urgent"),
    ]


def test_link_refuses_bad_input_rejected_studies_and_cancelled_orders(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store)
    url = f"/api/reconciliation/{study_id}/link"
    assert error(scheduler.post(url, json={"order_id": order["id"]}), 422)["field"] == "reason"
    blank = scheduler.post(url, json={"order_id": order["id"], "reason": "  "})
    assert error(blank, 422)["field"] == "reason"
    unknown = scheduler.post(url, json={"order_id": 987654, "reason": "x"})
    assert "no order" in error(unknown, 404)["message"]
    assert error(
        scheduler.post("/api/reconciliation/987654/link", json={"order_id": 1, "reason": "x"}), 404
    )
    assert (
        api.client("technologist")
        .post(url, json={"order_id": order["id"], "reason": "x"})
        .status_code
        == 403
    )

    scheduler.post(f"/api/orders/{order['id']}/cancel", json={"reason": "wrong patient"})
    cancelled = scheduler.post(url, json={"order_id": order["id"], "reason": "x"})
    assert error(cancelled, 409)["current_state"] == "cancelled"

    with api.db.unit_of_work() as session:
        session.execute(
            update(DicomStudy).where(DicomStudy.id == study_id).values(metadata_status="rejected")
        )
    other = scheduled_order(api, scheduler)
    rejected = scheduler.post(url, json={"order_id": other["id"], "reason": "x"})
    assert error(rejected, 409)["current_state"] == "rejected"
    assert order_row(api, other["id"]).status == "scheduled"


# --------------------------------------------------------------------------- create order


def test_an_order_created_from_a_study_carries_its_identifiers_and_is_linked(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    study_id = arrive(api, store, patient_id="WALKIN", accession="ACC77")
    url = f"/api/reconciliation/{study_id}/create-order"
    assert error(scheduler.post(url, json={}), 422)["field"] == "reason"
    response = scheduler.post(url, json={"reason": "walk-in trauma", "priority": "stat"})
    assert response.status_code == 201, response.text
    body = response.json()
    order = body["order"]
    row = study(api, study_id)
    assert (order["patient_id"], order["patient_name"]) == ("WALKIN", "DOE^JANE")
    assert order["accession_number"] == "ACC77"
    assert order["study_instance_uid"] == row.study_instance_uid
    assert (order["requested_modality"], order["priority"], order["status"]) == (
        "CT",
        "stat",
        "performed",
    )
    assert (row.metadata_status, row.imaging_request_id) == ("matched", order["id"])
    assert items(api, study_id) == [
        ("reconciliation", "completed", "routine"),
        ("reading", "pending", "stat"),
    ]
    (created,) = events(api, "order_created", order["id"])
    assert created.reason == "walk-in trauma"
    assert created.details["from_study_id"] == study_id
    assert created.details["after"]["accession_number"] == "ACC77"
    (linked,) = events(api, "study_linked_to_new_order", study_id)
    assert linked.details["after"] == {
        "metadata_status": "matched",
        "imaging_request_id": order["id"],
    }

    again = scheduler.post(url, json={"reason": "twice"})
    assert error(again, 409)["current_state"] == "matched"


def test_create_order_is_refused_while_an_open_order_of_the_patient_and_modality_exists(
    api: ApiServer, store: FileStore
) -> None:
    """The images were most likely meant for that order (a mistyped accession):
    a second order would be worked and billed twice."""
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)  # PAT1, CT, another accession and UID
    study_id = arrive(api, store, accession="TYPO1")
    assert study(api, study_id).metadata_status == "unmatched"
    url = f"/api/reconciliation/{study_id}/create-order"

    refused = error(scheduler.post(url, json={"reason": "walk-in"}), 409)
    assert refused["existing"]["id"] == order["id"]
    assert "link the study to it" in refused["message"]
    with api.db.read() as session:  # nothing created
        assert session.scalars(select(ImagingRequest.id)).all() == [order["id"]]

    forced = scheduler.post(url, json={"reason": "a second CT that day", "force": True})
    assert forced.status_code == 201, forced.text
    new_id = forced.json()["order"]["id"]
    (created,) = events(api, "order_created", new_id)
    assert created.details["duplicate_override"] == {
        "existing_order_id": order["id"],
        "reason": "a second CT that day",
    }
    # listed with every other override, as for a new order
    (override,) = events(api, "order_duplicate_forced", new_id)
    assert override.details == {"existing_order_id": order["id"], "new_order_id": new_id}
    assert override.reason == "a second CT that day"


def test_create_order_is_refused_when_an_order_already_holds_the_study_uid(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    study_id = arrive(
        api, store, study_uid=order["study_instance_uid"], patient_name="SOMEBODY^ELSE"
    )
    assert study(api, study_id).metadata_status == "conflict"
    response = scheduler.post(
        f"/api/reconciliation/{study_id}/create-order", json={"reason": "new order"}
    )
    assert error(response, 409)["existing"]["id"] == order["id"]
    assert study(api, study_id).metadata_status == "conflict"


def test_create_order_names_a_cancelled_holder_and_a_forced_link_reinstates_it(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    cancel = scheduler.post(f"/api/orders/{order['id']}/cancel", json={"reason": "patient left"})
    assert cancel.status_code == 200, cancel.text
    # the patient came back after all: the images carry the cancelled order's UID
    study_id = arrive(api, store, study_uid=order["study_instance_uid"])
    assert study(api, study_id).metadata_status == "unmatched"

    refused = error(
        scheduler.post(f"/api/reconciliation/{study_id}/create-order", json={"reason": "x"}), 409
    )
    assert refused["existing"]["id"] == order["id"]
    assert refused["current_state"] == "cancelled"
    assert "cancelled" in refused["message"] and "force" in refused["message"]

    url = f"/api/reconciliation/{study_id}/link"
    plain = error(scheduler.post(url, json={"order_id": order["id"], "reason": "back"}), 409)
    assert plain["current_state"] == "cancelled" and "force" in plain["message"]
    forced = scheduler.post(
        url, json={"order_id": order["id"], "reason": "patient came back", "force": True}
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["order"]["status"] == "performed"
    assert forced.json()["reading_item_id"] is not None
    row = order_row(api, order["id"])
    assert (row.status, row.cancel_reason) == ("performed", None)
    assert row.exam_started_at is not None
    (reinstated,) = events(api, "order_reinstated", order["id"])
    assert reinstated.reason == "patient came back"
    assert reinstated.details["before"] == {"status": "cancelled", "cancel_reason": "patient left"}
    assert reinstated.details["after"]["status"] == "in_progress"
    assert reinstated.actor == scheduler.username  # type: ignore[attr-defined]
    (linked,) = events(api, "study_linked", study_id)
    assert linked.details["reinstated_order"] is True


def test_a_conflict_after_queueing_leaves_reading_until_the_study_is_linked_again(
    api: ApiServer, store: FileStore
) -> None:
    scheduler, reader = api.client("scheduler"), api.client("radiologist")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store, study_uid=order["study_instance_uid"])
    assert items(api, study_id) == [("reading", "pending", "urgent")]
    listed = reader.get("/api/worklist", params={"queue": "reading"}).json()["items"]
    (item_id,) = [entry["id"] for entry in listed if entry["study"]["id"] == study_id]
    assert reader.post(f"/api/worklist/{item_id}/claim").status_code == 200

    arrive(
        api,
        store,
        study_uid=order["study_instance_uid"],
        patient_id="PAT2",
        patient_name="ROE^RICHARD",
        complete_it=False,
    )
    assert study(api, study_id).metadata_status == "conflict"
    assert items(api, study_id) == [
        ("reading", "cancelled", "urgent"),
        ("reconciliation", "pending", "urgent"),
    ]
    listed = reader.get("/api/worklist", params={"queue": "reading"}).json()["items"]
    assert study_id not in [entry["study"]["id"] for entry in listed]
    (entry,) = scheduler.get("/api/reconciliation").json()["items"]
    assert (entry["study_id"], entry["metadata_status"]) == (study_id, "conflict")

    response = scheduler.post(
        f"/api/reconciliation/{study_id}/link",
        json={"order_id": order["id"], "reason": "stray image filed elsewhere"},
    )
    assert response.status_code == 200, response.text
    assert items(api, study_id) == [
        ("reading", "cancelled", "urgent"),
        ("reconciliation", "completed", "urgent"),
        ("reading", "pending", "urgent"),
    ]
    assert response.json()["reading_item_id"] not in (None, item_id)


def test_an_instance_after_the_report_is_final_opens_no_second_reading_item(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    order = scheduled_order(api, scheduler)
    study_id = arrive(api, store, study_uid=order["study_instance_uid"])
    listed = author.get("/api/worklist", params={"queue": "reading"}).json()["items"]
    (item_id,) = [entry["id"] for entry in listed if entry["study"]["id"] == study_id]
    assert author.post(f"/api/worklist/{item_id}/claim").status_code == 200
    report = author.post(
        "/api/reports", json={"study_id": study_id, "findings": "F", "impression": "I"}
    )
    assert report.status_code == 201, report.text
    report_id = report.json()["id"]
    assert author.post(f"/api/reports/{report_id}/submit").status_code == 200
    assert reviewer.post(f"/api/reports/{report_id}/finalize").status_code == 200
    before = items(api, study_id)
    assert ("reading", "pending", "urgent") not in before

    # a late series: the study completes again, but it is the report's to amend
    arrive(api, store, study_uid=order["study_instance_uid"])
    assert items(api, study_id) == before
    (late,) = events(api, "late_instance_after_report", study_id)
    assert late.details["report_id"] == report_id
    assert late.details["report_status"] == "final"
    assert (late.details["instances_after_report"], late.details["instance_count"]) == (1, 2)


def _unscheduled_mpps(api: ApiServer, study_uid: str) -> int:
    step = create_mpps(
        api.db,
        MppsCreate(
            sop_instance_uid=generate_uid(),
            status="IN PROGRESS",
            scheduled_steps=[ScheduledStepRef(study_instance_uid=study_uid, accession_number="")],
            station_ae_title="CT_MAIN_1",
        ),
        actor="CT_MAIN_1",
    )
    return step.id


def test_an_unscheduled_exams_mpps_item_closes_when_its_study_gets_an_order(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    study_uid = generate_uid()
    step_id = _unscheduled_mpps(api, study_uid)
    study_id = arrive(api, store, study_uid=study_uid, patient_id="WALKIN")
    listed = scheduler.get("/api/reconciliation").json()
    assert [(e["kind"], e["study_id"]) for e in listed["items"]] == [
        ("study", study_id),
        ("procedure_step", None),
    ]

    response = scheduler.post(
        f"/api/reconciliation/{study_id}/create-order", json={"reason": "walk-in"}
    )
    assert response.status_code == 201, response.text
    order_id = response.json()["order"]["id"]
    assert scheduler.get("/api/reconciliation").json()["total"] == 0
    with api.db.read() as session:
        step = session.get(PerformedProcedureStep, step_id)
        assert step is not None and step.imaging_request_id == order_id
        statuses = session.scalars(
            select(WorklistItem.status).where(WorklistItem.queue_type == "reconciliation")
        ).all()
    assert statuses == ["completed", "completed"]
    (linked,) = events(api, "procedure_step_linked")
    assert linked.details["after"] == {"imaging_request_id": order_id}
    assert linked.reason == "walk-in"


def test_an_mpps_only_reconciliation_item_is_resolved_with_a_reason(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    _unscheduled_mpps(api, generate_uid())  # a test exam whose images never came
    (entry,) = scheduler.get("/api/reconciliation").json()["items"]
    assert entry["kind"] == "procedure_step"
    url = f"/api/reconciliation/items/{entry['worklist_item_id']}/resolve"

    assert error(scheduler.post(url, json={}), 422)["field"] == "reason"
    assert api.client("technologist").post(url, json={"reason": "x"}).status_code == 403
    assert (
        "no reconciliation item"
        in error(
            scheduler.post("/api/reconciliation/items/987654/resolve", json={"reason": "x"}), 404
        )["message"]
    )
    resolved = scheduler.post(url, json={"reason": "phantom test scan"})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["worklist_status"] == "cancelled"
    assert scheduler.get("/api/reconciliation").json()["total"] == 0
    assert error(scheduler.post(url, json={"reason": "again"}), 409)["current_state"] == (
        "cancelled"
    )
    (event,) = events(api, "worklist_item_cancelled", entry["worklist_item_id"])
    assert event.reason == "phantom test scan"
    assert event.actor == scheduler.username  # type: ignore[attr-defined]
    assert event.details["before"]["status"] == "pending"

    # a study's item is resolved through the study, not here
    study_id = arrive(api, store)
    (study_entry,) = scheduler.get("/api/reconciliation").json()["items"]
    assert study_entry["study_id"] == study_id
    refused = scheduler.post(
        f"/api/reconciliation/items/{study_entry['worklist_item_id']}/resolve",
        json={"reason": "x", "outcome": "completed"},
    )
    assert "link the study" in error(refused, 409)["message"]


# --------------------------------------------------------------------------- release to reading


def _reading_worklist(client: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.get("/api/worklist", params={"queue": "reading"}).json()[
        "items"
    ]
    return listed


def test_an_unmatched_study_released_to_reading_is_read_before_its_order_is_found(
    api: ApiServer, store: FileStore
) -> None:
    """A trauma scan sent without an order: read now, reconciled later."""
    scheduler, reader = api.client("scheduler"), api.client("radiologist")
    study_id = arrive(api, store)
    assert items(api, study_id) == [("reconciliation", "pending", "routine")]
    assert study_id not in [e["study"]["id"] for e in _reading_worklist(reader)]

    response = scheduler.post(
        f"/api/reconciliation/{study_id}/release",
        json={"reason": "trauma bay, order to follow", "priority": "stat"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reading_item_id"] is not None
    assert (body["study"]["metadata_status"], body["study"]["released_to_reading"]) == (
        "unmatched",
        True,
    )
    # still to reconcile (it needs an order), and now on the reading worklist
    assert items(api, study_id) == [
        ("reconciliation", "pending", "routine"),
        ("reading", "pending", "stat"),
    ]
    (entry,) = scheduler.get("/api/reconciliation").json()["items"]
    assert (entry["study_id"], entry["released_to_reading"]) == (study_id, True)
    (listed,) = [e for e in _reading_worklist(reader) if e["study"]["id"] == study_id]
    assert listed["id"] == body["reading_item_id"]
    assert reader.post(f"/api/worklist/{listed['id']}/claim").status_code == 200
    (event,) = events(api, "study_released_to_reading", study_id)
    assert event.reason == "trauma bay, order to follow"
    assert (event.actor, event.actor_role) == (scheduler.username, "scheduler")  # type: ignore[attr-defined]
    assert event.details["before"] == {"released_to_reading": False}
    assert event.details["after"] == {"released_to_reading": True}
    assert (event.details["priority"], event.details["reading_item_id"]) == (
        "stat",
        body["reading_item_id"],
    )
    # the reading item made for it is audited in the scheduler's name
    (created,) = events(api, "worklist_item_created", body["reading_item_id"])
    assert (created.actor, created.details["before"]) == (scheduler.username, None)  # type: ignore[attr-defined]
    assert created.details["after"]["queue_type"] == "reading"
    assert created.details["after"]["priority"] == "stat"

    # the order found later: linked, and the claimed reading item is kept, not
    # doubled; it now names the order
    order = scheduled_order(api, scheduler)
    linked = scheduler.post(
        f"/api/reconciliation/{study_id}/link",
        json={"order_id": order["id"], "reason": "order entered after the scan"},
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["reading_item_id"] == body["reading_item_id"]
    assert items(api, study_id) == [
        ("reconciliation", "completed", "routine"),
        ("reading", "claimed", "stat"),  # the order's urgent is less pressing
    ]
    with api.db.read() as session:
        item = session.get(WorklistItem, body["reading_item_id"])
        assert item is not None and item.imaging_request_id == order["id"]


def test_a_report_signed_before_its_study_is_linked_reaches_the_referrers_feed(
    api: ApiServer, store: FileStore
) -> None:
    """Read at once (released), signed, then linked to the order of physician X:
    X hears of the signed report in the change feed, as of any report of their
    orders; before the link the feed had no order to give it."""
    scheduler = api.client("scheduler")
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    x = api.client("referring_physician", display_name="Xavier^Xena")
    with api.db.read() as session:
        x_id = session.scalar(select(User.id).where(User.username == x.username))  # type: ignore[attr-defined]
    study_id = arrive(api, store)
    released = scheduler.post(
        f"/api/reconciliation/{study_id}/release", json={"reason": "trauma", "priority": "stat"}
    )
    assert released.status_code == 200, released.text
    (item,) = [e for e in _reading_worklist(author) if e["study"]["id"] == study_id]
    assert author.post(f"/api/worklist/{item['id']}/claim").status_code == 200
    report = author.post(
        "/api/reports", json={"study_id": study_id, "findings": "f", "impression": "i"}
    )
    assert report.status_code == 201, report.text
    report_id = report.json()["id"]
    assert author.post(f"/api/reports/{report_id}/submit", json={}).status_code == 200
    assert reviewer.post(f"/api/reports/{report_id}/finalize").status_code == 200

    order = scheduled_order(api, scheduler, referring_physician_id=x_id)
    linked = scheduler.post(
        f"/api/reconciliation/{study_id}/link",
        json={"order_id": order["id"], "reason": "order entered after the scan"},
    )
    assert linked.status_code == 200, linked.text
    assert x.get(f"/api/reports/{report_id}").json()["status"] == "final"
    feed = x.get("/api/changes").json()["items"]
    reports = [i for i in feed if (i["entity"], i["entity_id"]) == ("report", report_id)]
    assert [(i["action"], i["payload"]["status"]) for i in reports] == [("updated", "final")]
    # a colleague sees none of it
    y = api.client("referring_physician", display_name="Young^Yuri")
    assert [i for i in y.get("/api/changes").json()["items"] if i["entity"] == "report"] == []


def test_a_released_study_takes_a_more_urgent_order_found_later(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    study_id = arrive(api, store)
    released = scheduler.post(
        f"/api/reconciliation/{study_id}/release", json={"reason": "read when possible"}
    ).json()
    with api.db.read() as session:
        item = session.get(WorklistItem, released["reading_item_id"])
        assert item is not None and item.due_at is not None
        routine_due = item.due_at
    order = scheduled_order(api, scheduler, priority="stat")
    assert (
        scheduler.post(
            f"/api/reconciliation/{study_id}/link",
            json={"order_id": order["id"], "reason": "found"},
        ).status_code
        == 200
    )
    with api.db.read() as session:
        item = session.get(WorklistItem, released["reading_item_id"])
        assert item is not None and item.due_at is not None
        assert (item.priority, item.imaging_request_id) == ("stat", order["id"])
        assert item.due_at < routine_due
    (updated,) = events(api, "worklist_item_updated", released["reading_item_id"])
    assert updated.details["before"]["priority"] == "routine"
    assert updated.details["after"]["priority"] == "stat"
    assert updated.details["after"]["order_id"] == order["id"]


def test_a_released_study_that_is_rejected_cannot_be_reported(
    api: ApiServer, store: FileStore
) -> None:
    scheduler, reader = api.client("scheduler"), api.client("radiologist")
    study_id = arrive(api, store)
    item_id = scheduler.post(
        f"/api/reconciliation/{study_id}/release", json={"reason": "read now"}
    ).json()["reading_item_id"]
    assert reader.post(f"/api/worklist/{item_id}/claim").status_code == 200
    report = reader.post(
        "/api/reports", json={"study_id": study_id, "findings": "F", "impression": "I"}
    )
    assert report.status_code == 201, report.text
    rejected = api.client("admin").post(
        f"/api/studies/{study_id}/reject", json={"reason": "test exam"}
    )
    assert rejected.status_code == 200, rejected.text
    assert not study(api, study_id).released_to_reading
    submitted = reader.post(f"/api/reports/{report.json()['id']}/submit")
    assert error(submitted, 409)["current_state"] == "rejected"


def test_a_study_released_while_arriving_is_read_at_its_release_priority_once_complete(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    study_id = arrive(api, store, complete_it=False)
    body = scheduler.post(
        f"/api/reconciliation/{study_id}/release",
        json={"reason": "emergency", "priority": "urgent"},
    ).json()
    assert body["reading_item_id"] is None
    assert items(api, study_id) == []
    complete(api, study_id)  # what the stability job does later
    # read at the release's priority, and still to be reconciled (it has no order)
    assert items(api, study_id) == [
        ("reconciliation", "pending", "urgent"),
        ("reading", "pending", "urgent"),
    ]


def test_release_refuses_conflicts_matched_and_rejected_studies_and_a_second_release(
    api: ApiServer, store: FileStore
) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler)
    matched = arrive(api, store, study_uid=order["study_instance_uid"])
    conflict = arrive(api, store, accession=order["accession_number"], patient_id="PAT9")
    assert study(api, conflict).metadata_status == "conflict"
    unmatched = arrive(api, store)

    def release(study_id: int, **body: Any) -> httpx.Response:
        return scheduler.post(
            f"/api/reconciliation/{study_id}/release", json={"reason": "read now", **body}
        )

    assert error(release(matched), 409)["current_state"] == "matched"
    assert "link it to the right order" in error(release(conflict), 409)["message"]
    assert error(release(987654), 404)
    assert release(unmatched, reason=" ").status_code == 422
    assert release(unmatched, priority="whenever").status_code == 422
    assert release(unmatched, extra=1).status_code == 422
    assert (
        api.client("radiologist")
        .post(f"/api/reconciliation/{unmatched}/release", json={"reason": "mine"})
        .status_code
        == 403
    )
    assert events(api, "study_released_to_reading") == []
    assert not study(api, conflict).released_to_reading

    assert release(unmatched).status_code == 200
    assert error(release(unmatched), 409)["current_state"] == "released"
    assert len(events(api, "study_released_to_reading")) == 1


def test_a_released_study_whose_patient_turns_out_in_doubt_loses_its_release(
    api: ApiServer, store: FileStore
) -> None:
    scheduler, reader = api.client("scheduler"), api.client("radiologist")
    uid = generate_uid()
    study_id = arrive(api, store, study_uid=uid)
    assert (
        scheduler.post(
            f"/api/reconciliation/{study_id}/release",
            json={"reason": "read now", "priority": "stat"},
        ).status_code
        == 200
    )

    # an image of the same StudyInstanceUID for another patient
    arrive(api, store, study_uid=uid, patient_id="PAT2", patient_name="ROE^RICHARD")

    row = study(api, study_id)
    assert (row.metadata_status, row.released_to_reading, row.release_priority) == (
        "conflict",
        False,
        None,
    )
    assert ("reading", "cancelled", "stat") in items(api, study_id)
    assert study_id not in [e["study"]["id"] for e in _reading_worklist(reader)]
    (withdrawn,) = events(api, "study_release_withdrawn", study_id)
    assert withdrawn.details["before"] == {"released_to_reading": True, "release_priority": "stat"}
    assert withdrawn.details["after"] == {"released_to_reading": False, "release_priority": None}
    refused = scheduler.post(f"/api/reconciliation/{study_id}/release", json={"reason": "again"})
    assert error(refused, 409)["current_state"] == "conflict"
