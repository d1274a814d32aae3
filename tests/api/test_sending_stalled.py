"""A send to a peer that accepts the association and then stops reading ends at
the send's time limit (the request answers, the Export event is written), and
while it runs no more than ``max_concurrent_sends`` sends start (503).

The peer is a real pynetdicom storage SCP whose reader stops at the first
P-DATA-TF (its EVT_PDU_RECV handler blocks) with a small receive buffer: the
node's writes fill the socket buffers and its DUL thread blocks in ``send()``.
(``tests/e2e/test_stalled_destination.py``'s peer stalls before the
association is up, in the middle of its A-ASSOCIATE-AC: another stall.)
Before the fix the request never ended: pynetdicom's DIMSE-timeout abort
waited for that blocked thread for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomStudy
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.audit import SystemActor
from dicom_node.scp.send import TIME_LIMIT_REACHED
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.builders import StallingPeer, pydicom_testfile
from tests.conftest import node_settings
from tests.support import wait_for

STALLER = "STALLER"
TIME_LIMIT = 4.0
# the request ends at the time limit; this covers the association, the audit
# and a loaded machine, and is far below "never"
MARGIN = 10.0
# far more than the socket buffers of both ends hold
PIXELS = 4096 * 4096 * 2


@pytest.fixture
def peer() -> Iterator[StallingPeer]:
    stalling = StallingPeer()
    yield stalling
    stalling.close()


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, peer: StallingPeer) -> Settings:
    return node_settings(
        db_url,
        tmp_path / "data",
        peers={STALLER: Peer(STALLER, "127.0.0.1", peer.port)},
        send_time_limit_seconds=TIME_LIMIT,
        # longer than the limit: the send's own deadline is what cuts the
        # stalled peer here (with a shorter one the reaper of scp/transport.py
        # cuts it first, as it does a C-MOVE's: tests/e2e/test_stalled_destination.py)
        dimse_timeout_seconds=30,
        max_concurrent_sends=1,
    )


def big_study(api: ApiServer, tmp_path: Path) -> int:
    """One CT instance of 32 MB of pixel data, imported: the study's id."""
    ds = pydicom.dcmread(pydicom_testfile("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = 4096
    ds.PixelData = bytes(PIXELS)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = FileStore(api.settings.data_dir, fsync=False)
    summary = import_files(api.db, store, [path], policy=IngestPolicy(), actor=SystemActor.IMPORT)
    assert summary.ok, summary.describe()
    with api.db.read() as session:
        study_id = session.scalar(
            select(DicomStudy.id).where(DicomStudy.study_instance_uid == ds.StudyInstanceUID)
        )
    assert study_id is not None
    return study_id


def exports(api: ApiServer, study_id: int) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "instances_exported",
                    AuditEvent.target_id == str(study_id),
                )
            )
        )


def send_in_thread(client: httpx.Client, study_id: int) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def post() -> None:
        answers.append(client.post(f"/api/studies/{study_id}/send", json={"peer": STALLER}))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answers


def test_a_send_to_a_peer_that_stops_reading_ends_at_the_time_limit_and_is_audited(
    api: ApiServer, peer: StallingPeer, tmp_path: Path
) -> None:
    study_id = big_study(api, tmp_path)
    client = api.client("admin")
    started = time.monotonic()
    # the client's own timeout is the test's bound: before the fix it was hit
    sender, answers = send_in_thread(client, study_id)
    sender.join(timeout=TIME_LIMIT + MARGIN)
    assert not sender.is_alive(), "the send never ended"
    assert peer.stalled.is_set()
    [response] = answers
    assert time.monotonic() - started < TIME_LIMIT + MARGIN
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["completed"], body["failed"]) == (0, 1)
    assert [f["reason"] for f in body["failures"]] == [TIME_LIMIT_REACHED]
    [event] = exports(api, study_id)
    assert (event.outcome, event.details["destination"]) == ("serious_failure", STALLER)
    assert event.details["requested_by"] == "api"
    assert event.details["failed_instances"][0]["reason"] == TIME_LIMIT_REACHED


def test_a_send_beyond_max_concurrent_sends_is_answered_503_with_retry_after(
    api: ApiServer, peer: StallingPeer, tmp_path: Path
) -> None:
    study_id = big_study(api, tmp_path)
    client = api.client("admin")
    first, answers = send_in_thread(client, study_id)
    assert wait_for(peer.stalled.is_set, timeout=TIME_LIMIT)  # the first send holds its slot
    second = api.client("technologist").post(
        f"/api/studies/{study_id}/send", json={"peer": STALLER}
    )
    assert second.status_code == 503, second.text
    assert second.headers["Retry-After"] == "60"
    error = second.json()["error"]
    assert (error["status"], error["code"]) == (503, "service_unavailable")
    assert "already sending" in error["message"]
    first.join(timeout=TIME_LIMIT + MARGIN)
    assert not first.is_alive(), "the first send never ended"
    assert answers[0].status_code == 200
    # the refused send was not audited: it did nothing
    assert len(exports(api, study_id)) == 1
    # and the slot is free again once the first has ended
    third = client.post(f"/api/studies/{study_id}/send", json={"peer": STALLER})
    assert third.status_code == 200, third.text
