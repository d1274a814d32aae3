"""GET /api/scheduled-steps: the Modality Worklist's scheduled steps over HTTP."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from dicom_node.db.models import AuditEvent
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
