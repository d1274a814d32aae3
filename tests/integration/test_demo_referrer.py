"""The demo orders are the demo referring physician's: placed by them and linked to
them as the referrer, with their DICOM name (issue 15)."""

from __future__ import annotations

from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import ImagingRequest, User
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.operations.demo import load_demo
from dicom_node.services.workflow.order_referrer import matched_referrer

# who writes the name matters only for a referring physician (they link only themselves)
ADMIN = Principal(user_id=1, username="admin", role=Role.ADMIN)


def test_demo_orders_are_linked_to_the_demo_referring_physician(db: Database) -> None:
    with db.unit_of_work() as session:
        load_demo(session, password="demo password 1", actor=SystemActor.CLI)
    with db.read() as session:
        referrer = session.scalar(select(User).where(User.username == "demo.referrer"))
        assert referrer is not None
        orders = session.scalars(select(ImagingRequest)).all()
        assert orders
        assert {(o.referring_physician_id, o.requested_by_id) for o in orders} == {
            (referrer.id, referrer.id)
        }
        assert {o.referring_physician_name for o in orders} == {"Ferrer^Ray^^Dr"}
        # the name alone would link them too: the DICOM-name path of the rule
        assert matched_referrer(session, "FERRER^RAY^^DR", by=ADMIN) == referrer.id
