"""The referrer's journey end to end (issue 15, item 5), on `dicom-node serve`.

An admin creates referring physicians X and Y; a scheduler books an order for X
(chosen from the user list, not placed by X); the images arrive by C-STORE
(DCMTK's storescu) with the order's StudyInstanceUID and accession number; the
study completes (a short stability wait); one radiologist claims, drafts and
submits, a second signs. X reads the order, the study and the signed report
and sees their change-feed entries; before the signature X sees no report; Y
gets 404 on each and sees none of those entries. An order that names X only by
ReferringPhysicianName is X's too.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.services.access.users import create_user
from tests.conftest import CHEAP_HASHING
from tests.dicomfiles import ct_dataset
from tests.support import Served, dcmtk_env, dcmtk_tool

PASSWORD = "correct horse battery"
CHEAP = {name: str(value) for name, value in CHEAP_HASHING.items()}
# the study is complete one quiet second after its last image (checked twice a second)
FAST_STABILITY = {"study_stable_seconds": "1", "stability_check_interval_seconds": "0.5"}
T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll ``probe`` until it returns something, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Api:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.clients: list[httpx.Client] = []

    def sign_in(self, username: str) -> httpx.Client:
        response = httpx.post(
            f"{self.base_url}/api/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        client = httpx.Client(
            base_url=self.base_url,
            timeout=30,
            headers={"Authorization": f"Bearer {response.json()['access_token']}"},
        )
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _store(tmp_path: Path, dicom_port: int, order: dict[str, Any]) -> None:
    path = tmp_path / "image.dcm"
    ct_dataset(
        study_uid=order["study_instance_uid"],
        patient_id=order["patient_id"],
        patient_name=order["patient_name"],
        accession=order["accession_number"],
    ).save_as(path, enforce_file_format=True)
    result = subprocess.run(
        [dcmtk_tool("storescu"), "-aec", "DICOM_NODE", "127.0.0.1", str(dicom_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )
    assert result.returncode == 0, result.stderr


def test_a_scheduler_books_for_x_the_images_arrive_x_reads_the_signed_report_y_sees_nothing(
    db_url: str, tmp_path: Path, served: list[Served]
) -> None:
    node = Served(tmp_path, database_url=db_url, **CHEAP, **FAST_STABILITY)
    served.append(node)
    dicom_port, http_port = node.ports()
    db = Database(db_url)
    try:
        with db.unit_of_work() as session:
            create_user(
                session,
                username="first.admin",
                password=PASSWORD,
                role="admin",
                actor=Actor.system(SystemActor.CLI),
            )
    finally:
        db.dispose()
    api = Api(f"http://127.0.0.1:{http_port}")
    try:
        _journey(api, tmp_path, dicom_port)
    finally:
        api.close()


def _journey(api: Api, tmp_path: Path, dicom_port: int) -> None:
    admin = api.sign_in("first.admin")
    ids: dict[str, int] = {}
    for username, role, name in (
        ("dr.x", "referring_physician", "Xavier^Xena"),
        ("dr.y", "referring_physician", "Young^Yuri"),
        ("sched", "scheduler", "Sam Scheduler"),
        ("rad.one", "radiologist", "Dr One"),
        ("rad.two", "radiologist", "Dr Two"),
    ):
        body = {"username": username, "password": PASSWORD, "role": role, "display_name": name}
        ids[username] = _ok(admin.post("/api/users", json=body), 201)["id"]
    center = _ok(admin.post("/api/imaging-centers", json={"name": "Main", "code": "MAIN"}), 201)
    modality = _ok(
        admin.post(
            "/api/modalities",
            json={
                "imaging_center_id": center["id"],
                "name": "CT 1",
                "type": "CT",
                "dicom_ae_title": "CT_ONE",
            },
        ),
        201,
    )
    scheduler, x, y = api.sign_in("sched"), api.sign_in("dr.x"), api.sign_in("dr.y")
    rad_one, rad_two = api.sign_in("rad.one"), api.sign_in("rad.two")

    # the scheduler books the order for X, from the user list
    order = _ok(
        scheduler.post(
            "/api/orders",
            json={
                "patient_id": "JOURNEY1",
                "patient_name": "JOURNEY^JO",
                "requested_modality": "CT",
                "study_description": "CT chest",
                "referring_physician_id": ids["dr.x"],
            },
        ),
        201,
    )
    assert order["requested_by_id"] == ids["sched"]
    assert order["referring_physician_name"] == "Xavier^Xena"
    order = _ok(
        scheduler.post(
            f"/api/orders/{order['id']}/schedule",
            json={
                "modality_id": modality["id"],
                "scheduled_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
            },
        )
    )

    # the images arrive over DICOM; the study completes after the stability wait
    _store(tmp_path, dicom_port, order)

    def reading_item() -> dict[str, Any] | None:
        items = _ok(rad_one.get("/api/worklist"))["items"]
        return next(
            (i for i in items if i["study"]["accession_number"] == order["accession_number"]), None
        )

    item = _until("the study in the reading worklist", reading_item)
    study_id = _ok(rad_one.post(f"/api/worklist/{item['id']}/claim"))["study"]["id"]
    report = _ok(
        rad_one.post(
            "/api/reports",
            json={"study_id": study_id, "findings": "Clear lungs.", "impression": "Normal."},
        ),
        201,
    )
    assert _ok(rad_one.post(f"/api/reports/{report['id']}/submit"))["status"] == "in_review"

    # before the signature, X sees the order and the study but no report
    assert x.get(f"/api/reports/{report['id']}").status_code == 404
    assert _ok(x.get(f"/api/studies/{study_id}"))["report_ids"] == []
    assert "report" not in {e["entity"] for e in _ok(x.get("/api/changes"))["items"]}

    signed = _ok(rad_two.post(f"/api/reports/{report['id']}/finalize"))
    assert signed["status"] == "final"

    # X reads the order, the study and the signed report
    assert _ok(x.get(f"/api/orders/{order['id']}"))["referring_physician_id"] == ids["dr.x"]
    study = _ok(x.get(f"/api/studies/{study_id}"))
    assert study["report_ids"] == [report["id"]]
    assert study["order"]["referring_physician_id"] == ids["dr.x"]
    assert [s["id"] for s in _ok(x.get("/api/studies"))["items"]] == [study_id]
    read = _ok(x.get(f"/api/reports/{report['id']}"))
    assert (read["status"], read["impression"]) == ("final", "Normal.")
    feed = {(e["entity"], e["entity_id"]) for e in _ok(x.get("/api/changes"))["items"]}
    assert {("order", order["id"]), ("study", study_id), ("report", report["id"])} <= feed

    # Y, another referring physician, learns nothing of it
    assert y.get(f"/api/orders/{order['id']}").status_code == 404
    assert y.get(f"/api/studies/{study_id}").status_code == 404
    assert y.get(f"/api/reports/{report['id']}").status_code == 404
    assert _ok(y.get("/api/orders"))["items"] == []
    assert _ok(y.get("/api/studies"))["items"] == []
    assert _ok(y.get("/api/changes"))["items"] == []

    # the DICOM-name path: an order naming X only by ReferringPhysicianName is X's
    named = _ok(
        scheduler.post(
            "/api/orders",
            json={
                "patient_id": "JOURNEY2",
                "patient_name": "JOURNEY^JAY",
                "requested_modality": "CT",
                "study_description": "CT head",
                "referring_physician_name": "XAVIER^XENA",
            },
        ),
        201,
    )
    assert named["referring_physician_id"] == ids["dr.x"]
    assert _ok(x.get(f"/api/orders/{named['id']}"))["id"] == named["id"]
    assert y.get(f"/api/orders/{named['id']}").status_code == 404
