"""Reports over real HTTP: the state machine, who may do what, versions, critical results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, CriticalResultCommunication, DicomStudy, WorklistItem
from dicom_node.services.reporting.critical_results import overdue_critical_communications
from dicom_node.settings import Settings
from tests.api.conftest import ApiServer
from tests.builders import Seeded, audit_actions, seed_study, user_id
from tests.conftest import node_settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Parametrize a test with this name to change the API's settings."""
    return {}


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    return node_settings(db_url, tmp_path / "data", **settings_overrides)


def claimed_study(api: ApiServer, client: httpx.Client, **seed: Any) -> Seeded:
    seeded = seed_study(api.db, **seed)
    response = client.post(f"/api/worklist/{seeded.item_id}/claim")
    assert response.status_code == 200, response.text
    return seeded


def draft(api: ApiServer, client: httpx.Client, **fields: Any) -> tuple[Seeded, dict[str, Any]]:
    seeded = claimed_study(api, client)
    body = {"study_id": seeded.study_id, "findings": "Clear lungs.", "impression": "Normal."}
    response = client.post("/api/reports", json={**body, **fields})
    assert response.status_code == 201, response.text
    return seeded, response.json()


def communication(**fields: Any) -> dict[str, Any]:
    return {
        "finding": "Tension pneumothorax",
        "communicated_to": "Dr Ward, ED attending",
        "method": "phone",
        "communicated_at": datetime.now(UTC).isoformat(),
        **fields,
    }


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


# --------------------------------------------------------------------------- drafting


def test_only_the_holder_of_the_claimed_reading_item_may_draft(api: ApiServer) -> None:
    holder, other = api.client("radiologist"), api.client("radiologist")
    seeded = claimed_study(api, holder)
    unclaimed = seed_study(api.db)
    body = {"study_id": seeded.study_id, "findings": "F", "impression": "I"}

    assert other.post("/api/reports", json=body).status_code == 403
    assert (
        holder.post("/api/reports", json={**body, "study_id": unclaimed.study_id}).status_code
        == 403
    )
    assert api.client("admin").post("/api/reports", json=body).status_code == 403
    assert holder.post("/api/reports", json={**body, "study_id": 987654}).status_code == 404

    report = ok(holder.post("/api/reports", json=body), 201)
    assert (report["status"], report["version"], report["author_id"]) == (
        "draft",
        1,
        user_id(api, holder.username),  # type: ignore[attr-defined]
    )
    created = audit_actions(api, "Report", report["id"])
    assert [e.action for e in created] == ["report_created"]
    assert created[0].details["after"]["status"] == "draft"
    assert created[0].patient_id == seeded.patient_id


def test_a_study_has_one_report_and_a_second_draft_is_409_with_the_existing(
    api: ApiServer,
) -> None:
    client = api.client("radiologist")
    seeded, report = draft(api, client)
    response = client.post("/api/reports", json={"study_id": seeded.study_id})
    assert response.status_code == 409
    assert response.json()["error"]["existing"]["id"] == report["id"]
    assert response.json()["error"]["current_state"] == "draft"


def test_only_the_author_edits_a_draft_and_edits_are_audited(api: ApiServer) -> None:
    author, other = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"

    assert other.patch(url, json={"findings": "mine now"}).status_code == 403
    edited = ok(author.patch(url, json={"findings": "Small nodule, right upper lobe."}))

    assert edited["findings"] == "Small nodule, right upper lobe."
    assert edited["impression"] == "Normal."
    event = audit_actions(api, "Report", report["id"])[-1]
    assert event.action == "report_edited"
    assert event.details == {
        "before": {"findings": "Clear lungs."},
        "after": {"findings": "Small nodule, right upper lobe."},
    }
    assert author.patch(url, json={"findings": "bad\u0000text"}).status_code == 422


def test_a_save_from_a_text_read_before_another_save_is_a_conflict(api: ApiServer) -> None:
    """Two editors of one draft (the author's two tabs): each sends the
    updated_at it read; the second save from the same text is 409, not a
    silent overwrite, and the text stays the first save's."""
    author = api.client("radiologist")
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    read = report["updated_at"]

    first = ok(author.patch(url, json={"findings": "From tab one.", "expected_updated_at": read}))
    second = author.patch(url, json={"findings": "From tab two.", "expected_updated_at": read})

    assert second.status_code == 409, second.text
    assert second.json()["error"]["current_state"] == "draft"
    assert "changed since you read it" in second.json()["error"]["message"]
    # the first save's own answer is a good base for the next save
    again = {"findings": "From tab one, again.", "expected_updated_at": first["updated_at"]}
    assert ok(author.patch(url, json=again))["findings"] == "From tab one, again."
    # without the field the old behaviour stays: the last save wins
    assert ok(author.patch(url, json={"impression": "Last."}))["impression"] == "Last."


# --------------------------------------------------------------------------- review cycle


def test_submit_stores_the_preliminary_and_opens_a_review_item(api: ApiServer) -> None:
    author = api.client("radiologist")
    seeded, report = draft(api, author)

    submitted = ok(author.post(f"/api/reports/{report['id']}/submit"))

    assert submitted["status"] == "in_review" and submitted["preliminary_at"] is not None
    versions = ok(author.get(f"/api/reports/{report['id']}/versions"))
    assert [(v["version"], v["kind"], v["status"]) for v in versions] == [
        (1, "preliminary", "in_review")
    ]
    assert versions[0]["findings"] == "Clear lungs."
    review = ok(author.get("/api/worklist", params={"queue": "review"}))["items"]
    assert [item["study"]["id"] for item in review] == [seeded.study_id]
    # the text under review is frozen for its author
    patched = author.patch(f"/api/reports/{report['id']}", json={"findings": "x"})
    assert patched.status_code == 409
    assert patched.json()["error"]["current_state"] == "in_review"


def test_submit_is_for_the_author_only(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author)
    assert api.client("radiologist").post(f"/api/reports/{report['id']}/submit").status_code == 403


def test_return_needs_a_comment_and_keeps_it_in_the_version_history(api: ApiServer) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author)
    ok(author.post(f"/api/reports/{report['id']}/submit"))
    url = f"/api/reports/{report['id']}/return"

    missing = reviewer.post(url, json={"comment": "   "})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "comment"
    assert reviewer.post(url, json={}).status_code == 422
    assert author.post(url, json={"comment": "self"}).status_code == 403

    returned = ok(reviewer.post(url, json={"comment": "Describe the nodule size."}))

    assert returned["status"] == "draft"
    versions = ok(author.get(f"/api/reports/{report['id']}/versions"))
    assert [(v["kind"], v["status"]) for v in versions] == [
        ("preliminary", "in_review"),
        ("returned", "draft"),
    ]
    assert versions[1]["comment"] == "Describe the nodule size."
    assert versions[1]["author_id"] == user_id(api, reviewer.username)  # type: ignore[attr-defined]
    (event,) = [
        e for e in audit_actions(api, "Report", report["id"]) if e.action == "report_returned"
    ]
    assert event.reason == "Describe the nodule size."
    assert event.details["before"]["status"] == "in_review"
    assert event.details["after"]["status"] == "draft"
    # returned again: the author edits and resubmits
    ok(author.patch(f"/api/reports/{report['id']}", json={"findings": "Nodule 6 mm."}))
    ok(author.post(f"/api/reports/{report['id']}/submit"))
    again = reviewer.post(url, json={"comment": "x"})
    assert again.status_code == 200
    assert reviewer.post(url, json={"comment": "x"}).json()["error"]["current_state"] == "draft"


def test_the_author_may_not_finalize_their_own_report(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author)
    ok(author.post(f"/api/reports/{report['id']}/submit"))

    response = author.post(f"/api/reports/{report['id']}/finalize")

    assert response.status_code == 403
    assert "author" in response.json()["error"]["message"]


@pytest.mark.parametrize("settings_overrides", [{"report_self_review": True}])
def test_self_review_setting_lets_the_author_finalize(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author)
    ok(author.post(f"/api/reports/{report['id']}/submit"))
    final = ok(author.post(f"/api/reports/{report['id']}/finalize"))
    assert final["status"] == "final" and final["reviewer_id"] == final["author_id"]


def test_finalize_signs_reports_the_study_and_completes_its_work_items(api: ApiServer) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    seeded, report = draft(api, author)
    early = reviewer.post(f"/api/reports/{report['id']}/finalize")
    assert early.status_code == 409 and early.json()["error"]["current_state"] == "draft"
    ok(author.post(f"/api/reports/{report['id']}/submit"))

    final = ok(reviewer.post(f"/api/reports/{report['id']}/finalize"))

    assert final["status"] == "final" and final["signed_at"] is not None
    assert final["reviewer_id"] == user_id(api, reviewer.username)  # type: ignore[attr-defined]
    with api.db.read() as session:
        study = session.get(DicomStudy, seeded.study_id)
        items = session.scalars(
            select(WorklistItem).where(WorklistItem.dicom_study_id == seeded.study_id)
        ).all()
    assert study is not None and study.status == "reported"
    assert sorted((item.queue_type, item.status) for item in items) == [
        ("reading", "completed"),
        ("review", "completed"),
    ]
    versions = ok(author.get(f"/api/reports/{report['id']}/versions"))
    assert versions[-1]["kind"] == "final" and versions[-1]["signed_by_id"] == final["reviewer_id"]
    finalized = [
        e for e in audit_actions(api, "Report", report["id"]) if e.action == "report_finalized"
    ]
    assert finalized[0].details["before"]["status"] == "in_review"
    assert finalized[0].details["after"]["status"] == "final"


def test_final_content_is_immutable(api: ApiServer) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author)
    ok(author.post(f"/api/reports/{report['id']}/submit"))
    ok(reviewer.post(f"/api/reports/{report['id']}/finalize"))
    url = f"/api/reports/{report['id']}"

    patched = author.patch(url, json={"impression": "changed"})

    assert patched.status_code == 409 and patched.json()["error"]["current_state"] == "final"
    for action in ("submit", "finalize"):
        response = reviewer.post(f"{url}/{action}")
        assert response.status_code in (403, 409)
    assert reviewer.post(f"{url}/return", json={"comment": "x"}).status_code == 409
    assert ok(author.get(url))["impression"] == "Normal."


def test_addendum_after_final_is_a_new_version_reviewed_and_finalized_again(
    api: ApiServer,
) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    early = author.post(f"{url}/addendum", json={"impression": "too early"})
    assert early.status_code == 409 and early.json()["error"]["current_state"] == "draft"
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    assert author.post(f"{url}/addendum", json={"kind": "addendum"}).status_code == 422

    revised = ok(
        author.post(
            f"{url}/addendum",
            json={"kind": "addendum", "impression": "Normal. Addendum: prior CT compared."},
        ),
        201,
    )

    assert revised["status"] == "revised" and revised["first_addendum_at"] is not None
    assert revised["version"] == 3  # preliminary 1, final 2, addendum 3
    assert revised["findings"] == "Clear lungs."
    ok(author.patch(url, json={"findings": "Clear lungs. No change."}))
    assert ok(author.post(f"{url}/submit"))["status"] == "in_review"
    assert author.post(f"{url}/finalize").status_code == 403
    final = ok(reviewer.post(f"{url}/finalize"))
    assert final["status"] == "final" and final["version"] == 5

    versions = ok(reviewer.get(f"{url}/versions"))
    assert [(v["version"], v["kind"], v["status"]) for v in versions] == [
        (1, "preliminary", "in_review"),
        (2, "final", "final"),
        (3, "addendum", "revised"),
        (4, "addendum", "in_review"),
        (5, "final", "final"),
    ]
    assert versions[1]["impression"] == "Normal."  # the first signed text is still there
    assert versions[4]["findings"] == "Clear lungs. No change."


def test_an_addendum_by_another_radiologist_makes_them_its_author(api: ApiServer) -> None:
    author, reviewer, colleague = (api.client("radiologist") for _ in range(3))
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))

    corrected = ok(
        colleague.post(
            f"{url}/addendum", json={"kind": "correction", "findings": "Left, not right."}
        ),
        201,
    )

    colleague_id = user_id(api, colleague.username)  # type: ignore[attr-defined]
    assert corrected["current_author_id"] == colleague_id
    assert corrected["author_id"] == user_id(api, author.username)  # type: ignore[attr-defined]
    assert author.post(f"{url}/submit").status_code == 403
    ok(colleague.post(f"{url}/submit"))
    assert colleague.post(f"{url}/finalize").status_code == 403
    assert ok(author.post(f"{url}/finalize"))["status"] == "final"


def test_report_reads_are_audited(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author)
    auditor = api.client("auditor")
    ok(auditor.get(f"/api/reports/{report['id']}"))
    ok(auditor.get(f"/api/reports/{report['id']}/versions"))
    reads = [
        e.action
        for e in audit_actions(api, "Report", report["id"])
        if e.actor == auditor.username  # type: ignore[attr-defined]
    ]
    assert reads == ["report_read", "report_versions_read"]
    assert api.client("scheduler").get(f"/api/reports/{report['id']}").status_code == 403
    assert auditor.get("/api/reports/424242").status_code == 404


def test_report_list_filters_by_study_and_status_pages_and_audits_the_query(
    api: ApiServer,
) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    first_study, first = draft(api, author)
    _, second = draft(api, author)
    ok(author.post(f"/api/reports/{second['id']}/submit"))
    admin = api.client("admin")

    everything = ok(admin.get("/api/reports", params={"limit": 1}))
    assert everything["total"] == 2 and len(everything["items"]) == 1
    by_status = ok(admin.get("/api/reports", params={"status": "in_review"}))
    assert [r["id"] for r in by_status["items"]] == [second["id"]]
    by_study = ok(admin.get("/api/reports", params={"study_id": first_study.study_id}))
    assert [r["id"] for r in by_study["items"]] == [first["id"]]
    assert "findings" not in by_study["items"][0]
    with api.db.read() as session:
        queries = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "reports_queried",
                AuditEvent.actor == admin.username,  # type: ignore[attr-defined]
            )
        ).all()
    assert len(queries) == 3 and all(q.event_code == "110112" for q in queries)
    assert queries[2].details["query"]["study_id"] == first_study.study_id
    assert reviewer.get("/api/reports", params={"status": "bogus"}).status_code == 422


def test_referring_physician_reads_only_signed_text_of_their_own_orders(
    api: ApiServer,
) -> None:
    referring = api.client("referring_physician")
    stranger = api.client("referring_physician")
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    seeded = seed_study(api.db, requested_by_id=user_id(api, referring.username))  # type: ignore[attr-defined]
    ok(author.post(f"/api/worklist/{seeded.item_id}/claim"))
    report = ok(
        author.post(
            "/api/reports",
            json={"study_id": seeded.study_id, "findings": "F1", "impression": "I1"},
        ),
        201,
    )
    url = f"/api/reports/{report['id']}"
    assert referring.get(url).status_code == 404  # a draft: not theirs to see yet
    assert ok(referring.get("/api/reports"))["total"] == 0
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    ok(author.post(f"{url}/addendum", json={"impression": "I2 unsigned"}), 201)

    shown = ok(referring.get(url))

    assert shown["impression"] == "I1" and shown["content_version"] == 2
    assert shown["status"] == "revised"
    assert [v["kind"] for v in ok(referring.get(f"{url}/versions"))] == ["final"]
    assert [r["id"] for r in ok(referring.get("/api/reports"))["items"]] == [report["id"]]
    assert stranger.get(url).status_code == 404
    assert ok(stranger.get("/api/reports"))["total"] == 0
    assert referring.post(f"{url}/submit").status_code == 403


def test_referring_physician_sees_only_the_signed_critical_flag_and_communications(
    api: ApiServer,
) -> None:
    referring = api.client("referring_physician")
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    seeded = seed_study(api.db, requested_by_id=user_id(api, referring.username))  # type: ignore[attr-defined]
    ok(author.post(f"/api/worklist/{seeded.item_id}/claim"))
    report = ok(
        author.post(
            "/api/reports",
            json={"study_id": seeded.study_id, "findings": "F1", "impression": "I1"},
        ),
        201,
    )
    url = f"/api/reports/{report['id']}"
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    # told after the signing: not part of what was signed
    ok(author.post(f"{url}/critical-communications", json=communication(finding="late")), 201)
    signed = ok(referring.get(url))
    assert signed["critical_flag"] is False and signed["critical_communications"] == []
    ok(author.post(f"{url}/addendum", json={"impression": "I2 unsigned"}), 201)
    ok(
        author.patch(
            url, json={"impression": "UNSIGNED: possible metastasis", "critical_flag": True}
        )
    )
    ok(
        author.post(
            f"{url}/critical-communications",
            json=communication(finding="UNSIGNED: possible metastasis"),
        ),
        201,
    )

    during = ok(referring.get(url))
    listed = ok(referring.get("/api/reports"))["items"]

    assert during["impression"] == "I1"
    assert during["critical_flag"] is False and during["critical_communications"] == []
    assert [(r["id"], r["critical_flag"]) for r in listed] == [(report["id"], False)]
    working = ok(author.get(url))  # the radiologists still see the working copy
    assert working["critical_flag"] is True and len(working["critical_communications"]) == 2
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    resigned = ok(referring.get(url))
    assert resigned["critical_flag"] is True
    assert [c["finding"] for c in resigned["critical_communications"]] == [
        "late",
        "UNSIGNED: possible metastasis",
    ]
    assert ok(referring.get("/api/reports"))["items"][0]["critical_flag"] is True


# --------------------------------------------------------------------------- draft ownership


def test_a_first_draft_follows_its_reading_item_to_the_next_claimant(api: ApiServer) -> None:
    first, second = api.client("radiologist"), api.client("radiologist")
    seeded, report = draft(api, first)
    url = f"/api/reports/{report['id']}"
    ok(first.post(f"/api/worklist/{seeded.item_id}/release"))
    # released: its author no longer holds the study, so may not write the draft
    assert first.patch(url, json={"findings": "by A"}).status_code == 403
    assert first.post(f"{url}/submit").status_code == 403

    ok(second.post(f"/api/worklist/{seeded.item_id}/claim"))

    moved = ok(second.get(url))
    assert moved["author_id"] == moved["current_author_id"] == user_id(api, second.username)  # type: ignore[attr-defined]
    assert ok(second.patch(url, json={"findings": "by B"}))["findings"] == "by B"
    assert first.patch(url, json={"findings": "by A"}).status_code == 403
    assert first.post(f"{url}/submit").status_code == 403
    assert ok(second.post(f"{url}/submit"))["status"] == "in_review"
    (event,) = [
        e for e in audit_actions(api, "Report", report["id"]) if e.action == "report_reassigned"
    ]
    assert event.details == {
        "before": {"radiologist_id": user_id(api, first.username)},  # type: ignore[attr-defined]
        "after": {"radiologist_id": user_id(api, second.username)},  # type: ignore[attr-defined]
    }


def test_an_addendum_writer_keeps_the_addendum_whoever_holds_the_reading_item(
    api: ApiServer,
) -> None:
    author, reviewer, other = (api.client("radiologist") for _ in range(3))
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    ok(other.post(f"{url}/addendum", json={"impression": "Addendum."}), 201)

    assert ok(other.patch(url, json={"impression": "Addendum, edited."}))["status"] == "revised"
    assert author.patch(url, json={"impression": "not theirs"}).status_code == 403


# --------------------------------------------------------------------------- unreadable studies


def _set_study(api: ApiServer, study_id: int, **values: Any) -> None:
    with api.db.unit_of_work() as session:
        study = session.get(DicomStudy, study_id)
        assert study is not None
        for name, value in values.items():
            setattr(study, name, value)


@pytest.mark.parametrize("metadata_status", ["unmatched", "conflict"])
def test_a_study_not_released_to_reading_cannot_be_reported(
    api: ApiServer, metadata_status: str
) -> None:
    author = api.client("radiologist")
    seeded = claimed_study(api, author)
    _set_study(api, seeded.study_id, metadata_status=metadata_status)
    body = {"study_id": seeded.study_id, "findings": "F", "impression": "I"}

    refused = author.post("/api/reports", json=body)

    assert refused.status_code == 409
    assert refused.json()["error"]["current_state"] == metadata_status
    _set_study(api, seeded.study_id, released_to_reading=True)
    ok(author.post("/api/reports", json=body), 201)


def test_a_report_of_a_rejected_study_cannot_be_submitted_or_finalized(api: ApiServer) -> None:
    author, reviewer, admin = (
        api.client("radiologist"),
        api.client("radiologist"),
        api.client("admin"),
    )
    _, in_review = draft(api, author)
    ok(author.post(f"/api/reports/{in_review['id']}/submit"))
    _, drafted = draft(api, author)
    for report in (in_review, drafted):
        ok(
            admin.post(
                f"/api/studies/{report['study_id']}/reject", json={"reason": "wrong patient"}
            )
        )

    finalized = reviewer.post(f"/api/reports/{in_review['id']}/finalize")
    submitted = author.post(f"/api/reports/{drafted['id']}/submit")

    for refused in (finalized, submitted):
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["current_state"] == "rejected"
    assert ok(author.get(f"/api/reports/{in_review['id']}"))["status"] == "in_review"
    assert ok(author.get(f"/api/reports/{drafted['id']}"))["status"] == "draft"


# --------------------------------------------------------------------------- critical results


def test_critical_flag_opens_a_communication_with_a_deadline(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author, critical_flag=True, impression="Pneumothorax.")
    (record,) = report["critical_communications"]
    identified = datetime.fromisoformat(record["identified_at"])
    deadline = datetime.fromisoformat(record["deadline_at"])
    assert deadline - identified == timedelta(minutes=api.settings.critical_result_deadline_minutes)
    assert record["communicated_at"] is None and record["deadline_met"] is None
    assert record["overdue"] is False and record["finding"] == "Pneumothorax."


def test_critical_report_cannot_be_submitted_without_a_communication(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author, critical_flag=True)
    url = f"/api/reports/{report['id']}"

    refused = author.post(f"{url}/submit")

    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "critical_communication"
    assert ok(author.get(url))["status"] == "draft"
    submitted = ok(author.post(f"{url}/submit", json={"critical_communication": communication()}))
    assert submitted["status"] == "in_review"
    (record,) = submitted["critical_communications"]
    assert record["method"] == "phone" and record["deadline_met"] is True
    assert record["communicated_by_id"] == user_id(api, author.username)  # type: ignore[attr-defined]


def test_flagging_a_draft_after_the_call_was_recorded_opens_no_second_record(
    api: ApiServer,
) -> None:
    """The radiologist phoned first: the flag set afterwards is covered by that
    call, not a new record nobody will communicate (escalated as overdue)."""
    author = api.client("radiologist")
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    recorded = ok(author.post(f"{url}/critical-communications", json=communication()), 201)

    flagged = ok(author.patch(url, json={"critical_flag": True}))

    assert [record["id"] for record in flagged["critical_communications"]] == [recorded["id"]]
    assert ok(author.post(f"{url}/submit"))["status"] == "in_review"
    with api.db.read() as session:
        pending = session.scalars(
            select(CriticalResultCommunication.id).where(
                CriticalResultCommunication.report_id == report["id"],
                CriticalResultCommunication.communicated_at.is_(None),
            )
        ).all()
    assert pending == []


def test_a_critical_finding_flagged_in_an_addendum_needs_its_own_call_before_signing(
    api: ApiServer,
) -> None:
    """The call of the first signing does not cover a finding flagged again in
    an addendum: its record would be escalated as overdue on a signed report."""
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author, critical_flag=True)
    url = f"/api/reports/{report['id']}"
    ok(author.post(f"{url}/submit", json={"critical_communication": communication()}))
    ok(reviewer.post(f"{url}/finalize"))
    ok(author.post(f"{url}/addendum", json={"kind": "addendum", "impression": "New bleed."}), 201)
    ok(author.patch(url, json={"critical_flag": False}))
    flagged = ok(author.patch(url, json={"critical_flag": True}))
    assert [r["communicated_at"] is None for r in flagged["critical_communications"]] == [
        False,
        True,
    ]

    refused = author.post(f"{url}/submit")

    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "critical_communication"
    told = communication(finding="New bleed.")
    assert (
        ok(author.post(f"{url}/submit", json={"critical_communication": told}))["status"]
        == "in_review"
    )


def test_setting_the_flag_on_a_draft_then_recording_the_call_allows_submit(
    api: ApiServer,
) -> None:
    author, reviewer = api.client("radiologist"), api.client("radiologist")
    _, report = draft(api, author)
    url = f"/api/reports/{report['id']}"
    flagged = ok(author.patch(url, json={"critical_flag": True}))
    (pending,) = flagged["critical_communications"]
    assert author.post(f"{url}/submit").status_code == 422

    recorded = ok(
        author.post(
            f"{url}/critical-communications",
            json=communication(method="in_person", communicated_to="Dr Lee"),
        ),
        201,
    )

    assert recorded["id"] == pending["id"]  # the open record is filled in
    assert recorded["acknowledged_at"] is None
    ack = ok(author.patch(f"{url}/critical-communications/{recorded['id']}/acknowledge"))
    assert ack["acknowledged_at"] is not None
    again = author.patch(f"{url}/critical-communications/{recorded['id']}/acknowledge")
    assert again.status_code == 409
    ok(author.post(f"{url}/submit"))
    ok(reviewer.post(f"{url}/finalize"))
    actions = [e.action for e in audit_actions(api, "CriticalResultCommunication", recorded["id"])]
    assert actions == ["critical_result_communicated", "critical_result_acknowledged"]


def test_a_communication_told_before_it_was_recorded_is_identified_when_told(
    api: ApiServer,
) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author)
    told = datetime.now(UTC) - timedelta(minutes=40)

    record = ok(
        author.post(
            f"/api/reports/{report['id']}/critical-communications",
            json=communication(communicated_at=told.isoformat()),
        ),
        201,
    )

    identified = datetime.fromisoformat(record["identified_at"])
    assert identified == datetime.fromisoformat(record["communicated_at"]) == told
    assert datetime.fromisoformat(record["deadline_at"]) - identified == timedelta(
        minutes=api.settings.critical_result_deadline_minutes
    )
    assert record["deadline_met"] is True


def test_a_communication_before_the_finding_was_identified_is_422(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author, critical_flag=True)
    url = f"/api/reports/{report['id']}"
    (pending,) = report["critical_communications"]
    before = datetime.fromisoformat(pending["identified_at"]) - timedelta(minutes=5)

    refused = author.post(
        f"{url}/critical-communications", json=communication(communicated_at=before.isoformat())
    )
    on_submit = author.post(
        f"{url}/submit",
        json={"critical_communication": communication(communicated_at=before.isoformat())},
    )

    for response in (refused, on_submit):
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "communicated_at"
    (still,) = ok(author.get(url))["critical_communications"]
    assert still["communicated_at"] is None and ok(author.get(url))["status"] == "draft"


def test_communication_input_is_validated(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, report = draft(api, author, critical_flag=True)
    url = f"/api/reports/{report['id']}/critical-communications"
    naive = communication(communicated_at=datetime.now().replace(tzinfo=None).isoformat())
    assert author.post(url, json=naive).status_code == 422
    assert author.post(url, json=communication(method="pigeon")).status_code == 422
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert author.post(url, json=communication(communicated_at=future)).status_code == 422
    assert api.client("admin").post(url, json=communication()).status_code == 403
    unknown = author.patch(f"/api/reports/{report['id']}/critical-communications/99999/acknowledge")
    assert unknown.status_code == 404


@pytest.mark.parametrize("settings_overrides", [{"critical_result_deadline_minutes": 1}])
def test_overdue_critical_communications_lists_missed_deadlines(api: ApiServer) -> None:
    author = api.client("radiologist")
    _, late = draft(api, author, critical_flag=True)
    _, told = draft(api, author, critical_flag=True)
    _, plain = draft(api, author)
    ok(author.post(f"/api/reports/{told['id']}/critical-communications", json=communication()), 201)
    later = datetime.now(UTC) + timedelta(minutes=2)

    with api.db.read() as session:
        overdue = overdue_critical_communications(session, later)
        nothing_yet = overdue_critical_communications(session, datetime.now(UTC))

    assert [row.report_id for row in overdue] == [late["id"]]
    assert overdue[0].overdue is True and nothing_yet == []
    assert plain["critical_communications"] == []


@pytest.mark.parametrize("settings_overrides", [{"report_self_review": True}])
def test_self_review_setting_lets_a_review_item_go_to_the_author(api: ApiServer) -> None:
    author, admin = api.client("radiologist"), api.client("admin")
    seeded, report = draft(api, author)
    ok(author.post(f"/api/reports/{report['id']}/submit"))
    with api.db.read() as session:
        review_id = session.scalar(
            select(WorklistItem.id).where(
                WorklistItem.dicom_study_id == seeded.study_id,
                WorklistItem.queue_type == "review",
            )
        )

    given = ok(
        admin.post(
            f"/api/worklist/{review_id}/reassign",
            json={"user_id": user_id(api, author.username)},  # type: ignore[attr-defined]
        )
    )

    assert given["assigned_to_id"] == user_id(api, author.username)  # type: ignore[attr-defined]
