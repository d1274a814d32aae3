"""Refused MPPS N-SETs (another AE than the step's creator) in a loop: audited
and logged in aggregate, like the other refusals (issue 13). Each wrote one
audit row and one WARNING line."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydicom.uid import generate_uid

from dicom_node.node import Node
from tests.builders import REFUSED_NOT_AUTHORIZED, Scu, audit_rows, demo

REFUSED = 50


@pytest.fixture(autouse=True)
def quiet_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="pynetdicom")


def test_fifty_refused_n_sets_from_one_ae_are_audited_and_logged_in_aggregate(
    make_node: Callable[..., Node],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = make_node(rejected_association_audit_interval_seconds=600)
    order = demo(node)["DEMOACC0002"]
    uid = generate_uid()
    creator = Scu.open(node, "CT_MAIN_1")
    assert creator.n_create(uid, order) == 0x0000
    creator.close()
    intruder = Scu.open(node, "MR_NORTH_1")
    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        for _ in range(REFUSED):
            assert intruder.n_set(uid, "DISCONTINUED") == REFUSED_NOT_AUTHORIZED
    intruder.close()
    lines = [r.getMessage() for r in caplog.records if "MPPS N-SET" in r.getMessage()]
    assert len(lines) == 1, lines  # the rest counted, within the 10 s window

    # the first at once, with what is known of it
    (first,) = audit_rows(db_url, "mpps_set_refused")
    assert (first.actor, first.target_id, first.details["count"]) == ("MR_NORTH_1", uid, 1)
    node.stop()  # writes the counts still held
    rows = audit_rows(db_url, "mpps_set_refused")
    assert len(rows) == 2
    assert sum(int(row.details["count"]) for row in rows) == REFUSED
    aggregated = rows[1]
    assert aggregated.details["aggregated"] is True
    assert aggregated.details["calling_ae_titles"] == {"MR_NORTH_1": REFUSED - 1}
    assert aggregated.details["targets"] == {uid: REFUSED - 1}
