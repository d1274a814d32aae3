"""GET /api/scheduled-steps: the Modality Worklist's scheduled steps over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.node import Node
from tests.api.conftest import ApiServer
from tests.api.test_reconciliation import SLOT, scheduled_order
from tests.builders import user_id


def test_the_steps_a_modality_would_get_with_their_order(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler, patient_id="MWL1")
    requested = scheduler.post(
        "/api/orders",
        json={
            "patient_id": "MWL2",
            "patient_name": "ROE^RICHARD",
            "requested_modality": "CT",
            "study_description": "CT HEAD",
        },
    )
    assert requested.status_code == 201, requested.text
    day = datetime.fromisoformat(SLOT).astimezone().date().isoformat()  # the node's local day

    answer = scheduler.get(
        "/api/scheduled-steps",
        params={"modality": "CT", "station_ae_title": "CT_1", "date_from": day, "date_to": day},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["truncated"] is False
    # only scheduled orders: the requested one is no worklist entry
    assert [s["order_id"] for s in body["items"]] == [order["id"]]
    found = body["items"][0]
    assert datetime.fromisoformat(found["scheduled_at"]) == datetime.fromisoformat(SLOT)
    top, step = found["attributes"], found["step"]
    assert top["AccessionNumber"] == order["accession_number"]
    assert top["StudyInstanceUID"] == order["study_instance_uid"]
    assert top["RequestedProcedureID"] == order["requested_procedure_id"]
    assert top["PatientID"] == "MWL1" and top["PatientName"] == "DOE^JANE"
    assert top["RequestedProcedurePriority"] == "HIGH"  # urgent
    assert step["ScheduledStationAETitle"] == "CT_1"
    assert step["Modality"] == "CT"
    assert step["ScheduledProcedureStepID"] == order["scheduled_procedure_step_id"]
    assert step["ScheduledProcedureStepStartDate"] == day.replace("-", "")
    assert step["ScheduledProcedureStepStatus"] == "SCHEDULED"

    # other keys match nothing
    for params in ({"modality": "MR"}, {"station_ae_title": "MR_1"}, {"date_from": "2030-01-01"}):
        other = scheduler.get("/api/scheduled-steps", params=params)
        assert other.status_code == 200 and other.json()["items"] == [], params
    # audited as the worklist's Query, with the user as the actor
    with api.db.read() as session:
        queries = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "query").order_by(AuditEvent.id)
        ).all()
    assert queries and queries[-1].details["level"] == "WORKLIST"  # type: ignore[index]


def test_odd_dates_bad_keys_and_a_referrer_sees_only_their_orders(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    referrer = api.client("referring_physician")
    theirs = scheduled_order(
        api, scheduler, patient_id="MWL4", referring_physician_id=user_id(api, referrer.username)
    )
    scheduled_order(api, scheduler, patient_id="MWL3")
    reversed_range = scheduler.get(
        "/api/scheduled-steps", params={"date_from": "2026-02-02", "date_to": "2026-02-01"}
    )
    assert reversed_range.status_code == 200 and reversed_range.json()["items"] == []
    # a year a DICOM date cannot hold is the first or last one it can
    early = scheduler.get("/api/scheduled-steps", params={"date_from": "0259-10-25"})
    assert early.status_code == 200 and len(early.json()["items"]) == 2
    assert scheduler.get("/api/scheduled-steps", params={"modality": "XX"}).status_code == 422
    # a referring physician reads orders but not another physician's patients
    answer = referrer.get("/api/scheduled-steps")
    assert answer.status_code == 200
    assert [s["order_id"] for s in answer.json()["items"]] == [theirs["id"]]
    assert len(scheduler.get("/api/scheduled-steps").json()["items"]) == 2


def test_a_referrers_page_holds_their_own_steps_however_many_others_come_first(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    referrer = api.client("referring_physician")
    # the same start, created first: other physicians' steps come first in start order
    others = [scheduled_order(api, scheduler, patient_id=f"OTHER{n}") for n in range(3)]
    referrer_id = user_id(api, referrer.username)
    theirs = [
        scheduled_order(api, scheduler, patient_id=f"MINE{n}", referring_physician_id=referrer_id)
        for n in range(2)
    ]
    everything = scheduler.get("/api/scheduled-steps", params={"limit": 3}).json()
    assert [s["order_id"] for s in everything["items"]] == [o["id"] for o in others]
    assert everything["truncated"] is True

    # the visibility rule is in the query: a full page of theirs, and nothing
    # says other orders exist when theirs all fit
    page = referrer.get("/api/scheduled-steps", params={"limit": 2})
    assert page.status_code == 200, page.text
    assert [s["order_id"] for s in page.json()["items"]] == [o["id"] for o in theirs]
    assert page.json()["truncated"] is False
    first = referrer.get("/api/scheduled-steps", params={"limit": 1}).json()
    assert [s["order_id"] for s in first["items"]] == [theirs[0]["id"]]
    assert first["truncated"] is True  # their second step is left


def test_the_query_is_audited_as_the_user_and_a_modalitys_c_find_as_its_peer(
    api: ApiServer, make_node: Callable[..., Node]
) -> None:
    scheduler = api.client("scheduler")
    scheduled_order(api, scheduler, patient_id="MWL5")
    assert scheduler.get("/api/scheduled-steps", params={"modality": "CT"}).status_code == 200
    by_user = _last_worklist_query(api)
    assert by_user.actor == scheduler.username
    assert by_user.actor_user_id == user_id(api, scheduler.username)
    assert by_user.actor_role == "scheduler"
    assert by_user.details["keys"] == {"ScheduledProcedureStepSequence.Modality": "CT"}  # type: ignore[index]

    # the DICOM path of the same service still names the peer, and no user
    node = make_node()  # on the API's database
    ae = AE(ae_title="MWL_PEER")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.AccessionNumber = ""
    item = Dataset()
    item.Modality = "CT"
    identifier.ScheduledProcedureStepSequence = [item]
    try:
        statuses = [
            int(s.Status)
            for s, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind)
            if s
        ]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0x0000]
    by_peer = _last_worklist_query(api)
    assert by_peer.id > by_user.id
    assert (by_peer.actor, by_peer.actor_user_id, by_peer.actor_role) == ("MWL_PEER", None, None)
    assert (by_peer.source_address or "").startswith("127.0.0.1:")


def _last_worklist_query(api: ApiServer) -> AuditEvent:
    with api.db.read() as session:
        found = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "query", AuditEvent.target_class == "WORKLIST")
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).first()
    assert found is not None
    return found
