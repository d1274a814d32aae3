"""Each committed change of an entity is announced once in the change feed (issue 15:
matching a study announced each order update twice)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.db.models import ChangeLogEntry, ImagingCenter, ImagingRequest, Modality
from dicom_node.services.ingest.instances import IngestPolicy, Source, store_instance
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.dicomfiles import ct_dataset, to_bytes


def test_matching_a_study_announces_the_order_update_once(api: ApiServer, tmp_path: Path) -> None:
    admin = api.client("admin")
    with api.db.unit_of_work() as session:
        center = ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        modality = Modality(
            imaging_center_id=center.id, name="CT", type="CT", dicom_ae_title="CTONE"
        )
        session.add(modality)
        session.flush()
        modality_id = modality.id
    order = admin.post(
        "/api/orders",
        json={
            "patient_id": "PONCE",
            "patient_name": "ONCE^ANNA",
            "requested_modality": "CT",
            "study_description": "CT head",
        },
    ).json()
    booked = admin.post(
        f"/api/orders/{order['id']}/schedule",
        json={
            "modality_id": modality_id,
            "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        },
    ).json()
    since = admin.get("/api/changes").json()["latest"]
    store_instance(
        api.db,
        FileStore(tmp_path / "store", fsync=False),
        part10=to_bytes(
            ct_dataset(
                study_uid=booked["study_instance_uid"] or generate_uid(),
                patient_id="PONCE",
                patient_name="ONCE^ANNA",
                accession=booked["accession_number"],
            )
        ),
        source=Source(calling_ae_title="CTONE", address="127.0.0.1:1"),
        policy=IngestPolicy(duplicate_policy="keep"),
    )
    items = admin.get("/api/changes", params={"since": since}).json()["items"]
    entries = Counter((i["entity"], i["entity_id"]) for i in items)
    assert entries[("order", order["id"])] == 1, items
    assert all(count == 1 for count in entries.values()), items
    (announced,) = [i for i in items if i["entity"] == "order"]
    assert announced["payload"]["status"] == "in_progress"


def _entries(api: ApiServer, since: int) -> list[tuple[str, int, str, dict[str, object]]]:
    with api.db.read() as session:
        rows = session.scalars(
            select(ChangeLogEntry).where(ChangeLogEntry.seq > since).order_by(ChangeLogEntry.seq)
        ).all()
        return [(r.entity, r.entity_id, r.action, r.payload) for r in rows]


def _new_order() -> ImagingRequest:
    return ImagingRequest(patient_id="P9", patient_name="NINE^NINA", requested_modality="CT")


def test_a_row_created_and_changed_in_one_transaction_is_one_created_entry_with_its_last_state(
    api: ApiServer,
) -> None:
    with api.db.unit_of_work() as session:
        order = _new_order()
        session.add(order)
        session.flush()
        order.status = "scheduled"
        session.flush()
        order.priority = "stat"
        order_id = order.id
    assert _entries(api, 0) == [
        (
            "order",
            order_id,
            "created",
            {"status": "scheduled", "priority": "stat", "scheduled_at": None},
        )
    ]
    with api.db.unit_of_work() as session:
        order = session.get(ImagingRequest, order_id)
        assert order is not None
        order.status = "in_progress"
        session.flush()
        order.status = "performed"
    (entry,) = _entries(api, 1)
    assert entry[2:] == (
        "updated",
        {"status": "performed", "priority": "stat", "scheduled_at": None},
    )


def test_a_row_created_and_deleted_in_one_transaction_is_not_announced(api: ApiServer) -> None:
    with api.db.unit_of_work() as session:
        order = _new_order()
        session.add(order)
        session.flush()
        session.delete(order)
        session.flush()
        kept = _new_order()
        session.add(kept)
        session.flush()
        kept_id = kept.id
    assert [(e[0], e[1], e[2]) for e in _entries(api, 0)] == [("order", kept_id, "created")]
