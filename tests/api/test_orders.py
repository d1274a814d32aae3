"""Orders over real HTTP: duplicates, visibility, transitions, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from dicom_node.db.models import AuditEvent, ImagingCenter, ImagingRequest, Modality, User
from dicom_node.settings import Settings
from tests.api.conftest import ApiServer
from tests.conftest import node_settings

SLOT = "2026-11-24T14:30:00+01:00"


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings overrides by indirect parametrization (e.g. the duplicate window)."""
    return node_settings(db_url, tmp_path / "data", **getattr(request, "param", {}))


def events(api: ApiServer, action: str, target_id: object | None = None) -> list[AuditEvent]:
    with api.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target_id is not None:
            query = query.where(AuditEvent.target_id == str(target_id))
        return list(session.scalars(query.order_by(AuditEvent.id)))


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def order_body(**fields: Any) -> dict[str, Any]:
    return {
        "patient_id": "PAT1",
        "issuer_of_patient_id": "HOSP",
        "patient_name": "Müller^Hans",
        "patient_birth_date": "19700101",
        "patient_sex": "M",
        "requested_modality": "CT",
        "study_description": "CT Head without contrast",
        "priority": "routine",
        "clinical_indication": "headache",
        "referring_physician_name": "WHO^REFERS",
    } | fields


def create(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/orders", json=order_body(**fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def user_id(api: ApiServer, client: httpx.Client) -> int:
    with api.db.read() as session:
        found = session.scalar(select(User.id).where(User.username == client.username))  # type: ignore[attr-defined]
    assert found is not None
    return found


def modality(
    api: ApiServer, *, type: str = "CT", ae: str = "CT_MAIN_1", status: str = "active"
) -> int:
    with api.db.unit_of_work() as session:
        center = session.scalar(select(ImagingCenter).where(ImagingCenter.code == "MAIN"))
        if center is None:
            center = ImagingCenter(name="Main", code="MAIN")
            session.add(center)
            session.flush()
        row = Modality(
            imaging_center_id=center.id, name=ae, type=type, dicom_ae_title=ae, status=status
        )
        session.add(row)
        session.flush()
        return row.id


# --------------------------------------------------------------------------- create


def test_created_order_is_requested_by_the_caller_with_a_folded_name_and_audited(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    order = create(scheduler)
    assert order["status"] == "requested"
    assert order["requested_by_id"] == user_id(api, scheduler)
    assert order["accession_number"] is None and order["study_instance_uid"] is None
    with api.db.read() as session:
        folded = session.scalar(
            select(ImagingRequest.patient_name_folded).where(ImagingRequest.id == order["id"])
        )
    assert folded == "müller^hans"
    (event,) = events(api, "order_created", order["id"])
    assert event.event_code == "110109" and event.patient_id == "PAT1"
    assert event.details["after"]["study_description"] == "CT Head without contrast"
    assert event.actor_user_id == order["requested_by_id"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"patient_name": ""}, "patient_name"),
        ({"patient_birth_date": "19801340"}, "patient_birth_date"),
        ({"patient_birth_date": "1980-01-01"}, "patient_birth_date"),
        ({"requested_modality": "XYZ"}, "requested_modality"),
        ({"patient_sex": "X"}, "patient_sex"),
        ({"priority": "whenever"}, "priority"),
        ({"patient_name": "A=B=C=D"}, "patient_name"),
        ({"study_description": "   "}, "study_description"),
    ],
)
def test_invalid_order_input_is_422_naming_the_field(
    api: ApiServer, fields: dict[str, Any], field: str
) -> None:
    response = api.client("scheduler").post("/api/orders", json=order_body(**fields))
    assert error(response, 422)["field"] == field


def test_an_unknown_imaging_center_is_404(api: ApiServer) -> None:
    response = api.client("scheduler").post("/api/orders", json=order_body(imaging_center_id=4242))
    assert "imaging center" in error(response, 404)["message"]


def test_a_missing_required_field_is_422_naming_it(api: ApiServer) -> None:
    body = order_body()
    del body["study_description"]
    assert error(api.client("scheduler").post("/api/orders", json=body), 422)["field"] == (
        "study_description"
    )


def test_roles_without_orders_create_get_403(api: ApiServer) -> None:
    for role in ("technologist", "radiologist", "auditor"):
        assert api.client(role).post("/api/orders", json=order_body()).status_code == 403


# --------------------------------------------------------------------------- duplicates


def test_same_patient_modality_and_procedure_within_the_window_is_409_with_the_existing_order(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    first = create(scheduler)
    again = scheduler.post(
        "/api/orders", json=order_body(study_description="  ct HEAD   without CONTRAST")
    )
    body = error(again, 409)
    assert body["existing"]["id"] == first["id"]
    assert body["existing"]["status"] == "requested"
    # other modality, other procedure, other patient, other issuer: not duplicates
    create(scheduler, requested_modality="MR")
    create(scheduler, study_description="CT Chest")
    create(scheduler, patient_id="PAT2")
    create(scheduler, issuer_of_patient_id="OTHER")


def test_a_duplicate_of_another_physicians_order_is_refused_without_showing_it(
    api: ApiServer,
) -> None:
    """The 409 must not show an order its caller could not read (GET is 404)."""
    mine = api.client("referring_physician")
    other = api.client("referring_physician")
    first = create(mine, clinical_indication="confidential indication")
    assert other.get(f"/api/orders/{first['id']}").status_code == 404
    body = error(other.post("/api/orders", json=order_body()), 409)
    assert "existing" not in body
    assert f"order {first['id']}" not in body["message"]
    assert "someone else" in body["message"]
    # the physician who placed it still gets the order itself
    assert error(mine.post("/api/orders", json=order_body()), 409)["existing"]["id"] == first["id"]


def test_force_needs_a_reason_and_the_override_is_audited_with_the_existing_order(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    first = create(scheduler)
    no_reason = scheduler.post("/api/orders", json=order_body(force=True))
    assert error(no_reason, 422)["field"] == "force_reason"
    blank = scheduler.post("/api/orders", json=order_body(force=True, force_reason="  "))
    assert error(blank, 422)["field"] == "force_reason"
    forced = create(scheduler, force=True, force_reason="repeat after motion artefact")
    assert forced["id"] != first["id"]
    (override,) = events(api, "order_duplicate_forced", forced["id"])
    assert override.reason == "repeat after motion artefact"
    assert override.details["existing_order_id"] == first["id"]
    (created,) = events(api, "order_created", forced["id"])
    assert created.details["duplicate_override"] == {
        "existing_order_id": first["id"],
        "reason": "repeat after motion artefact",
    }


def test_closed_or_old_orders_are_not_duplicates(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    first = create(scheduler)
    assert scheduler.post(f"/api/orders/{first['id']}/cancel", json={"reason": "x"}).is_success
    second = create(scheduler)  # the first is cancelled
    with api.db.unit_of_work() as session:
        session.execute(
            update(ImagingRequest)
            .where(ImagingRequest.id == second["id"])
            .values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
    create(scheduler)  # the open one is outside the 24 h window


@pytest.mark.parametrize("api_settings", [{"duplicate_order_window_hours": 0}], indirect=True)
def test_a_zero_window_disables_duplicate_prevention(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    create(scheduler)
    create(scheduler)


# --------------------------------------------------------------------------- visibility


def test_referring_physicians_see_only_their_own_orders(api: ApiServer) -> None:
    mine = api.client("referring_physician")
    theirs = api.client("referring_physician")
    own = create(mine, patient_id="P-MINE")
    other = create(theirs, patient_id="P-THEIRS")

    assert mine.get(f"/api/orders/{own['id']}").status_code == 200
    assert error(mine.get(f"/api/orders/{other['id']}"), 404)["code"] == "not_found"
    listed = mine.get("/api/orders").json()
    assert [o["id"] for o in listed["items"]] == [own["id"]] and listed["total"] == 1
    by_patient = mine.get("/api/orders", params={"patient_id": "P-THEIRS"}).json()
    assert by_patient["total"] == 0
    assert error(mine.post(f"/api/orders/{other['id']}/cancel", json={"reason": "x"}), 404)
    assert error(mine.patch(f"/api/orders/{other['id']}", json={"priority": "stat"}), 404)

    staff = api.client("scheduler").get("/api/orders").json()
    assert {o["id"] for o in staff["items"]} == {own["id"], other["id"]}


def test_reads_are_audited_a_patient_query_with_its_keys_and_a_record_read(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    order = create(scheduler)
    scheduler.get("/api/orders")  # no patient: a Query naming none
    (listing,) = events(api, "orders_queried")
    assert listing.patient_id is None and listing.details["matches"] == 1
    scheduler.get("/api/orders", params={"patient_id": "PAT1", "status": "requested"})
    query = events(api, "orders_queried")[-1]
    assert query.event_code == "110112" and query.patient_id == "PAT1"
    assert query.details["query"]["patient_id"] == "PAT1"
    assert query.details["query"]["status"] == ["requested"]
    assert "Müller" not in str(query.details)  # the query, not the results

    assert scheduler.get(f"/api/orders/{order['id']}").status_code == 200
    (read,) = events(api, "order_read", order["id"])
    assert read.event_code == "110110" and read.actor == scheduler.username  # type: ignore[attr-defined]


def test_listing_filters_and_sorts_by_an_allow_list(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    routine = create(scheduler, patient_id="A1")
    stat = create(scheduler, patient_id="A2", priority="stat", requested_modality="MR")
    urgent = create(scheduler, patient_id="A3", priority="urgent")

    def ids(**params: Any) -> list[int]:
        response = scheduler.get("/api/orders", params=params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    assert ids(sort="priority") == [stat["id"], urgent["id"], routine["id"]]
    assert ids(sort="-priority") == [routine["id"], urgent["id"], stat["id"]]
    assert ids(sort="patient_id") == [routine["id"], stat["id"], urgent["id"]]
    assert ids() == [urgent["id"], stat["id"], routine["id"]]  # newest first
    assert ids(modality="MR") == [stat["id"]]
    assert ids(priority=["stat", "urgent"], sort="id") == [stat["id"], urgent["id"]]
    assert ids(patient_name="MÜLLER") and ids(patient_name="nobody") == []
    assert ids(status="scheduled") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(created_to=future, sort="id") == [routine["id"], stat["id"], urgent["id"]]
    assert ids(created_from=future) == []
    page = scheduler.get("/api/orders", params={"limit": 1, "offset": 1, "sort": "id"}).json()
    assert (page["total"], [o["id"] for o in page["items"]]) == (3, [stat["id"]])

    # query parameters are named with their location (api/errors.py)
    bad_sort = scheduler.get("/api/orders", params={"sort": "cancel_reason"})
    assert error(bad_sort, 422)["field"] == "query.sort"
    assert error(scheduler.get("/api/orders", params={"status": "lost"}), 422)["field"] == (
        "query.status.0"
    )
    naive = scheduler.get("/api/orders", params={"created_from": "2026-01-01T00:00:00"})
    assert error(naive, 422)["field"] == "query.created_from"


# --------------------------------------------------------------------------- schedule


def test_schedule_assigns_identifiers_once_and_reschedule_keeps_them(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    ct = modality(api)
    order = create(scheduler)
    first = scheduler.post(
        f"/api/orders/{order['id']}/schedule", json={"modality_id": ct, "scheduled_at": SLOT}
    )
    assert first.status_code == 200, first.text
    scheduled = first.json()
    assert scheduled["status"] == "scheduled" and scheduled["scheduled_modality_id"] == ct
    assert scheduled["accession_number"] and scheduled["study_instance_uid"].startswith("2.25.")
    assert datetime.fromisoformat(scheduled["scheduled_at"]) == datetime.fromisoformat(SLOT)

    later = "2026-11-25T08:00:00Z"
    moved = scheduler.post(
        f"/api/orders/{order['id']}/schedule", json={"modality_id": ct, "scheduled_at": later}
    ).json()
    assert moved["accession_number"] == scheduled["accession_number"]
    assert moved["study_instance_uid"] == scheduled["study_instance_uid"]
    assert datetime.fromisoformat(moved["scheduled_at"]) == datetime.fromisoformat(later)
    (event,) = events(api, "order_rescheduled", order["id"])
    assert datetime.fromisoformat(event.details["before"]["scheduled_at"]) == (
        datetime.fromisoformat(SLOT)
    )
    assert event.actor == scheduler.username  # type: ignore[attr-defined]
    (scheduled_event,) = events(api, "order_scheduled", order["id"])
    assert scheduled_event.details == {
        "before": {"status": "requested"},
        "after": {"status": "scheduled"},
    }


def test_schedule_refuses_naive_times_wrong_modalities_and_other_roles(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    ct = modality(api)
    mr = modality(api, type="MR", ae="MR_1")
    retired = modality(api, ae="CT_OLD", status="retired")
    order = create(scheduler)
    url = f"/api/orders/{order['id']}/schedule"
    naive = scheduler.post(url, json={"modality_id": ct, "scheduled_at": "2026-11-24T14:30:00"})
    assert error(naive, 422)["field"] == "scheduled_at"
    assert error(scheduler.post(url, json={"modality_id": ct}), 422)["field"] == "scheduled_at"
    wrong = scheduler.post(url, json={"modality_id": mr, "scheduled_at": SLOT})
    assert "is MR" in error(wrong, 409)["message"]
    missing = scheduler.post(url, json={"modality_id": 987654, "scheduled_at": SLOT})
    assert "modality" in error(missing, 404)["message"]
    assert error(scheduler.post(url, json={"modality_id": retired, "scheduled_at": SLOT}), 409)[
        "current_state"
    ] == ("retired")
    for role in ("technologist", "referring_physician", "radiologist"):
        response = api.client(role).post(url, json={"modality_id": ct, "scheduled_at": SLOT})
        assert response.status_code == 403
    assert scheduler.post(
        "/api/orders/999999/schedule", json={"modality_id": ct, "scheduled_at": SLOT}
    ).status_code == (404)


# --------------------------------------------------------------------------- perform


def test_technologist_starts_and_completes_and_invalid_transitions_name_the_state(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    tech = api.client("technologist")
    ct = modality(api)
    order = create(scheduler)
    url = f"/api/orders/{order['id']}"

    assert error(tech.post(f"{url}/start"), 409)["current_state"] == "requested"
    scheduler.post(f"{url}/schedule", json={"modality_id": ct, "scheduled_at": SLOT})
    assert error(tech.post(f"{url}/complete"), 409)["current_state"] == "scheduled"
    assert scheduler.post(f"{url}/start").status_code == 403

    started = tech.post(f"{url}/start")
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    assert started.json()["exam_started_at"] is not None
    assert error(tech.post(f"{url}/start"), 409)["current_state"] == "in_progress"
    body = error(
        scheduler.post(f"{url}/schedule", json={"modality_id": ct, "scheduled_at": SLOT}), 409
    )
    assert body["current_state"] == "in_progress"
    assert error(scheduler.post(f"{url}/cancel", json={"reason": "late"}), 409)[
        "current_state"
    ] == ("in_progress")

    done = tech.post(f"{url}/complete").json()
    assert done["status"] == "performed" and done["exam_completed_at"] is not None
    assert error(tech.post(f"{url}/complete"), 409)["current_state"] == "performed"
    assert [e.action for e in events(api, "order_performed", order["id"])] == ["order_performed"]
    (event,) = events(api, "order_in_progress", order["id"])
    assert event.details == {"before": {"status": "scheduled"}, "after": {"status": "in_progress"}}
    assert event.actor == tech.username  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- cancel


def test_cancel_needs_a_reason_stores_it_and_a_cancelled_order_stays_cancelled(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    ct = modality(api)
    order = create(scheduler)
    url = f"/api/orders/{order['id']}"
    scheduler.post(f"{url}/schedule", json={"modality_id": ct, "scheduled_at": SLOT})
    assert error(scheduler.post(f"{url}/cancel", json={}), 422)["field"] == "reason"
    assert error(scheduler.post(f"{url}/cancel", json={"reason": ""}), 422)["field"] == "reason"
    assert error(scheduler.post(f"{url}/cancel", json={"reason": "   "}), 422)["field"] == (
        "reason"
    )
    cancelled = scheduler.post(f"{url}/cancel", json={"reason": "patient declined"}).json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "patient declined")
    (event,) = events(api, "order_cancelled", order["id"])
    assert event.reason == "patient declined"
    assert event.details == {"before": {"status": "scheduled"}, "after": {"status": "cancelled"}}
    assert error(scheduler.post(f"{url}/cancel", json={"reason": "again"}), 409)[
        "current_state"
    ] == ("cancelled")
    assert error(
        scheduler.post(f"{url}/schedule", json={"modality_id": ct, "scheduled_at": SLOT}), 409
    )["current_state"] == ("cancelled")


def test_a_referring_physician_cancels_their_own_order_only_while_requested(
    api: ApiServer,
) -> None:
    physician = api.client("referring_physician")
    scheduler = api.client("scheduler")
    ct = modality(api)
    requested = create(physician, patient_id="R1")
    booked = create(physician, patient_id="R2")
    scheduler.post(
        f"/api/orders/{booked['id']}/schedule", json={"modality_id": ct, "scheduled_at": SLOT}
    )
    ok = physician.post(f"/api/orders/{requested['id']}/cancel", json={"reason": "not needed"})
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"
    refused = physician.post(f"/api/orders/{booked['id']}/cancel", json={"reason": "not needed"})
    assert error(refused, 403)["code"] == "forbidden"
    again = physician.post(f"/api/orders/{requested['id']}/cancel", json={"reason": "x"})
    assert error(again, 409)["current_state"] == "cancelled"
    assert api.client("technologist").post(
        f"/api/orders/{booked['id']}/cancel", json={"reason": "x"}
    ).status_code == (403)


# --------------------------------------------------------------------------- edit


def test_edits_are_audited_before_and_after_and_refused_once_the_exam_started(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    tech = api.client("technologist")
    ct = modality(api)
    order = create(scheduler)
    url = f"/api/orders/{order['id']}"
    edited = scheduler.patch(url, json={"priority": "stat", "clinical_indication": "trauma"})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["priority"], edited.json()["clinical_indication"]) == ("stat", "trauma")
    (event,) = events(api, "order_updated", order["id"])
    assert event.details == {
        "before": {"clinical_indication": "headache", "priority": "routine"},
        "after": {"clinical_indication": "trauma", "priority": "stat"},
    }
    assert error(scheduler.patch(url, json={"status": "performed"}), 422)["field"] == "status"
    assert error(scheduler.patch(url, json={"requested_modality": "BAD"}), 422)["field"] == (
        "requested_modality"
    )

    scheduler.post(f"{url}/schedule", json={"modality_id": ct, "scheduled_at": SLOT})
    assert scheduler.patch(url, json={"study_description": "CT Head w/o"}).status_code == 200
    assert error(scheduler.patch(url, json={"requested_modality": "MR"}), 409)
    tech.post(f"{url}/start")
    assert error(scheduler.patch(url, json={"priority": "routine"}), 409)["current_state"] == (
        "in_progress"
    )


def test_a_referring_physician_edits_their_own_order_only_while_requested(
    api: ApiServer,
) -> None:
    physician = api.client("referring_physician")
    order = create(physician)
    url = f"/api/orders/{order['id']}"
    assert physician.patch(url, json={"clinical_indication": "worse"}).status_code == 200
    api.client("scheduler").post(
        f"{url}/schedule", json={"modality_id": modality(api), "scheduled_at": SLOT}
    )
    assert error(physician.patch(url, json={"clinical_indication": "x"}), 403)


def test_a_name_that_grows_when_casefolded_is_stored_whole_and_its_folded_copy_cut(
    api: ApiServer,
) -> None:
    # 'ß' casefolds to 'ss': three full 64-character groups fold to 386 characters,
    # more than the PN column holds (PostgreSQL refused that insert with a 500)
    scheduler = api.client("scheduler")
    name = "^".join(["ß" * 64] * 3)
    order = create(scheduler, patient_name=name)
    assert order["patient_name"] == name
    with api.db.read() as session:
        folded = session.scalar(
            select(ImagingRequest.patient_name_folded).where(ImagingRequest.id == order["id"])
        )
    assert folded is not None and len(folded) == 324 and folded.startswith("ss" * 64 + "^")
    found = scheduler.get("/api/orders", params={"patient_name": "SS" * 10})
    assert [o["id"] for o in found.json()["items"]] == [order["id"]]

    # the edit path folds the same way
    edited = scheduler.patch(f"/api/orders/{order['id']}", json={"patient_name": "X" + name[1:]})
    assert edited.status_code == 200, edited.text
    with api.db.read() as session:
        folded = session.scalar(
            select(ImagingRequest.patient_name_folded).where(ImagingRequest.id == order["id"])
        )
    assert folded is not None and len(folded) == 324 and folded.startswith("x" + "ss" * 63)


def test_the_worklist_physician_names_are_set_and_edited_over_http(api: ApiServer) -> None:
    """RequestingPhysician and ScheduledPerformingPhysicianName, which the
    Modality Worklist answers from the order, are set at creation and edited
    like the other names (before/after audited), and checked as PN."""
    scheduler = api.client("scheduler")
    order = create(
        scheduler, requesting_physician="Asks^Anna", scheduled_performing_physician_name="Does^Dan"
    )
    assert order["requesting_physician"] == "Asks^Anna"
    assert order["scheduled_performing_physician_name"] == "Does^Dan"
    url = f"/api/orders/{order['id']}"
    edited = scheduler.patch(url, json={"scheduled_performing_physician_name": "Other^Olga"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["scheduled_performing_physician_name"] == "Other^Olga"
    (event,) = events(api, "order_updated", order["id"])
    assert event.details == {
        "before": {"scheduled_performing_physician_name": "Does^Dan"},
        "after": {"scheduled_performing_physician_name": "Other^Olga"},
    }
    with api.db.read() as session:
        folded = session.scalar(
            select(ImagingRequest.scheduled_performing_physician_name_folded).where(
                ImagingRequest.id == order["id"]
            )
        )
    assert folded == "other^olga"
    bad = scheduler.post("/api/orders", json=order_body(requesting_physician="A=B=C=D"))
    assert error(bad, 422)["field"] == "requesting_physician"
