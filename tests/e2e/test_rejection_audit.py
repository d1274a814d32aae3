"""Rejected associations audited in aggregate (issue 13, finding 10): a client
hammering the node with a wrong called AE title no longer writes a row each."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent
from dicom_node.metrics import ASSOCIATIONS
from dicom_node.node import Node
from tests.support import wait_for


def hammer(port: int, count: int, *, calling: str = "HAMMER", called: str = "WRONG_AE") -> int:
    """``count`` association requests one after the other; returns ``count``.

    Every one reaches the node and is rejected there (the called AE title is
    wrong); the client does not always see the A-ASSOCIATE-RJ (it may close
    first), so what is counted is what the node did: the metric, the audit."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    for _ in range(count):
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        assert not assoc.is_established
    return count


def rejections(db_url: str) -> list[AuditEvent]:
    db = Database(db_url)
    try:
        with db.read() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.action == "association_rejected")
                    .order_by(AuditEvent.id)
                )
            )
    finally:
        db.dispose()


def rejected_metric() -> float:
    return float(ASSOCIATIONS.labels(result="rejected")._value.get())


@pytest.fixture(autouse=True)
def quiet_client(caplog: pytest.LogCaptureFixture) -> None:
    # the client side logs each rejection it receives: not what is counted here
    caplog.set_level(logging.CRITICAL, logger="pynetdicom")


def test_a_flood_of_rejected_associations_is_one_event_then_one_count(
    make_node: Callable[..., Node], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node()  # default interval: 60 s
    before = rejected_metric()
    count = 120
    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        hammer(node.dicom_port, count)
        assert wait_for(lambda: rejected_metric() - before == count)
        # the first rejection is audited at once: an operator sees the attack start
        assert wait_for(lambda: len(rejections(db_url)) == 1)
        node.stop()  # the count held back is written when the node stops
    # metrics still count every rejection (above); the audit counts them all too
    first, rest = rejections(db_url)
    assert first.details["count"] == 1
    assert (first.actor, first.target_id, first.reason) == (
        "HAMMER",
        "WRONG_AE",
        "called AE title not recognised",
    )
    assert first.source_address and first.source_address.startswith("127.0.0.1:")
    assert rest.details["count"] == count - 1 and rest.details["aggregated"] is True
    assert (rest.event_code, rest.source_address, rest.actor) == ("110113", "127.0.0.1", "HAMMER")
    assert rest.details["targets"] == {"WRONG_AE": count - 1}
    # the log is rate-limited the same way: not a line per rejection
    lines = [r for r in caplog.records if r.getMessage().startswith("association rejected")]
    assert 1 <= len(lines) <= 4


def test_the_count_of_an_interval_is_written_when_it_ends(
    make_node: Callable[..., Node], db_url: str
) -> None:
    interval = 0.5
    node = make_node(rejected_association_audit_interval_seconds=interval)
    before = rejected_metric()
    started = time.monotonic()
    count = 0
    # keep hammering until an interval's count has been written on its own
    while not any(row.details.get("aggregated") for row in rejections(db_url)):
        count += hammer(node.dicom_port, 10)
        assert time.monotonic() - started < 60
    elapsed = time.monotonic() - started
    assert wait_for(lambda: rejected_metric() - before == count)
    node.stop()
    rows = rejections(db_url)
    # per interval at most the first (at once) and the count of the rest: a peer
    # quiet for a whole interval is forgotten, its next rejection audited at once
    assert len(rows) <= 2 * (1 + math.ceil(elapsed / interval))
    assert len(rows) < count
    assert sum(row.details["count"] for row in rows) == count


def test_worker_processes_write_their_counts_when_the_node_stops(
    make_node: Callable[..., Node], db_url: str
) -> None:
    node = make_node(dicom_workers=2)
    count = hammer(node.dicom_port, 80)
    node.stop()  # SIGTERM to each worker: it flushes before it exits
    rows = rejections(db_url)
    assert len(rows) <= 4  # per worker: the first, then the count
    assert sum(row.details["count"] for row in rows) == count
