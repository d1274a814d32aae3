"""Process metrics in Prometheus form, served at ``GET /metrics``.

One registry for the node. Counters and histograms are module-level so the SCP
handlers, the scheduler and the API record them without being handed an object.
Label values are fixed vocabularies (outcome names, job ids, query levels),
never peer-supplied strings: a metric label must not carry PHI or grow without
bound.

Queue sizes are not counted as they change: ``QueueCollector`` reads them from
the database when Prometheus scrapes, so every node process sharing a database
reports the same truth.

DICOM worker processes (``dicom_workers`` > 1) record into prometheus_client's
multiprocess files (``<data_dir>/run/metrics/<host>-<pid>``, emptied when the pool starts):
the pool starts each worker with ``PROMETHEUS_MULTIPROC_DIR`` set, and the main
process adds the workers' values to its own at scrape time (``render``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakSet

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, WorklistItem
from dicom_node.domain.enums import OPEN_WORKLIST_STATUSES, MetadataStatus

log = logging.getLogger("dicom_node.metrics")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# this node process's part of the worker metrics directory name
_RUN_ID = uuid.uuid4().hex[:8]
STALE_METRICS_SECONDS = 86_400
# the Prometheus text format every Prometheus version reads
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

# --- fixed label vocabularies ---------------------------------------------------
# C-STORE answered with success: the instance is in the store (ingest's StoreOutcome)
STORE_RECEIVED = ("stored", "duplicate", "kept_existing", "replaced")
# C-STORE answered with a failure: mismatch (dataset contradicts the command, A900),
# rejected (cannot be indexed, C000), failed (disk or database, A700), too_large
# (over max_dataset_bytes, A700), error (the handler raised; pynetdicom answered C211)
STORE_REFUSED = ("mismatch", "rejected", "failed", "too_large", "error")
ASSOCIATION_RESULTS = ("accepted", "rejected")
FIND_LEVELS = ("patient", "study", "series", "image", "worklist", "unknown")
# the stages of one C-STORE, in order (docs/ingest.md#where-the-time-goes):
# receive (first P-DATA of the data set to its last), header (the indexed
# elements read), write (the data set's bytes on disk, unsynced), sync (the file
# durable), index (queued for and committed by the index writer), respond (the
# C-STORE-RSP handed to pynetdicom)
INGEST_STAGES = ("receive", "header", "write", "sync", "index", "respond")
# what an HTTP request was for, told from its method and path (api/http_metrics.py):
# the four DICOMweb services apart, the live event stream apart from the rest of
# the API (it lasts as long as the client stays), the browser pages (api/pages/)
# with their static files, then the node's other answers
HTTP_SERVICES = (
    "api",
    "events",
    "dicomweb_qido",
    "dicomweb_wado",
    "dicomweb_rendered",
    "dicomweb_stow",
    "metrics",
    "health",
    "docs",
    "pages",
    "other",
)
# the status class of the answer; "error" when the request ended in an exception
# before any status was sent (the client disconnected mid-stream, or a failure
# the error handler answers outside this count)
HTTP_STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")

INSTANCES_RECEIVED = Counter(
    "dicom_node_instances_received",
    "C-STORE requests answered with success (the instance is stored), by outcome",
    ["outcome"],
    registry=REGISTRY,
)
INSTANCES_REFUSED = Counter(
    "dicom_node_instances_refused",
    "C-STORE requests answered with a failure status, by reason",
    ["reason"],
    registry=REGISTRY,
)
ASSOCIATIONS = Counter(
    "dicom_node_associations",
    "Association requests by result (accepted, rejected)",
    ["result"],
    registry=REGISTRY,
)
ASSOCIATIONS_ABORTED = Counter(
    "dicom_node_associations_aborted",
    "Accepted associations that ended by an abort (either side, or a dropped "
    "connection) instead of a release",
    registry=REGISTRY,
)
ASSOCIATIONS_ACTIVE = Gauge(
    "dicom_node_associations_active",
    "Associations open now",
    registry=REGISTRY,
    # worker processes: the sum over the workers alive
    multiprocess_mode="livesum",
)
CFIND_SECONDS = Histogram(
    "dicom_node_cfind_seconds",
    "C-FIND request duration, identifier received to final response, by query level",
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

# A Summary, not a Histogram: its _sum/_count per stage is what `bench/ingest.py
# --profile` divides, and it costs two counter writes per observation (this is
# on the per-instance hot path)
INGEST_STAGE_SECONDS = Summary(
    "dicom_node_ingest_stage_seconds",
    "Time spent per C-STORE in each ingest stage (see INGEST_STAGES)",
    ["stage"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "dicom_node_http_requests",
    "HTTP requests by service (see HTTP_SERVICES) and status class, counted when they end",
    ["service", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "dicom_node_http_request_seconds",
    "HTTP request duration, request received to the last byte of the answer sent, "
    "by service (the live event stream is not timed: it lasts as long as its client)",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
HTTP_RESPONSE_BYTES = Counter(
    "dicom_node_http_response_bytes",
    "Bytes of HTTP answer bodies sent, by service (WADO-RS throughput)",
    ["service"],
    registry=REGISTRY,
)

# every series of a fixed vocabulary exists from the start at 0, so a rate() over
# the first refusal sees it rise instead of appear
for _outcome in STORE_RECEIVED:
    INSTANCES_RECEIVED.labels(outcome=_outcome)
for _reason in STORE_REFUSED:
    INSTANCES_REFUSED.labels(reason=_reason)
for _result in ASSOCIATION_RESULTS:
    ASSOCIATIONS.labels(result=_result)
for _service in HTTP_SERVICES:
    HTTP_RESPONSE_BYTES.labels(service=_service)
    for _status in HTTP_STATUS_CLASSES:
        HTTP_REQUESTS.labels(service=_service, status=_status)
_STAGE_SUMMARIES = {stage: INGEST_STAGE_SECONDS.labels(stage=stage) for stage in INGEST_STAGES}


def observe_job_run(job_id: str, outcome: str, seconds: float | None = None) -> None:
    """Count one run of a scheduled job (``outcome``: ok, failed, skipped or
    cancelled: stopped by the node's shutdown)."""
    JOB_RUNS.labels(job=job_id, outcome=outcome).inc()
    if seconds is not None:
        JOB_SECONDS.labels(job=job_id).observe(seconds)


def observe_store(outcome: str) -> None:
    """Count one C-STORE by its ingest outcome (a StoreOutcome value, or "error")."""
    if outcome in STORE_RECEIVED:
        INSTANCES_RECEIVED.labels(outcome=outcome).inc()
    else:
        INSTANCES_REFUSED.labels(reason=outcome if outcome in STORE_REFUSED else "error").inc()


def observe_ingest_stage(stage: str, seconds: float) -> None:
    """Time spent by one C-STORE in one of INGEST_STAGES (an unknown stage is a
    programming error: KeyError)."""
    _STAGE_SUMMARIES[stage].observe(seconds)


def observe_find(level: str, seconds: float) -> None:
    CFIND_SECONDS.labels(level=level if level in FIND_LEVELS else "unknown").observe(seconds)


# --- worker processes -------------------------------------------------------------


def multiprocess_dir(data_dir: Path) -> Path:
    """Where this node's DICOM worker processes keep their metric files.

    One directory per node process (host name, pid and a random part, since
    containers often share a host name and all run as pid 1): nodes of a cluster
    share the data dir, and one node starting must not wipe, or add in, another's
    counts.
    """
    return data_dir / "run" / "metrics" / f"{socket.gethostname()}-{os.getpid()}-{_RUN_ID}"


def reset_multiprocess_dir(path: Path) -> None:
    """Empty the directory (files of an earlier run would add old counts to new
    ones) and drop other node processes' directories nothing wrote to for a day.

    Only age decides: a pid says nothing across containers (each may be pid 1,
    or another container's live pid may be free here). A leftover only costs
    disk space meanwhile: each node reads only its own directory.
    """
    shutil.rmtree(path, ignore_errors=True)
    stale_before = time.time() - STALE_METRICS_SECONDS
    for sibling in path.parent.iterdir() if path.parent.is_dir() else ():
        if sibling.is_dir() and _newest_write(sibling) < stale_before:
            shutil.rmtree(sibling, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def _newest_write(directory: Path) -> float:
    try:
        return max(
            [directory.stat().st_mtime, *(entry.stat().st_mtime for entry in directory.iterdir())]
        )
    except OSError:  # removed meanwhile, by the node that owned it
        return time.time()


def worker_exited(path: Path, pid: int) -> None:
    """Drop a dead worker's gauges (its counters stay: what it counted happened)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


# --- queue sizes, read at scrape time ---------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSizes:
    # (queue_type, status, priority) -> open worklist items (pending or claimed)
    worklist: dict[tuple[str, str, str], int]
    # of those, past their due time: (queue_type, priority) -> items
    overdue: dict[tuple[str, str], int]
    # metadata_status -> studies not yet matched to an order (pending, unmatched, conflict)
    reconciliation: dict[str, int]


_TO_RECONCILE = (
    MetadataStatus.PENDING.value,
    MetadataStatus.UNMATCHED.value,
    MetadataStatus.CONFLICT.value,
)


def read_queue_sizes(db: Database) -> QueueSizes:
    """Two GROUP BY counts over indexed columns, in one read transaction."""
    with db.read() as session:
        rows = session.execute(
            select(
                WorklistItem.queue_type,
                WorklistItem.status,
                WorklistItem.priority,
                WorklistItem.overdue,
                func.count(),
            )
            .where(WorklistItem.status.in_(OPEN_WORKLIST_STATUSES))
            .group_by(
                WorklistItem.queue_type,
                WorklistItem.status,
                WorklistItem.priority,
                WorklistItem.overdue,
            )
        ).all()
        studies = session.execute(
            select(DicomStudy.metadata_status, func.count())
            .where(DicomStudy.metadata_status.in_(_TO_RECONCILE))
            .group_by(DicomStudy.metadata_status)
        ).all()
    worklist: dict[tuple[str, str, str], int] = {}
    overdue: dict[tuple[str, str], int] = {}
    for queue, status, priority, is_overdue, count in rows:
        key = (str(queue), str(status), str(priority))
        worklist[key] = worklist.get(key, 0) + int(count)
        if is_overdue:
            late = (str(queue), str(priority))
            overdue[late] = overdue.get(late, 0) + int(count)
    return QueueSizes(
        worklist=worklist,
        overdue=overdue,
        reconciliation={str(status): int(count) for status, count in studies},
    )


class _DatabaseState:
    """Logs a database going away once, not at every scrape (per database: tests
    and tools may hold several in one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: WeakSet[Database] = WeakSet()

    def failed(self, db: Database, exc: Exception) -> None:
        with self._lock:
            first = db not in self._down
            self._down.add(db)
        if first:
            # the exception class only: a driver message may quote a statement's values
            log.warning("metrics: queue sizes unavailable, database error %s", type(exc).__name__)

    def answered(self, db: Database) -> None:
        with self._lock:
            recovered = db in self._down
            self._down.discard(db)
        if recovered:
            log.info("metrics: database answers again")


_DATABASE_STATE = _DatabaseState()


class QueueCollector:
    """Queue sizes for one node: its database and its store's ``tmp/``."""

    def __init__(self, db: Database, temp_dir: Path) -> None:
        self._db = db
        self._temp_dir = temp_dir

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "dicom_node_database_up",
            "1 if the database answered the queue-size read of this scrape, else 0",
        )
        try:
            sizes = read_queue_sizes(self._db)
        except Exception as exc:  # the scrape must go on: up 0 says why queues are missing
            _DATABASE_STATE.failed(self._db, exc)
            up.add_metric([], 0)
            sizes = None
        else:
            _DATABASE_STATE.answered(self._db)
            up.add_metric([], 1)
        yield up
        if sizes is not None:
            yield from _queue_families(sizes)
        temp = GaugeMetricFamily(
            "dicom_node_store_temp_files",
            "Files in the store's tmp/: transfers being written, or leftovers of "
            "interrupted ones (removed by the temp-file sweep)",
        )
        temp.add_metric([], _count_files(self._temp_dir))
        yield temp


def _queue_families(sizes: QueueSizes) -> Iterator[Metric]:
    worklist = GaugeMetricFamily(
        "dicom_node_worklist_open_items",
        "Worklist items pending or claimed, by queue, status and priority",
        labels=["queue", "status", "priority"],
    )
    for (queue, status, priority), count in sorted(sizes.worklist.items()):
        worklist.add_metric([queue, status, priority], count)
    yield worklist
    overdue = GaugeMetricFamily(
        "dicom_node_worklist_overdue_items",
        "Open worklist items flagged overdue by the escalation job, by queue and priority",
        labels=["queue", "priority"],
    )
    for (queue, priority), count in sorted(sizes.overdue.items()):
        overdue.add_metric([queue, priority], count)
    yield overdue
    reconciliation = GaugeMetricFamily(
        "dicom_node_reconciliation_open_studies",
        "Studies not matched to an order yet, by metadata status (pending, unmatched, conflict)",
        labels=["metadata_status"],
    )
    for status in _TO_RECONCILE:
        reconciliation.add_metric([status], sizes.reconciliation.get(status, 0))
    yield reconciliation


def store_temp_dir(data_dir: Path) -> Path:
    """The file store's ``tmp/`` (``FileStore.tmp``), without creating a store."""
    return data_dir / "tmp"


def _count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for entry in entries if entry.is_file(follow_symlinks=False))
    except OSError:
        return 0  # no tmp/ yet: nothing is being written


# --- exposition -------------------------------------------------------------------


class _ProcessMetrics:
    """This process's registry, plus the DICOM workers' files when there are workers."""

    def __init__(self, multiprocess_path: Path | None) -> None:
        self._path = multiprocess_path

    def collect(self) -> Iterable[Metric]:
        own = list(REGISTRY.collect())
        path = self._path
        if path is None or not path.is_dir():
            return own
        collector = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]
        workers: Iterable[Metric] = collector.collect()  # type: ignore[no-untyped-call]
        return merge_families(own, workers)


def merge_families(*sources: Iterable[Metric]) -> list[Metric]:
    """Families of the same name as one: equal series summed.

    Counters, histogram buckets, sums and counts add up across processes, and so
    does the livesum gauge; ``_created`` is kept from the first source that has it.
    """
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in series and sample.name.endswith("_created"):
                    continue
                series[key] = series.get(key, 0.0) + sample.value
    for name, family in merged.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


def render(
    *, db: Database | None, temp_dir: Path | None, multiprocess_path: Path | None = None
) -> bytes:
    """The text exposition of everything: process metrics and, given a database,
    the queue sizes read now."""
    collectors: list[Collector] = [_ProcessMetrics(multiprocess_path)]
    if db is not None and temp_dir is not None:
        collectors.append(QueueCollector(db, temp_dir))
    return generate_latest(_Combined(collectors))


class _Combined:
    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()
