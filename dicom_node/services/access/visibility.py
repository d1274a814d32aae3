"""The one visibility rule: which orders, studies and reports a user may see.

Every role but one sees every record its permissions let it use (the
permission table, ``domain/permissions.py``, decides *what kind* of record).
A referring physician sees only the orders they are the referrer of
(``ImagingRequest.referring_physician_id``: set by the scheduler from the user
list, or matched from the order's DICOM ReferringPhysicianName to the user's
name) or that they placed themselves (``requested_by_id``), with those orders'
studies, images and signed reports, and nothing else: not another physician's
order for the same patient, not a study no order claims.

Every front end asks here (REST, the change feed and its event stream, and
later DICOMweb, GraphQL and the web pages), so the rule is changed in one place.
The change feed records the order behind each entry and applies
``visible_order_ids`` when it is read, so a referrer linked later sees the
order's later changes (db/changes.py).
A record outside the rule is answered as missing (404), never as forbidden: a
referring physician must not learn that another physician's order exists.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, or_, select, true

from dicom_node.db.models import DicomStudy, ImagingRequest
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal


def sees_every_order(principal: Principal) -> bool:
    """True for every role whose view the rule does not narrow."""
    return principal.role is not Role.REFERRING_PHYSICIAN


def order_condition(principal: Principal) -> ColumnElement[bool]:
    """A WHERE condition on ImagingRequest: the orders ``principal`` may see."""
    if sees_every_order(principal):
        return true()
    return or_(
        ImagingRequest.referring_physician_id == principal.user_id,
        ImagingRequest.requested_by_id == principal.user_id,
    )


def visible_order_ids(principal: Principal) -> Select[int]:
    """The ids of the orders ``principal`` may see, as a subquery for IN (...)."""
    return select(ImagingRequest.id).where(order_condition(principal))


def study_condition(principal: Principal) -> ColumnElement[bool]:
    """A WHERE condition on DicomStudy: the studies ``principal`` may see (a
    referring physician: those linked to one of their orders)."""
    if sees_every_order(principal):
        return true()
    return DicomStudy.imaging_request_id.in_(visible_order_ids(principal))


def may_see_order(principal: Principal, order: ImagingRequest) -> bool:
    """The rule for one order already loaded."""
    return sees_every_order(principal) or principal.user_id in (
        order.referring_physician_id,
        order.requested_by_id,
    )
