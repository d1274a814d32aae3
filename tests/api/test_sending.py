"""POST /api/studies/{id}/send and GET /api/peers: a study's instances sent by
C-STORE to a configured peer (a real pynetdicom storage SCP on the loopback),
the permission from the one table, the Export audit event, and the errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance, DicomStudy
from dicom_node.domain.aetitle import Peer
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from dicom_node.domain.transcode import Transcoder
from dicom_node.scp.send import TIME_LIMIT_REACHED, StudySender
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.builders import Destination, add_user, compressed_study, stored_dataset_bytes
from tests.conftest import node_settings
from tests.support import free_port

PEER = "DEST"
DOWN = "DOWNPEER"  # configured, nothing listens there
# three instances, two SOP classes, compressed and not
FILES = ["MR_small.dcm", "CT_small.dcm", "MR_small.dcm"]


@pytest.fixture
def destination() -> Iterator[Destination]:
    peer = Destination(None, ae_title=PEER)  # every syntax
    yield peer
    peer.stop()


def peers_of(destination: Destination) -> dict[str, Peer]:
    return {
        PEER: Peer(PEER, "127.0.0.1", destination.port),
        DOWN: Peer(DOWN, "127.0.0.1", free_port()),
    }


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, destination: Destination) -> Settings:
    return node_settings(db_url, tmp_path / "data", peers=peers_of(destination))


def stored_study(api: ApiServer, tmp_path: Path, names: list[str] = FILES) -> tuple[int, set[str]]:
    """A study of pydicom's test files imported into the API's node: its id and
    SOP Instance UIDs."""
    study_uid, by_uid = compressed_study(tmp_path, names)
    files = sorted(tmp_path.glob(f"in-{study_uid}/*.dcm"))
    store = FileStore(api.settings.data_dir, fsync=False)
    summary = import_files(api.db, store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT)
    assert summary.ok, summary.describe()
    with api.db.read() as session:
        study_id = session.scalar(
            select(DicomStudy.id).where(DicomStudy.study_instance_uid == study_uid)
        )
    assert study_id is not None
    return study_id, set(by_uid)


def exports(api: ApiServer, study_id: int) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.action == "instances_exported",
                    AuditEvent.target_id == str(study_id),
                )
                .order_by(AuditEvent.id)
            )
        )


def test_an_admin_sends_a_study_and_the_peer_receives_every_instance(
    api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    study_id, uids = stored_study(api, tmp_path)
    admin = api.client("admin")
    response = admin.post(f"/api/studies/{study_id}/send", json={"peer": PEER})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["instances"], body["completed"], body["failed"]) == (3, 3, 0)
    assert set(destination.received) == uids
    # as a C-MOVE sends them: each in its stored syntax, the stored bytes unchanged
    store = FileStore(api.settings.data_dir, fsync=False)
    with api.db.read() as session:
        stored = session.execute(
            select(
                DicomInstance.sop_instance_uid,
                DicomInstance.transfer_syntax_uid,
                DicomInstance.file_path,
            ).where(DicomInstance.sop_instance_uid.in_(uids))
        ).all()
    for uid, syntax, path in stored:
        received = destination.received[uid]
        assert received.transfer_syntax == syntax
        assert received.raw == stored_dataset_bytes(store.absolute(path))
    [event] = exports(api, study_id)
    assert event.event_code == "110106"
    assert (event.actor, event.actor_role, event.outcome) == (
        admin.username,  # type: ignore[attr-defined]
        "admin",
        "success",
    )
    assert event.details["destination"] == PEER
    assert event.details["counts"]["completed"] == 3
    assert event.study_instance_uid == body["study_instance_uid"]


def test_a_peer_that_refuses_the_instances_is_reported_per_instance(
    api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    study_id, uids = stored_study(api, tmp_path)
    destination.refuse_all = True
    response = api.client("technologist").post(f"/api/studies/{study_id}/send", json={"peer": PEER})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["completed"], body["failed"]) == (0, 3)
    assert {f["sop_instance_uid"] for f in body["failures"]} == uids
    assert {f["reason"] for f in body["failures"]} == {"destination answered 0xA700"}
    [event] = exports(api, study_id)
    assert event.outcome == "serious_failure"


def test_a_peer_that_is_down_is_a_clear_error_and_nothing_is_sent(
    api: ApiServer, tmp_path: Path
) -> None:
    study_id, _ = stored_study(api, tmp_path)
    response = api.client("admin").post(f"/api/studies/{study_id}/send", json={"peer": DOWN})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["message"] == f"{DOWN}: destination unreachable; nothing was sent"
    [event] = exports(api, study_id)
    assert (event.outcome, event.reason) == ("serious_failure", "destination unreachable")
    assert event.details["counts"]["failed"] == 3


def test_a_name_that_is_no_configured_peer_is_refused(api: ApiServer, tmp_path: Path) -> None:
    study_id, _ = stored_study(api, tmp_path)
    admin = api.client("admin")
    response = admin.post(f"/api/studies/{study_id}/send", json={"peer": "ELSEWHERE"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "no configured peer of that AE title"
    assert admin.post("/api/studies/987654/send", json={"peer": PEER}).status_code == 404
    assert exports(api, study_id) == []


def test_a_rejected_study_is_not_sent(
    api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    study_id, _ = stored_study(api, tmp_path)
    admin = api.client("admin")
    rejected = admin.post(f"/api/studies/{study_id}/reject", json={"reason": "wrong patient"})
    assert rejected.status_code == 200, rejected.text
    response = admin.post(f"/api/studies/{study_id}/send", json={"peer": PEER})
    assert response.status_code == 409
    assert destination.received == {}


def test_the_peers_and_the_send_are_for_the_roles_the_table_allows(
    api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    study_id, _ = stored_study(api, tmp_path, ["CT_small.dcm"])
    allowed = ROLE_PERMISSIONS[Permission.STUDIES_SEND]
    assert allowed == {Role.ADMIN, Role.TECHNOLOGIST}
    for role in Role:
        client = api.client(role.value)
        peers = client.get("/api/peers")
        sent = client.post(f"/api/studies/{study_id}/send", json={"peer": PEER})
        if role in allowed:
            assert peers.status_code == 200
            assert [p["ae_title"] for p in peers.json()] == [PEER, DOWN]
            assert sent.status_code == 200, sent.text
        else:
            assert (peers.status_code, sent.status_code) == (403, 403), role
            assert sent.json()["error"]["message"] == f"role {role.value} may not studies:send"
    assert len(exports(api, study_id)) == len(allowed)


def test_what_is_not_sent_within_the_time_limit_fails_with_that_reason(
    api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    study_id, _ = stored_study(api, tmp_path)
    settings = api.settings
    sender = StudySender.from_settings(
        settings, FileStore(settings.data_dir, fsync=False), tls=None
    )
    sender.time_limit = 0
    sent = sender.send(
        api.db,
        Transcoder(max_decoded_bytes=settings.max_transcode_bytes, max_concurrent=1),
        study_id=study_id,
        peer_ae=PEER,
        principal=add_user(api.db, Role.ADMIN),
        source_address=None,
    )
    assert sent.result.counts["failed"] == 3
    assert {reason for _, reason in sent.result.failures} == {TIME_LIMIT_REACHED}
    assert destination.received == {}
    [event] = exports(api, study_id)
    assert event.outcome == "serious_failure"
