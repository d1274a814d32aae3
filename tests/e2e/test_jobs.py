"""The node's job table: every scheduled job is registered with its stable id and
configured interval, and each one runs on a fresh node and logs one line."""

from __future__ import annotations

import logging

import pytest

from dicom_node.jobs.scheduler import cluster_runner
from dicom_node.node import Node

INTERVALS = {
    "study-stability": ("stability_check_interval_seconds", 7),
    "escalation": ("escalation_interval_seconds", 11.0),
    "stale-orders": ("stale_order_interval_seconds", 13.0),
    "rematch": ("rematch_interval_seconds", 17.0),
    "retention": ("retention_interval_seconds", 19.0),
    "change-log-trim": ("change_log_trim_interval_seconds", 23.0),
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
    specs = node._jobs(node.db, node.store)
    with caplog.at_level(logging.INFO, logger="dicom_node.jobs"):
        outcomes = {spec.job_id: cluster_runner(spec, None)() for spec in specs}
    assert outcomes == dict.fromkeys(outcomes, "ok")
    ran = [record.getMessage() for record in caplog.records if " ran: " in record.getMessage()]
    assert sorted(line.split()[1] for line in ran) == sorted(outcomes)
