"""Reports at the service level, without a server, on both databases: who
reads a signed report (the one visibility rule)."""

from __future__ import annotations

import pytest

from dicom_node.db.engine import Database
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import NotFound
from dicom_node.services.reporting.views import get_report, list_reports, report_versions
from tests.integration.reporting_builders import (
    add_user,
    claimed_study,
    signed_report,
)

# --------------------------------------------------------------------------- visibility


def test_the_referrer_of_an_order_reads_its_signed_report_and_no_other_physician_does(
    db: Database,
) -> None:
    author = add_user(db, Role.RADIOLOGIST)
    reviewer = add_user(db, Role.RADIOLOGIST)
    referrer = add_user(db, Role.REFERRING_PHYSICIAN)
    other = add_user(db, Role.REFERRING_PHYSICIAN)
    scheduler = add_user(db, Role.SCHEDULER)
    # booked by a scheduler for the referrer: the referrer did not place it
    study = claimed_study(
        db, author, referring_physician_id=referrer.user_id, requested_by_id=scheduler.user_id
    )
    report_id = signed_report(db, study, author, reviewer)

    with db.unit_of_work() as session:
        read = get_report(session, report_id=report_id, principal=referrer)
        versions = report_versions(session, report_id=report_id, principal=referrer)
        listed = list_reports(session, principal=referrer, offset=0, limit=10)
    assert (read.status, read.impression, read.content_version) == ("final", "Normal.", 2)
    assert [(v.kind, v.version) for v in versions] == [("final", 2)]
    assert [item.id for item in listed.items] == [report_id] and listed.total == 1

    with db.unit_of_work() as session:
        with pytest.raises(NotFound):
            get_report(session, report_id=report_id, principal=other)
        with pytest.raises(NotFound):
            report_versions(session, report_id=report_id, principal=other)
        assert list_reports(session, principal=other, offset=0, limit=10).total == 0
