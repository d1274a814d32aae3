"""The node's job table: every scheduled job is registered with its stable id and
configured interval, and each one runs on a fresh node and logs one line."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from dicom_node.jobs.scheduler import cluster_runner
from dicom_node.node import Node
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset

INTERVALS = {
    "study-stability": ("stability_check_interval_seconds", 7),
    "escalation": ("escalation_interval_seconds", 11.0),
    "stale-orders": ("stale_order_interval_seconds", 13.0),
    "rematch": ("rematch_interval_seconds", 17.0),
    "retention": ("retention_interval_seconds", 19.0),
    "change-log-trim": ("change_log_trim_interval_seconds", 23.0),
    "token-purge": ("token_purge_interval_seconds", 29.0),
    "backup": ("backup_interval_hours", 2.0),
}


def test_every_job_is_scheduled_under_its_stable_id_at_its_configured_interval(
    make_node,  # type: ignore[no-untyped-def]
) -> None:
    node: Node = make_node(**{setting: value for setting, value in INTERVALS.values()})
    assert node._scheduler is not None
    jobs = {job.id: job for job in node._scheduler.get_jobs()}
    assert set(jobs) == {*INTERVALS, "temp-file-sweep"}
    for job_id, (setting, value) in INTERVALS.items():
        seconds = value * 3600 if setting.endswith("_hours") else value
        assert jobs[job_id].trigger.interval.total_seconds() == pytest.approx(seconds), job_id


def test_each_job_runs_on_a_fresh_node_and_logs_one_line(
    make_node,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    node: Node = make_node()
    assert node.db is not None and node.store is not None
    specs = node._jobs(node.db, node.store, threading.Event())
    with caplog.at_level(logging.INFO, logger="dicom_node.jobs"):
        outcomes = {spec.job_id: cluster_runner(spec, None)() for spec in specs}
    assert outcomes == dict.fromkeys(outcomes, "ok")
    # The node's own scheduler runs its jobs too (study-stability every few
    # seconds); only the lines this thread logged belong to the calls above.
    here = threading.get_ident()
    ran = [
        record.getMessage()
        for record in caplog.records
        if " ran: " in record.getMessage() and record.thread == here
    ]
    assert sorted(line.split()[1] for line in ran) == sorted(outcomes)


def test_a_stopping_node_ends_its_backup_between_files_and_leaves_no_copy(
    make_node,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job the scheduler holds gets the event its shutdown sets first, so a
    long backup stops at the next file instead of being abandoned at exit."""
    backups = tmp_path / "backups"
    node: Node = make_node(backup_dir=backups)
    ae = AE("JOBS_SCU")
    ae.add_requested_context(CT_IMAGE_STORAGE)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ct_dataset(study_uid=generate_uid())).Status == 0
    finally:
        assoc.release()
    assert node._scheduler is not None
    node._scheduler.stopping.set()  # the first thing its shutdown does
    with caplog.at_level(logging.INFO, logger="dicom_node.jobs"):
        assert node._scheduler.get_job("backup").func() == "cancelled"
    assert "job backup stopped: the node is stopping: backup cancelled after 0 of 1" in caplog.text
    assert list(backups.iterdir()) == []
