"""The order's referring physician as a user (issue 15): chosen from the user list
or matched from ReferringPhysicianName, and the one visibility rule following it
through orders, studies and the change feed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomStudy, User
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.enums import CompletenessEvidence
from dicom_node.domain.matching import SlaPolicy
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.workflow.completeness import complete_study
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes


def _id(api: ApiServer, username: str) -> int:
    with api.db.read() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found


def _order(client: httpx.Client, **fields: Any) -> httpx.Response:
    body = {
        "patient_id": "PREF",
        "patient_name": "REFER^RITA",
        "requested_modality": "CT",
        "study_description": "CT chest",
    } | fields
    return client.post("/api/orders", json=body)


def test_an_order_booked_for_a_chosen_physician_is_theirs_to_read_and_no_one_elses(
    api: ApiServer,
) -> None:
    scheduler = api.client("scheduler")
    x = api.client("referring_physician", display_name="Xavier^Xena")
    y = api.client("referring_physician", display_name="Young^Yuri")
    x_id = _id(api, x.username)  # type: ignore[attr-defined]
    created = _order(scheduler, referring_physician_id=x_id)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["referring_physician_id"] == x_id
    assert order["referring_physician_name"] == "Xavier^Xena"  # filled from the user
    assert order["requested_by_id"] == _id(api, scheduler.username)  # type: ignore[attr-defined]

    assert x.get(f"/api/orders/{order['id']}").status_code == 200
    assert [o["id"] for o in x.get("/api/orders").json()["items"]] == [order["id"]]
    assert y.get(f"/api/orders/{order['id']}").status_code == 404
    assert y.get("/api/orders").json()["items"] == []
    feed_x = x.get("/api/changes").json()["items"]
    assert [(i["entity"], i["entity_id"]) for i in feed_x] == [("order", order["id"])]
    assert y.get("/api/changes").json()["items"] == []

    listed = scheduler.get("/api/orders", params={"referring_physician_id": x_id}).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    assert (
        scheduler.get(
            "/api/orders",
            params={"referring_physician_id": _id(api, y.username)},  # type: ignore[attr-defined]
        ).json()["items"]
        == []
    )

    # a physician who only receives the order reads it, does not change it
    assert x.patch(f"/api/orders/{order['id']}", json={"priority": "stat"}).status_code == 403
    cancel = x.post(f"/api/orders/{order['id']}/cancel", json={"reason": "not mine to cancel"})
    assert cancel.status_code == 403


def test_the_chosen_user_must_be_an_active_referring_physician(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    radiologist = api.user("radiologist")
    retired = api.user("referring_physician")
    with api.db.unit_of_work() as session:
        user = session.scalar(select(User).where(User.username == retired))
        assert user is not None
        user.is_active = False
    for user_id in (_id(api, radiologist), _id(api, retired), 999_999):
        response = _order(scheduler, referring_physician_id=user_id)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "referring_physician_id"


def test_a_referring_physician_names_no_one_else_as_the_referrer(api: ApiServer) -> None:
    mine = api.client("referring_physician")
    other = api.user("referring_physician")
    assert _order(mine, referring_physician_id=_id(api, other)).status_code == 403
    own = _order(mine, referring_physician_id=_id(api, mine.username))  # type: ignore[attr-defined]
    assert own.status_code == 201, own.text


def test_a_referring_physician_name_matching_one_user_links_that_user(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    x = api.client("referring_physician", display_name="Xavier^Xena")
    x_id = _id(api, x.username)  # type: ignore[attr-defined]
    # the PN rule: case-insensitive, trailing empty components ignored
    linked = _order(scheduler, referring_physician_name="XAVIER^XENA^^").json()
    assert linked["referring_physician_id"] == x_id
    assert x.get(f"/api/orders/{linked['id']}").status_code == 200
    unknown = _order(scheduler, referring_physician_name="Nobody^Known", patient_id="P2").json()
    assert unknown["referring_physician_id"] is None
    # a name two physicians share links neither: a guess would show the wrong one
    api.user("referring_physician", display_name="xavier^xena")
    twice = _order(scheduler, referring_physician_name="Xavier^Xena", patient_id="P3").json()
    assert twice["referring_physician_id"] is None
    assert x.get(f"/api/orders/{twice['id']}").status_code == 404


def test_a_referrer_linked_later_sees_the_order_and_its_later_changes(api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    x = api.client("referring_physician", display_name="Xavier^Xena")
    x_id = _id(api, x.username)  # type: ignore[attr-defined]
    order = _order(scheduler).json()
    assert order["referring_physician_id"] is None
    assert x.get(f"/api/orders/{order['id']}").status_code == 404
    assert x.get("/api/changes").json()["items"] == []

    edited = scheduler.patch(f"/api/orders/{order['id']}", json={"referring_physician_id": x_id})
    assert edited.status_code == 200, edited.text
    assert edited.json()["referring_physician_name"] == "Xavier^Xena"
    assert x.get(f"/api/orders/{order['id']}").status_code == 200
    scheduler.patch(f"/api/orders/{order['id']}", json={"priority": "urgent"})
    feed = x.get("/api/changes").json()["items"]
    assert [i["payload"]["priority"] for i in feed if i["entity"] == "order"][-1] == "urgent"
    with api.db.read() as session:
        (event,) = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "order_updated", AuditEvent.target_id == str(order["id"])
            )
        ).all()[:1]
    assert event.details["after"]["referring_physician_id"] == x_id

    # a new name alone re-links by the name; null unlinks
    renamed = scheduler.patch(
        f"/api/orders/{order['id']}", json={"referring_physician_name": "Other^Doc"}
    ).json()
    assert renamed["referring_physician_id"] is None
    assert x.get(f"/api/orders/{order['id']}").status_code == 404
    relinked = scheduler.patch(
        f"/api/orders/{order['id']}", json={"referring_physician_name": "xavier^xena"}
    ).json()
    assert relinked["referring_physician_id"] == x_id
    unlinked = scheduler.patch(
        f"/api/orders/{order['id']}", json={"referring_physician_id": None}
    ).json()
    assert unlinked["referring_physician_id"] is None


def test_a_referring_physician_cannot_make_a_colleague_the_referrer_by_name(
    api: ApiServer,
) -> None:
    """The name path does not do what the id path refuses (403): a colleague
    named by a referring physician is not linked and does not see the order."""
    x = api.client("referring_physician", display_name="Xavier^Xena")
    y = api.client("referring_physician", display_name="Young^Yuri")
    y_id = _id(api, y.username)  # type: ignore[attr-defined]
    assert _order(x, referring_physician_id=y_id).status_code == 403
    by_name = _order(x, patient_id="P2", referring_physician_name="Young^Yuri")
    assert by_name.status_code == 201, by_name.text
    assert by_name.json()["referring_physician_id"] is None
    assert y.get(f"/api/orders/{by_name.json()['id']}").status_code == 404
    own = _order(x, patient_id="P3").json()
    renamed = x.patch(f"/api/orders/{own['id']}", json={"referring_physician_name": "YOUNG^YURI"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["referring_physician_id"] is None
    assert y.get(f"/api/orders/{own['id']}").status_code == 404
    # their own name links themselves, as the id would
    x_id = _id(api, x.username)  # type: ignore[attr-defined]
    mine = _order(x, patient_id="P4", referring_physician_name="XAVIER^XENA")
    assert mine.json()["referring_physician_id"] == x_id


def test_an_order_made_from_a_study_is_the_referrer_of_its_dicom_name(
    api: ApiServer, tmp_path: Path
) -> None:
    """Reconciliation's create-order links the physician the study's
    ReferringPhysicianName names, as booking an order with that name does."""
    store = FileStore(tmp_path / "store", fsync=False)
    scheduler = api.client("scheduler")
    x = api.client("referring_physician", display_name="Xavier^Xena")
    x_id = _id(api, x.username)  # type: ignore[attr-defined]
    uid = generate_uid()
    image = ct_dataset(study_uid=uid, patient_id="WALKIN", accession="ACC1")
    image.ReferringPhysicianName = "XAVIER^XENA"
    result = store_instance(
        api.db,
        store,
        part10=to_bytes(image),
        source=Source(calling_ae_title="CT_MAIN_1"),
        policy=IngestPolicy(),
    )
    assert result.outcome is StoreOutcome.STORED
    with api.db.unit_of_work() as session:
        study = session.scalars(
            select(DicomStudy).where(DicomStudy.study_instance_uid == uid)
        ).one()
        study_id = study.id
        complete_study(
            session,
            study,
            evidence=CompletenessEvidence.MANUAL,
            now=datetime.now(UTC),
            sla=SlaPolicy(),
            actor=Actor.system(SystemActor.CLI),
        )
    made = scheduler.post(
        f"/api/reconciliation/{study_id}/create-order", json={"reason": "walk-in"}
    )
    assert made.status_code == 201, made.text
    order = made.json()["order"]
    assert order["referring_physician_id"] == x_id
    assert x.get(f"/api/orders/{order['id']}").status_code == 200
    assert x.get(f"/api/studies/{study_id}").status_code == 200
