"""Process metrics in Prometheus form, served at ``GET /metrics``.

One registry for the node. Counters and histograms are module-level so the SCP
handlers, the scheduler and the API record them without being handed an object.
Label values are fixed vocabularies (outcome names, job ids, query levels),
never peer-supplied strings: a metric label must not carry PHI or grow without
bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES_RECEIVED = Counter(
    "dicom_node_instances_received",
    "C-STORE requests answered with success or a warning (the instance is stored)",
    ["outcome"],
    registry=REGISTRY,
)
INSTANCES_REFUSED = Counter(
    "dicom_node_instances_refused",
    "C-STORE requests answered with a failure status",
    ["reason"],
    registry=REGISTRY,
)
ASSOCIATIONS = Counter(
    "dicom_node_associations",
    "Association requests by result",
    ["result"],
    registry=REGISTRY,
)
ASSOCIATIONS_ACTIVE = Gauge(
    "dicom_node_associations_active",
    "Associations open now",
    registry=REGISTRY,
)
CFIND_SECONDS = Histogram(
    "dicom_node_cfind_seconds",
    "C-FIND request duration, first identifier received to final response",
    ["level"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "dicom_node_job_runs",
    "Scheduled job runs by outcome (ok, failed, skipped: another node held the job)",
    ["job", "outcome"],
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "dicom_node_job_seconds",
    "Scheduled job run duration",
    ["job"],
    registry=REGISTRY,
)


def observe_job_run(job_id: str, outcome: str, seconds: float | None = None) -> None:
    """Count one run of a scheduled job (``outcome``: ok, failed or skipped)."""
    JOB_RUNS.labels(job=job_id, outcome=outcome).inc()
    if seconds is not None:
        JOB_SECONDS.labels(job=job_id).observe(seconds)
