"""The reading worklist over real HTTP: ordering, filters, claim, release, reassign."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    ChangeLogEntry,
    DicomStudy,
    User,
    WorklistItem,
)
from tests.api.conftest import ApiServer
from tests.builders import Seeded, audit_actions, seed_study, user_id

# --------------------------------------------------------------------------- listing


def test_reading_queue_is_ordered_stat_urgent_routine_then_due_time(api: ApiServer) -> None:
    routine_soon = seed_study(api.db, priority="routine", due_in=timedelta(hours=1))
    stat_late = seed_study(api.db, priority="stat", due_in=timedelta(hours=3))
    urgent = seed_study(api.db, priority="urgent", due_in=timedelta(hours=2))
    stat_early = seed_study(api.db, priority="stat", due_in=timedelta(minutes=30))
    routine_later = seed_study(api.db, priority="routine", due_in=timedelta(hours=5))
    seed_study(api.db, queue="reconciliation")
    seed_study(api.db, status="completed")

    response = api.client("radiologist").get("/api/worklist")

    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [
        stat_early.item_id,
        stat_late.item_id,
        urgent.item_id,
        routine_soon.item_id,
        routine_later.item_id,
    ]
    assert body["total"] == 5 and body["offset"] == 0
    first = body["items"][0]
    assert first["study"]["study_instance_uid"] == stat_early.study_uid
    assert first["study"]["patient_id"] == stat_early.patient_id
    assert first["study"]["modality"] == "CT" and first["study"]["instance_count"] == 3
    assert first["order_id"] == stat_early.order_id
    assert first["overdue"] is False and first["status"] == "pending"


def test_overdue_is_computed_from_due_time_not_only_the_stored_flag(api: ApiServer) -> None:
    late = seed_study(api.db, due_in=timedelta(minutes=-5))
    on_time = seed_study(api.db, due_in=timedelta(hours=2))
    client = api.client("radiologist")

    items = {item["id"]: item for item in client.get("/api/worklist").json()["items"]}
    assert items[late.item_id]["overdue"] is True
    assert items[on_time.item_id]["overdue"] is False
    only_late = client.get("/api/worklist", params={"overdue": "true"}).json()
    assert [item["id"] for item in only_late["items"]] == [late.item_id]
    not_late = client.get("/api/worklist", params={"overdue": "false"}).json()
    assert [item["id"] for item in not_late["items"]] == [on_time.item_id]


def test_worklist_filters_by_queue_status_assignee_modality_and_priority(
    api: ApiServer,
) -> None:
    ct = seed_study(api.db, modality="CT", priority="urgent")
    mr = seed_study(api.db, modality="MR")
    reconciliation = seed_study(api.db, queue="reconciliation")
    done = seed_study(api.db, status="completed")
    client = api.client("radiologist")
    assert client.post(f"/api/worklist/{mr.item_id}/claim").status_code == 200

    def ids(**params: str) -> list[int]:
        response = client.get("/api/worklist", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids(modality="MR") == [mr.item_id]
    assert ids(priority="urgent") == [ct.item_id]
    assert ids(assigned_to="me") == [mr.item_id]
    assert ids(assigned_to=str(user_id(api, client.username))) == [mr.item_id]  # type: ignore[attr-defined]
    assert ids(assigned_to="none") == [ct.item_id]
    assert ids(status="claimed") == [mr.item_id]
    assert ids(status="completed") == [done.item_id]
    assert ids(queue="reconciliation") == [reconciliation.item_id]
    assert client.get("/api/worklist", params={"queue": "nonsense"}).status_code == 422
    assert client.get("/api/worklist", params={"assigned_to": "you"}).status_code == 422


def test_worklist_sorts_by_due_time_or_arrival_across_pending_and_claimed_items(
    api: ApiServer,
) -> None:
    routine_soon = seed_study(api.db, priority="routine", due_in=timedelta(minutes=20))
    stat_later = seed_study(api.db, priority="stat", due_in=timedelta(hours=1))
    urgent_latest = seed_study(api.db, priority="urgent", due_in=timedelta(hours=3))
    undated = seed_study(api.db, priority="stat", due_in=None)
    client = api.client("radiologist")
    # a claimed item is merged into the same order as the pending ones
    assert client.post(f"/api/worklist/{stat_later.item_id}/claim").status_code == 200

    def ids(**params: str) -> list[int]:
        response = client.get("/api/worklist", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    arrival = [routine_soon.item_id, stat_later.item_id, urgent_latest.item_id, undated.item_id]
    assert ids() == [stat_later.item_id, undated.item_id, urgent_latest.item_id, arrival[0]]
    assert ids(sort="due_at") == arrival  # seeded in due order; no due time last
    assert ids(sort="created_at") == arrival
    assert ids(sort="-created_at") == arrival[::-1]
    # the sort holds across pages: the second page of two continues the first
    assert ids(sort="-created_at", limit="2", offset="2") == arrival[1::-1]
    assert client.get("/api/worklist", params={"sort": "patient_name"}).status_code == 422


def test_worklist_items_carry_the_study_date_and_body_part(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    with api.db.unit_of_work() as session:
        session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == seeded.study_id)
            .values(study_date="20240501", body_part_examined="CHEST")
        )
    study = api.client("radiologist").get("/api/worklist").json()["items"][0]["study"]
    assert (study["study_date"], study["body_part"]) == ("20240501", "CHEST")


def test_worklist_pages_with_total(api: ApiServer) -> None:
    seeded = [seed_study(api.db, due_in=timedelta(minutes=10 + n)) for n in range(5)]
    client = api.client("technologist")
    page = client.get("/api/worklist", params={"offset": 2, "limit": 2}).json()
    assert [item["id"] for item in page["items"]] == [s.item_id for s in seeded[2:4]]
    assert (page["total"], page["offset"], page["limit"]) == (5, 2, 2)
    beyond = client.get("/api/worklist", params={"offset": 50}).json()
    assert beyond["items"] == [] and beyond["total"] == 5


def test_polling_is_audited_once_per_interval_and_opening_an_item_each_time(
    api: ApiServer,
) -> None:
    seeded = seed_study(api.db)
    client = api.client("radiologist")
    assert client.get("/api/worklist").status_code == 200
    with api.db.read() as session:
        before = session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
        listing = session.get(AuditEvent, before)
    assert listing is not None and listing.action == "worklist_queried"
    assert listing.details["matches"] == 1
    assert client.get("/api/worklist").status_code == 200  # the next poll: counted only
    with api.db.read() as session:
        after = session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
    assert after == before

    detail = client.get(f"/api/worklist/{seeded.item_id}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["patient_birth_date"] == "19800101"
    (event,) = audit_actions(api, "WorklistItem", seeded.item_id)
    assert (event.action, event.event_code) == ("worklist_item_read", "110110")
    assert event.patient_id == seeded.patient_id and event.actor == client.username  # type: ignore[attr-defined]
    assert client.get("/api/worklist/999999").status_code == 404


def test_roles_without_worklist_permissions_are_refused(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    referring = api.client("referring_physician")
    assert referring.get("/api/worklist").status_code == 403
    technologist = api.client("technologist")
    assert technologist.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 403
    assert api.anonymous().get("/api/worklist").status_code == 401


# --------------------------------------------------------------------------- claiming


def test_claim_takes_a_pending_item_moves_the_study_to_reading_and_is_audited(
    api: ApiServer,
) -> None:
    seeded = seed_study(api.db)
    client = api.client("radiologist")
    me = user_id(api, client.username)  # type: ignore[attr-defined]
    with api.db.read() as session:
        feed_before = session.scalar(select(ChangeLogEntry.seq).order_by(ChangeLogEntry.seq.desc()))

    response = client.post(f"/api/worklist/{seeded.item_id}/claim", json={"version": 1})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["assigned_to_id"], body["version"]) == ("claimed", me, 2)
    assert body["assigned_to"] == client.username  # type: ignore[attr-defined]
    assert body["claimed_at"] is not None and body["study"]["status"] == "reading"
    with api.db.read() as session:
        study = session.get(DicomStudy, seeded.study_id)
        feed = session.scalars(
            select(ChangeLogEntry).where(ChangeLogEntry.seq > (feed_before or 0))
        ).all()
    assert study is not None and study.status == "reading"
    claim_entries = [
        e for e in feed if e.entity == "worklist_item" and e.entity_id == seeded.item_id
    ]
    assert claim_entries and claim_entries[-1].payload["status"] == "claimed"
    assert claim_entries[-1].payload["assigned_to_id"] == me
    assert any(e.entity == "study" and e.payload["status"] == "reading" for e in feed)
    (claimed,) = audit_actions(api, "WorklistItem", seeded.item_id)
    assert claimed.action == "worklist_item_claimed"
    assert claimed.details["before"]["status"] == "pending"
    assert claimed.details["after"] == {"status": "claimed", "assigned_to_id": me}
    study_events = audit_actions(api, "DicomStudy", seeded.study_id)
    assert [e.details["after"]["status"] for e in study_events] == ["reading"]


def test_claiming_a_claimed_item_is_409_naming_the_holder(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    first, second = api.client("radiologist"), api.client("radiologist")
    assert first.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200

    response = second.post(f"/api/worklist/{seeded.item_id}/claim")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["current_state"] == "claimed"
    assert error["existing"]["assigned_to"] == first.username  # type: ignore[attr-defined]


def test_claim_with_a_stale_version_is_409_even_when_pending(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    client = api.client("radiologist")
    response = client.post(f"/api/worklist/{seeded.item_id}/claim", json={"version": 7})
    assert response.status_code == 409
    assert response.json()["error"]["current_state"] == "pending"
    assert response.json()["error"]["existing"]["version"] == 1


def race_claims(clients: list[httpx.Client], item_id: int) -> list[httpx.Response]:
    """Every client claims the item at the same moment (released by a barrier)."""
    barrier = threading.Barrier(len(clients))
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def claim(client: httpx.Client) -> None:
        barrier.wait()
        response = client.post(f"/api/worklist/{item_id}/claim")
        with lock:
            results.append(response)

    threads = [threading.Thread(target=claim, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_claims_have_exactly_one_winner_every_round(api: ApiServer) -> None:
    claimants = [api.client("radiologist") for _ in range(4)]
    for _ in range(15):
        seeded = seed_study(api.db)
        results = race_claims(claimants, seeded.item_id)
        codes = sorted(response.status_code for response in results)
        assert codes == [200] + [409] * (len(claimants) - 1), [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200).json()["assigned_to_id"]
        with api.db.read() as session:
            item = session.get(WorklistItem, seeded.item_id)
            claims = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "worklist_item_claimed",
                    AuditEvent.target_id == str(seeded.item_id),
                )
            ).all()
        assert item is not None and item.assigned_to_id == winner and item.version == 2
        assert len(claims) == 1


def test_reconciliation_items_are_not_claimed_by_radiologists(api: ApiServer) -> None:
    seeded = seed_study(api.db, queue="reconciliation")
    response = api.client("radiologist").post(f"/api/worklist/{seeded.item_id}/claim")
    assert response.status_code == 403


# --------------------------------------------------------------------------- release, reassign


def test_release_by_the_holder_returns_the_item_to_pending(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    holder, other = api.client("radiologist"), api.client("radiologist")
    assert holder.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200

    assert other.post(f"/api/worklist/{seeded.item_id}/release").status_code == 403
    response = holder.post(f"/api/worklist/{seeded.item_id}/release")

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["assigned_to_id"]) == ("pending", None)
    assert response.json()["study"]["status"] == "acquired"  # nobody reads it now
    again = holder.post(f"/api/worklist/{seeded.item_id}/release")
    assert again.status_code == 409 and again.json()["error"]["current_state"] == "pending"
    released = audit_actions(api, "WorklistItem", seeded.item_id)[-1]
    assert released.action == "worklist_item_released"
    assert released.details["before"]["status"] == "claimed"
    assert released.details["after"] == {"status": "pending", "assigned_to_id": None}
    assert other.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200


def test_admin_may_release_someone_elses_claim(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    holder, admin = api.client("radiologist"), api.client("admin")
    assert holder.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200
    response = admin.post(f"/api/worklist/{seeded.item_id}/release")
    assert response.status_code == 200 and response.json()["status"] == "pending"


def test_reassign_by_admin_or_lead_to_an_active_radiologist_only(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    holder = api.client("radiologist")
    target_name = api.user("radiologist")
    target = user_id(api, target_name)
    assert holder.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200
    plain = api.client("radiologist")
    lead = api.client("radiologist")
    with api.db.unit_of_work() as session:
        session.execute(
            update(User).where(User.username == lead.username).values(is_lead=True)  # type: ignore[attr-defined]
        )
    admin = api.client("admin")
    url = f"/api/worklist/{seeded.item_id}/reassign"

    assert plain.post(url, json={"user_id": target}).status_code == 403
    assert api.client("scheduler").post(url, json={"user_id": target}).status_code == 403
    technologist = user_id(api, api.user("technologist"))
    refused = admin.post(url, json={"user_id": technologist})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "user_id"
    assert admin.post(url, json={"user_id": 99_999_999}).status_code == 422

    response = lead.post(url, json={"user_id": target})

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["assigned_to_id"]) == ("claimed", target)
    reassigned = audit_actions(api, "WorklistItem", seeded.item_id)[-1]
    assert reassigned.action == "worklist_item_reassigned"
    assert reassigned.details["before"]["assigned_to_id"] == user_id(api, holder.username)  # type: ignore[attr-defined]
    assert reassigned.details["after"]["assigned_to_id"] == target
    assert admin.post(url, json={"user_id": user_id(api, holder.username)}).status_code == 200  # type: ignore[attr-defined]


def test_inactive_radiologist_cannot_receive_work(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    name = api.user("radiologist")
    with api.db.unit_of_work() as session:
        session.execute(update(User).where(User.username == name).values(is_active=False))
    response = api.client("admin").post(
        f"/api/worklist/{seeded.item_id}/reassign", json={"user_id": user_id(api, name)}
    )
    assert response.status_code == 422


def test_completed_items_cannot_be_claimed_or_reassigned(api: ApiServer) -> None:
    seeded = seed_study(api.db, status="completed")
    claim = api.client("radiologist").post(f"/api/worklist/{seeded.item_id}/claim")
    assert claim.status_code == 409 and claim.json()["error"]["current_state"] == "completed"
    target = user_id(api, api.user("radiologist"))
    reassign = api.client("admin").post(
        f"/api/worklist/{seeded.item_id}/reassign", json={"user_id": target}
    )
    assert reassign.status_code == 409
    assert reassign.json()["error"]["current_state"] == "completed"


def _draft(client: httpx.Client, seeded: Seeded) -> int:
    assert client.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200
    response = client.post(
        "/api/reports", json={"study_id": seeded.study_id, "findings": "F", "impression": "I"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_reassigning_a_released_reading_item_gives_its_draft_to_the_new_holder(
    api: ApiServer,
) -> None:
    seeded = seed_study(api.db)
    writer, admin = api.client("radiologist"), api.client("admin")
    report_id = _draft(writer, seeded)
    assert writer.post(f"/api/worklist/{seeded.item_id}/release").status_code == 200
    target_name = api.user("radiologist")
    target = user_id(api, target_name)

    response = admin.post(f"/api/worklist/{seeded.item_id}/reassign", json={"user_id": target})

    assert response.status_code == 200, response.text
    report = writer.get(f"/api/reports/{report_id}").json()
    assert report["author_id"] == target
    assert writer.patch(f"/api/reports/{report_id}", json={"findings": "x"}).status_code == 403
    moved = [e for e in audit_actions(api, "Report", report_id) if e.action == "report_reassigned"]
    assert [e.details for e in moved] == [
        {
            "before": {"radiologist_id": user_id(api, writer.username)},  # type: ignore[attr-defined]
            "after": {"radiologist_id": target},
        }
    ]


def test_a_review_item_is_not_reassigned_to_the_author_of_the_report(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    author, admin = api.client("radiologist"), api.client("admin")
    report_id = _draft(author, seeded)
    assert author.post(f"/api/reports/{report_id}/submit").status_code == 200
    with api.db.read() as session:
        review_id = session.scalar(
            select(WorklistItem.id).where(
                WorklistItem.dicom_study_id == seeded.study_id,
                WorklistItem.queue_type == "review",
            )
        )
    url = f"/api/worklist/{review_id}/reassign"

    refused = admin.post(url, json={"user_id": user_id(api, author.username)})  # type: ignore[attr-defined]

    assert refused.status_code == 422 and refused.json()["error"]["field"] == "user_id"
    other = user_id(api, api.user("radiologist"))
    assert admin.post(url, json={"user_id": other}).json()["assigned_to_id"] == other


def test_items_of_a_study_not_released_to_reading_cannot_be_claimed(api: ApiServer) -> None:
    reader = api.client("radiologist")
    for metadata_status in ("unmatched", "conflict", "rejected"):
        seeded = seed_study(api.db)
        with api.db.unit_of_work() as session:
            session.execute(
                update(DicomStudy)
                .where(DicomStudy.id == seeded.study_id)
                .values(metadata_status=metadata_status)
            )

        refused = reader.post(f"/api/worklist/{seeded.item_id}/claim")

        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["current_state"] == metadata_status
        with api.db.unit_of_work() as session:
            study = session.get(DicomStudy, seeded.study_id)
            assert study is not None and study.status == "acquired"
            study.released_to_reading = True
        released = reader.post(f"/api/worklist/{seeded.item_id}/claim")
        # a rejected study is withdrawn: no release makes it readable
        assert released.status_code == (409 if metadata_status == "rejected" else 200)


def test_a_claim_waits_for_an_ingest_making_the_study_a_conflict_and_is_refused(
    api: ApiServer,
) -> None:
    """Claim locks the study row before its check, as ingest does before the
    study's items: it never claims a study a concurrent ingest is making a
    conflict (and the two never deadlock on the opposite order)."""
    reader = api.client("radiologist")
    seeded = seed_study(api.db)
    answer: list[httpx.Response] = []
    holder = Database(api.db.url)
    try:
        with holder.unit_of_work() as session:
            # what ingest holds while it quarantines an instance of another patient
            session.execute(
                select(DicomStudy.id)
                .where(DicomStudy.id == seeded.study_id)
                .with_for_update(key_share=True)
            )
            session.execute(
                update(DicomStudy)
                .where(DicomStudy.id == seeded.study_id)
                .values(metadata_status="conflict")
            )
            claim = threading.Thread(
                target=lambda: answer.append(reader.post(f"/api/worklist/{seeded.item_id}/claim"))
            )
            claim.start()
            claim.join(timeout=1.0)
            assert claim.is_alive(), "the claim did not wait for the study row"
        claim.join(timeout=30)
    finally:
        holder.dispose()
    (response,) = answer
    assert response.status_code == 409, response.text
    assert response.json()["error"]["current_state"] == "conflict"
