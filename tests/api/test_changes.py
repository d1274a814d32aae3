"""The change feed: written with the change, paged, filtered by role, streamed as SSE."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, select

from dicom_node.db.models import (
    ChangeLogEntry,
    DicomStudy,
    ImagingRequest,
    Patient,
    Report,
    User,
)
from dicom_node.jobs.maintenance import run_change_log_trim
from dicom_node.services.ingest.instances import IngestPolicy, Source, store_instance
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes


def _user_id(api: ApiServer, username: str) -> int:
    with api.db.read() as session:
        return int(session.scalar(select(User.id).where(User.username == username)) or 0)


def _add_order(api: ApiServer, *, owner: str | None = None, status: str = "requested") -> int:
    owner_id = _user_id(api, owner) if owner else None
    with api.db.unit_of_work() as session:
        order = ImagingRequest(
            patient_id="P1",
            patient_name="DOE^JANE",
            patient_name_folded="doe^jane",
            requested_modality="CT",
            status=status,
            requested_by_id=owner_id,
        )
        session.add(order)
        session.flush()
        return order.id


def test_an_order_change_is_in_the_feed_and_a_rolled_back_one_is_not(api: ApiServer) -> None:
    order_id = _add_order(api)
    with pytest.raises(RuntimeError), api.db.unit_of_work() as session:
        order = session.get(ImagingRequest, order_id)
        assert order is not None
        order.status = "cancelled"
        session.flush()
        raise RuntimeError("abort")
    with api.db.read() as session:
        rows = session.scalars(select(ChangeLogEntry).order_by(ChangeLogEntry.seq)).all()
    assert [(r.entity, r.entity_id, r.action, r.payload["status"]) for r in rows] == [
        ("order", order_id, "created", "requested")
    ]


def test_changes_page_after_since_and_referring_physicians_see_only_their_orders(
    api: ApiServer,
) -> None:
    mine = api.client("referring_physician")
    tech = api.client("technologist")
    own = _add_order(api, owner=mine.username)  # type: ignore[attr-defined]
    other = _add_order(api)
    seen_by_tech = tech.get("/api/changes", params={"since": 0}).json()
    assert [i["entity_id"] for i in seen_by_tech["items"]] == [own, other]
    first = seen_by_tech["items"][0]["seq"]
    after_first = tech.get("/api/changes", params={"since": first}).json()
    assert [i["entity_id"] for i in after_first["items"]] == [other]
    assert after_first["next_since"] == after_first["latest"]
    seen_by_owner = mine.get("/api/changes").json()
    assert [i["entity_id"] for i in seen_by_owner["items"]] == [own]


def test_a_study_arriving_over_dicom_is_announced_in_the_feed(
    api: ApiServer, tmp_path: Path
) -> None:
    radiologist = api.client("radiologist")
    uid = generate_uid()
    data = to_bytes(ct_dataset(study_uid=uid))
    store_instance(
        api.db,
        FileStore(tmp_path / "store", fsync=False),
        part10=data,
        source=Source(calling_ae_title="CT1", address="127.0.0.1:1"),
        policy=IngestPolicy(duplicate_policy="keep"),
    )
    items = radiologist.get("/api/changes", params={"entity": "study"}).json()["items"]
    assert items and items[0]["action"] == "created"
    # one entry with the state at commit: matching (no order here) is part of it
    assert items[0]["payload"] == {
        "status": "acquired",
        "completeness": "receiving",
        "metadata_status": "unmatched",
        "order_id": None,
    }


def _read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "id" in current:
            events.append(current)
            current = {}
            if len(events) == count:
                break
    return events


def test_sse_streams_live_changes_and_resumes_after_last_event_id(api: ApiServer) -> None:
    client = api.client("scheduler")
    token = client.headers["Authorization"]
    first = _add_order(api)
    # a change made while the client listens arrives on the open stream
    timer = threading.Timer(0.5, _add_order, args=(api,))
    with httpx.stream(
        "GET",
        f"{api.base_url}/api/events",
        params={"since": 0},
        headers={"Authorization": token},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        timer.start()
        events = _read_events(response, 2)
    timer.join()
    assert [e["event"] for e in events] == ["order.created", "order.created"]
    assert events[0]["data"]["entity_id"] == first
    # reconnecting with the last id seen: only what came after it
    third = _add_order(api)
    with httpx.stream(
        "GET",
        f"{api.base_url}/api/events",
        headers={"Authorization": token, "Last-Event-ID": str(events[1]["id"])},
        timeout=30,
    ) as response:
        resumed = _read_events(response, 1)
    assert resumed[0]["data"]["entity_id"] == third


def test_sse_refuses_roles_and_tokens_it_must(api: ApiServer) -> None:
    response = api.anonymous().get("/api/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_reader_paging_during_concurrent_writes_misses_no_change(api: ApiServer) -> None:
    """Feed numbers follow commit order, so ``since`` never skips a late committer."""
    reader = api.client("admin")
    created: list[int] = []
    lock = threading.Lock()

    def write(count: int) -> None:
        for _ in range(count):
            order_id = _add_order(api)
            with lock:
                created.append(order_id)

    writers = [threading.Thread(target=write, args=(25,)) for _ in range(4)]
    for thread in writers:
        thread.start()
    seen: list[int] = []
    since = 0
    while True:
        # read before the page is fetched: an empty page after every writer ended
        # means nothing is left
        finished = not any(thread.is_alive() for thread in writers)
        page = reader.get("/api/changes", params={"since": since, "limit": 7}).json()
        seen += [item["entity_id"] for item in page["items"]]
        since = page["next_since"]
        if finished and not page["items"]:
            break
    for thread in writers:
        thread.join()
    assert sorted(seen) == sorted(created)
    assert len(seen) == 100


def test_a_late_committing_change_is_not_skipped_by_a_reader_that_saw_a_later_one(
    api: ApiServer,
) -> None:
    """Without commit-ordered numbers, a reader would see B (seq 2), move on to
    since=2, and never see A (seq 1) that committed a moment later."""
    reader = api.client("admin")
    committing = threading.Event()

    def slow_commit(_connection: Any) -> None:
        if threading.current_thread().name == "slow-writer":
            committing.set()
            time.sleep(1.0)  # between taking a feed number and COMMIT

    event.listen(api.db.engine, "commit", slow_commit)
    try:
        slow = threading.Thread(target=_add_order, args=(api,), name="slow-writer")
        slow.start()
        # A has its feed number before B starts (a fixed pause here let a slow
        # machine start B first, and the test then checked nothing)
        assert committing.wait(timeout=30)
        fast = threading.Thread(target=_add_order, args=(api,))
        fast.start()
        seen: list[int] = []
        since = 0
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            page = reader.get("/api/changes", params={"since": since}).json()
            seen += [item["seq"] for item in page["items"]]
            since = page["next_since"]
            time.sleep(0.05)
        slow.join()
        fast.join()
    finally:
        event.remove(api.db.engine, "commit", slow_commit)
    assert len(seen) == 2, seen


def test_the_ordering_physician_sees_report_entries_only_once_signed(api: ApiServer) -> None:
    physician = api.client("referring_physician")
    radiologist = api.user("radiologist")
    order_id = _add_order(api, owner=physician.username)  # type: ignore[attr-defined]
    with api.db.unit_of_work() as session:
        patient = Patient(patient_id="P1", patient_name="DOE^JANE")
        session.add(patient)
        session.flush()
        study = DicomStudy(
            study_instance_uid=generate_uid(), patient_pk=patient.id, imaging_request_id=order_id
        )
        session.add(study)
        session.flush()
        report = Report(dicom_study_id=study.id, radiologist_id=_user_id(api, radiologist))
        session.add(report)
        session.flush()
        report_id = report.id

    def report_entries() -> list[str]:
        items = physician.get("/api/changes", params={"entity": "report"}).json()["items"]
        return [item["payload"]["status"] for item in items]

    assert report_entries() == []  # the draft is not announced to them
    with api.db.unit_of_work() as session:
        stored = session.get(Report, report_id)
        assert stored is not None
        stored.status = "final"
    assert report_entries() == ["final"]


def test_a_client_resuming_from_a_trimmed_part_of_the_feed_is_told_to_reload(
    api: ApiServer,
) -> None:
    client = api.client("scheduler")
    for _ in range(3):
        _add_order(api)
    with api.db.read() as session:
        seqs = list(session.scalars(select(ChangeLogEntry.seq).order_by(ChangeLogEntry.seq)))
    # a trim two days on keeps only the newest entry
    run_change_log_trim(api.db, keep_days=1, now=datetime.now(UTC) + timedelta(days=2))

    gone = client.get("/api/changes", params={"since": seqs[0]})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "gone"
    assert gone.json()["error"]["feed_start"] == seqs[-1]
    # resuming from just before what is left, or from the start, works
    rest = client.get("/api/changes", params={"since": seqs[-1] - 1}).json()
    assert [item["seq"] for item in rest["items"]] == [seqs[-1]]
    assert client.get("/api/changes", params={"since": 0}).status_code == 200

    with httpx.stream(
        "GET",
        f"{api.base_url}/api/events",
        headers={"Authorization": client.headers["Authorization"], "Last-Event-ID": str(seqs[0])},
        timeout=30,
    ) as response:
        lines: list[str] = []
        for line in response.iter_lines():
            lines.append(line)
            if line == f"id: {seqs[-1]}":
                break
    reset = lines.index("event: reset")
    # its id moves the browser's Last-Event-ID past the gap (no reset loop on reconnect)
    assert lines[reset - 1] == f"id: {seqs[-1] - 1}"
    assert json.loads(lines[reset + 1].removeprefix("data: ")) == {"feed_start": seqs[-1]}
    assert lines[-1] == f"id: {seqs[-1]}"
