"""The whole reading flow through the real node: DICOM in, HTTP API out, both backends.

Images arrive over DICOM (DCMTK storescu) for a scheduled order; the stability
job completes the study, which puts it on the reading worklist; two
radiologists race for it; the winner drafts, submits, gets it returned,
resubmits; the other finalizes; an addendum goes round again. The versions,
the audit trail and the change feed must tell the same story.
"""

from __future__ import annotations

import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import (
    AuditEvent,
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Modality,
    WorklistItem,
)
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.jobs.workflow import run_study_stability
from dicom_node.node import Node, sla_policy
from dicom_node.services.access.users import create_user
from dicom_node.services.workflow.orders import schedule_order
from tests.api.conftest import PASSWORD
from tests.dicomfiles import ct_dataset, write
from tests.support import dcmtk_env, dcmtk_tool


def _client(node: Node, role: str, name: str) -> tuple[httpx.Client, int]:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        user = create_user(
            session,
            username=name,
            password=PASSWORD,
            role=role,
            display_name=name,
            actor=Actor.system(SystemActor.CLI),
        )
    base = f"http://127.0.0.1:{node.http_port}"
    signed_in = httpx.post(
        f"{base}/api/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
    )
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["access_token"]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return client, user.id


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _race(clients: list[httpx.Client], url: str) -> list[httpx.Response]:
    barrier = threading.Barrier(len(clients))
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def claim(client: httpx.Client) -> None:
        barrier.wait()
        response = client.post(url)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=claim, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _schedule_order(node: Node, *, referring_id: int) -> tuple[int, str, str]:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        center = ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        ct = Modality(imaging_center_id=center.id, name="CT", type="CT", dicom_ae_title="CT_ONE")
        order = ImagingRequest(
            patient_id="FLOW1",
            patient_name="READ^FLOW",
            patient_name_folded="read^flow",
            patient_sex="F",
            priority="stat",
            study_description="CT HEAD",
            requested_by_id=referring_id,
        )
        session.add_all([ct, order])
        session.flush()
        schedule_order(
            session, order, modality=ct, scheduled_at=datetime.now(UTC), actor="scheduler"
        )
        assert order.study_instance_uid and order.accession_number
        return order.id, order.study_instance_uid, order.accession_number


def _send_images(node: Node, tmp_path: Path, *, study_uid: str, accession: str) -> None:
    series_uid = generate_uid()
    files = [
        write(
            ct_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="FLOW1",
                       patient_name="READ^FLOW", sex="F", birth_date="", accession=accession,
                       instance_number=n),
            tmp_path / f"img{n}.dcm",
        )
        for n in range(3)
    ]  # fmt: skip
    sent = subprocess.run(
        [dcmtk_tool("storescu"), "-aet", "CT_ONE", "-aec", "DICOM_NODE", "127.0.0.1",
         str(node.dicom_port), *map(str, files)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def test_images_to_final_report_with_return_and_addendum(make_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    assert node.db is not None
    first, first_id = _client(node, "radiologist", "rad.one")
    second, second_id = _client(node, "radiologist", "rad.two")
    admin, _ = _client(node, "admin", "admin.flow")
    referring, referring_id = _client(node, "referring_physician", "dr.referrer")
    order_id, study_uid, accession = _schedule_order(node, referring_id=referring_id)
    feed_start = _ok(admin.get("/api/changes", params={"limit": 1}))["latest"]

    # 1. images over DICOM; the stability job completes the study
    _send_images(node, tmp_path, study_uid=study_uid, accession=accession)
    summary = run_study_stability(
        node.db,
        stable_seconds=node.settings.study_stable_seconds,
        sla=sla_policy(node.settings),
        now=datetime.now(UTC) + timedelta(seconds=node.settings.study_stable_seconds + 5),
    )
    assert summary.completed == 1

    # 2. the study is on the reading worklist, STAT, with its summary
    queue = _ok(first.get("/api/worklist"))
    (item,) = queue["items"]
    assert (item["queue_type"], item["priority"], item["status"]) == ("reading", "stat", "pending")
    assert item["study"]["study_instance_uid"] == study_uid
    assert item["study"]["accession_number"] == accession
    assert item["study"]["instance_count"] == 3 and item["study"]["patient_name"] == "READ^FLOW"
    assert item["order_id"] == order_id
    study_id = item["study"]["id"]

    # 3. both radiologists claim at once: exactly one wins
    results = _race([first, second], f"/api/worklist/{item['id']}/claim")
    assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
    winner_id = next(r for r in results if r.status_code == 200).json()["assigned_to_id"]
    author, reviewer = (first, second) if winner_id == first_id else (second, first)
    author_id, reviewer_id = (
        (first_id, second_id) if winner_id == first_id else (second_id, first_id)
    )
    loser = next(r for r in results if r.status_code == 409).json()["error"]
    assert loser["current_state"] == "claimed" and loser["existing"]["assigned_to_id"] == author_id

    # 4. draft -> submit -> return -> edit -> resubmit -> final (by the other one)
    report = _ok(
        author.post(
            "/api/reports",
            json={"study_id": study_id, "findings": "No bleed.", "impression": "Normal CT head."},
        ),
        201,
    )
    url = f"/api/reports/{report['id']}"
    assert _ok(author.post(f"{url}/submit"))["status"] == "in_review"
    assert reviewer.get(f"{url}").json()["status"] == "in_review"
    review_queue = _ok(reviewer.get("/api/worklist", params={"queue": "review"}))["items"]
    assert [i["study"]["id"] for i in review_queue] == [study_id]
    returned = _ok(reviewer.post(f"{url}/return", json={"comment": "Mention the sinuses."}))
    assert returned["status"] == "draft"
    _ok(author.patch(url, json={"findings": "No bleed. Sinuses clear."}))
    _ok(author.post(f"{url}/submit"))
    assert author.post(f"{url}/finalize").status_code == 403  # not their own
    final = _ok(reviewer.post(f"{url}/finalize"))
    assert final["status"] == "final" and final["reviewer_id"] == reviewer_id
    assert author.patch(url, json={"findings": "changed"}).status_code == 409
    assert _ok(referring.get(url))["findings"] == "No bleed. Sinuses clear."

    # 5. addendum -> submit -> final again
    revised = _ok(
        author.post(
            f"{url}/addendum", json={"impression": "Normal CT head. Addendum: no fracture."}
        ),
        201,
    )
    assert revised["status"] == "revised" and revised["first_addendum_at"] is not None
    _ok(author.post(f"{url}/submit"))
    final_again = _ok(reviewer.post(f"{url}/finalize"))
    assert final_again["status"] == "final"
    assert final_again["impression"] == "Normal CT head. Addendum: no fracture."

    # the versions: every stored text, oldest first, the first signed one intact
    versions = _ok(reviewer.get(f"{url}/versions"))
    assert [(v["kind"], v["status"]) for v in versions] == [
        ("preliminary", "in_review"),
        ("returned", "draft"),
        ("preliminary", "in_review"),
        ("final", "final"),
        ("addendum", "revised"),
        ("addendum", "in_review"),
        ("final", "final"),
    ]
    assert [v["version"] for v in versions] == list(range(1, 8))
    assert versions[0]["findings"] == "No bleed."
    assert versions[1]["comment"] == "Mention the sinuses."
    assert versions[3]["impression"] == "Normal CT head."
    assert versions[3]["signed_by_id"] == reviewer_id and versions[3]["author_id"] == author_id

    # the records: study reported, work items completed
    with node.db.read() as session:
        study = session.get(DicomStudy, study_id)
        items = session.scalars(
            select(WorklistItem).where(WorklistItem.dicom_study_id == study_id)
        ).all()
        report_events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.target_class == "Report", AuditEvent.target_id == str(report["id"]))
            .order_by(AuditEvent.id)
        ).all()
        study_events = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.target_class == "DicomStudy", AuditEvent.target_id == str(study_id))
            .order_by(AuditEvent.id)
        ).all()
    assert study is not None and study.status == "reported"
    reading = [i for i in items if i.queue_type == "reading"]
    assert [(i.status, i.assigned_to_id) for i in reading] == [("completed", author_id)]
    assert {i.status for i in items if i.queue_type == "review"} <= {"completed", "cancelled"}
    assert "study_reading" in study_events and study_events[-1] == "study_reported"
    changes = [e.action for e in report_events if not e.action.endswith("_read")]
    assert changes == [
        "report_created",
        "report_submitted",
        "report_returned",
        "report_edited",
        "report_submitted",
        "report_finalized",
        "report_addendum",
        "report_submitted",
        "report_finalized",
    ]
    assert all(
        "before" in e.details and "after" in e.details for e in report_events if e.action in changes
    )
    assert all(e.study_instance_uid == study_uid and e.patient_id == "FLOW1" for e in report_events)
    assert "report_read" in [e.action for e in report_events]

    # the change feed shows the worklist and the report as they moved
    feed = _ok(admin.get("/api/changes", params={"since": feed_start, "limit": 1000}))["items"]
    item_states = [
        (c["action"], c["payload"]["status"])
        for c in feed
        if c["entity"] == "worklist_item" and c["entity_id"] == item["id"]
    ]
    assert item_states[0] == ("created", "pending")
    assert ("updated", "claimed") in item_states and item_states[-1] == ("updated", "completed")
    report_states = [c["payload"]["status"] for c in feed if c["entity"] == "report"]
    assert report_states == [
        "draft",
        "in_review",
        "draft",
        "draft",
        "in_review",
        "final",
        "revised",
        "in_review",
        "final",
    ]
    assert [c["payload"]["status"] for c in feed if c["entity"] == "study"][-1] == "reported"
    # the referring physician sees the report of their own order once signed:
    # its signings, none of the unsigned states in between
    theirs = _ok(referring.get("/api/changes", params={"since": feed_start, "limit": 1000}))
    assert [c["payload"]["status"] for c in theirs["items"] if c["entity"] == "report"] == [
        "final",
        "final",
    ]
    for client in (first, second, admin, referring):
        client.close()
