"""Several nodes, one PostgreSQL, one storage directory: real `dicom-node serve`
processes sharing a real PostgreSQL database and data dir (PostgreSQL only:
SQLite is one node per database file)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import func, select, text

from dicom_node.db import notify
from dicom_node.db.engine import Database
from dicom_node.db.models import (
    ChangeLogEntry,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    Patient,
)
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.part10 import dataset_offset
from dicom_node.services.access.users import create_user
from dicom_node.storage import FileStore
from tests.conftest import PG_TEMPLATE, _new_postgres_database
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset
from tests.support import Served, wait_for

PASSWORD = "correct horse battery"
# the nodes hash passwords cheaply too: the tests sign users in
CHEAP_HASHING = {
    "password_hash_time_cost": "1",
    "password_hash_memory_kib": "1024",
    "password_hash_parallelism": "1",
}
SUCCESS = 0x0000


@dataclass
class Member:
    served: Served
    dicom_port: int
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Cluster:
    url: str
    data_dir: Path
    start: Callable[..., Member]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, served: list[Served]) -> Cluster:
    """``cluster.start(**settings)`` starts one more node on the shared database
    (migrated once, as `dicom-node db upgrade` would) and the shared data dir."""
    url = _new_postgres_database(request, template=PG_TEMPLATE)
    data_dir = tmp_path / "shared-data"
    names = iter("abcdefgh")

    def start(**settings: str) -> Member:
        cwd = tmp_path / f"node-{next(names)}"
        cwd.mkdir()
        node = Served(cwd, database_url=url, data_dir=str(data_dir), **CHEAP_HASHING, **settings)
        served.append(node)
        dicom_port, http_port = node.ports()
        return Member(node, dicom_port, http_port)

    return Cluster(url, data_dir, start)


# --------------------------------------------------------------------------- DICOM


def _study(study_uid: str, *, series: int, per_series: int) -> list[Dataset]:
    """A multi-series study with new UIDs; instances ordered series by series."""
    datasets = []
    for s in range(series):
        series_uid = generate_uid()
        for n in range(per_series):
            ds = ct_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                patient_id="CLUSTER1",
                patient_name="NODES^MANY",
                instance_number=n + 1,
                pixel_seed=s * 100 + n,
            )
            ds.SeriesNumber = s + 1
            datasets.append(ds)
    return datasets


def _send(port: int, datasets: list[Dataset]) -> list[int]:
    """One association carrying ``datasets``; the C-STORE statuses."""
    ae = AE(ae_title="CLUSTER_SCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    statuses = []
    try:
        for ds in datasets:
            answer = assoc.send_c_store(ds)
            statuses.append(int(answer.Status) if "Status" in answer else -1)
    finally:
        assoc.release()
    return statuses


def _send_all(jobs: list[tuple[int, list[Dataset]]]) -> list[int]:
    """Every (port, datasets) on its own association, all at once."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: _send(*job), jobs))
    return [status for statuses in results for status in statuses]


def _assert_indexed_once(cluster: Cluster, study_uid: str, datasets: list[Dataset]) -> None:
    """One study row with exact counters, and each instance once with its file."""
    db = Database(cluster.url)
    store = FileStore(cluster.data_dir)
    try:
        with db.read() as session:
            studies = session.scalars(
                select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid)
            ).all()
            assert len(studies) == 1
            study = studies[0]
            series = session.scalars(
                select(DicomSeries).where(DicomSeries.study_pk == study.id)
            ).all()
            instances = session.scalars(
                select(DicomInstance)
                .join(DicomSeries, DicomSeries.id == DicomInstance.series_pk)
                .where(DicomSeries.study_pk == study.id)
            ).all()
            patients = session.scalar(
                select(func.count()).select_from(Patient).where(Patient.patient_id == "CLUSTER1")
            )
    finally:
        db.dispose()
    expected_series = {ds.SeriesInstanceUID for ds in datasets}
    assert patients == 1
    assert {s.series_instance_uid for s in series} == expected_series
    # the counters, bumped concurrently by both nodes, lost no update and doubled none
    assert (study.series_count, study.instance_count) == (len(expected_series), len(datasets))
    per_series = {
        uid: sum(ds.SeriesInstanceUID == uid for ds in datasets) for uid in expected_series
    }
    assert {s.series_instance_uid: s.instance_count for s in series} == per_series
    assert sorted(i.sop_instance_uid for i in instances) == sorted(
        ds.SOPInstanceUID for ds in datasets
    )
    for instance in instances:  # each row has its whole file in the shared store
        data = store.absolute(instance.file_path).read_bytes()
        assert hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == instance.sha256
    assert store.sweep_temp(older_than_seconds=0) == 0  # no temp file left behind


def test_one_study_sent_through_two_nodes_at_once_is_indexed_once_with_exact_counts(
    cluster: Cluster,
) -> None:
    a, b = cluster.start(), cluster.start()
    study_uid = generate_uid()
    datasets = _study(study_uid, series=3, per_series=16)
    # every series reaches both nodes, over three associations on each at once
    jobs = [
        (node.dicom_port, datasets[offset::6]) for offset, node in enumerate([a, b, a, b, a, b])
    ]
    statuses = _send_all(jobs)
    assert statuses == [SUCCESS] * len(datasets)
    _assert_indexed_once(cluster, study_uid, datasets)


def test_the_same_instances_through_two_nodes_at_once_are_not_counted_twice(
    cluster: Cluster,
) -> None:
    a, b = cluster.start(), cluster.start()
    study_uid = generate_uid()
    datasets = _study(study_uid, series=3, per_series=14)
    half = len(datasets) // 2
    # each instance arrives on both nodes at about the same moment, the first
    # (which creates the patient, study and series rows) included
    jobs = [
        (a.dicom_port, datasets[:half]),
        (a.dicom_port, datasets[half:]),
        (b.dicom_port, datasets[:half]),
        (b.dicom_port, datasets[half:]),
    ]
    statuses = _send_all(jobs)
    assert statuses == [SUCCESS] * (2 * len(datasets))
    _assert_indexed_once(cluster, study_uid, datasets)
    # and once more, in full, through either node: still the same counts
    assert _send_all([(b.dicom_port, datasets), (a.dicom_port, datasets[::-1])]) == [SUCCESS] * (
        2 * len(datasets)
    )
    _assert_indexed_once(cluster, study_uid, datasets)


# --------------------------------------------------------------------------- jobs

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _times(lines: list[str], pattern: str) -> list[float]:
    found = []
    for line in lines:
        if re.search(pattern, line) and (match := _LOG_TIME.match(line)):
            found.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def test_each_escalation_tick_runs_on_one_node_only(cluster: Cluster) -> None:
    # the winner holds a tick for half the interval: 1 s here, so that a node whose
    # scheduler thread wakes late on a loaded machine still finds the tick taken
    # (0.5 s, with a 1 s interval, was little margin for two nodes on two cores)
    interval = 2.0
    settings = {"escalation_interval_seconds": str(interval), "log_level": "DEBUG"}
    a, b = cluster.start(**settings), cluster.start(**settings)

    def ticks_both_saw() -> int:
        seen = [
            {int(at // interval) for at in _times(list(node.served.lines), r"job escalation ")}
            for node in (a, b)
        ]
        return len(seen[0] & seen[1])

    # a few ticks both nodes took part in (each node logs one line a tick)
    assert wait_for(lambda: ticks_both_saw() >= 4, timeout=60, interval=0.2)
    lines = {name: list(node.served.lines) for name, node in (("a", a), ("b", b))}
    ran = {name: _times(ln, r"job escalation ran: ") for name, ln in lines.items()}
    skipped = {name: _times(ln, r"job escalation skipped: ") for name, ln in lines.items()}
    # ticks fall on whole seconds (aligned on every node); a line comes just after
    ticks: dict[str, dict[int, list[str]]] = {}
    for name in lines:
        for outcome, times in (("ran", ran[name]), ("skipped", skipped[name])):
            for at in times:
                ticks.setdefault(name, {}).setdefault(int(at // interval), []).append(outcome)
    both = sorted(set(ticks["a"]) & set(ticks["b"]))
    assert len(both) >= 4, lines
    for tick in both:
        # each node ticked once; one ran the job and the other stood aside
        assert sorted(ticks["a"][tick] + ticks["b"][tick]) == ["ran", "skipped"], (tick, ticks)
    runs = sorted(ran["a"] + ran["b"])
    assert all(later - earlier > interval / 2 for earlier, later in itertools.pairwise(runs))


# --------------------------------------------------------------------------- live events


def _scheduler_token(cluster: Cluster, member: Member) -> str:
    db = Database(cluster.url)
    try:
        with db.unit_of_work() as session:
            create_user(
                session,
                username="cluster-scheduler",
                password=PASSWORD,
                role="scheduler",
                display_name="Cluster Scheduler",
                actor=Actor.system(SystemActor.CLI),
            )
    finally:
        db.dispose()
    response = httpx.post(
        f"{member.base_url}/api/auth/token",
        data={"username": "cluster-scheduler", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


class EventReader:
    """An SSE stream read on a thread; each event with the moment it arrived."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.preamble = ""
        self.opened = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._read, args=(url, token), daemon=True)
        self._thread.start()

    def _read(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream("GET", url, headers=headers, timeout=60) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if self._closing:
                        return
                    if line.startswith(": stream for "):
                        self.preamble = line
                        self.opened.set()
                    elif line.startswith("data: "):
                        self.events.append((time.monotonic(), json.loads(line[6:])))
        except httpx.HTTPError:
            if not self._closing:  # the node going away at the end is no failure
                raise

    def arrival(self, entity_id: int, timeout: float = 10) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, event in list(self.events):
                if event["entity"] == "order" and event["entity_id"] == entity_id:
                    return at
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self._closing = True


def test_an_order_created_on_one_node_reaches_a_stream_on_the_other_at_once(
    cluster: Cluster,
) -> None:
    a, b = cluster.start(), cluster.start()
    token = _scheduler_token(cluster, a)
    for node in (a, b):
        node.served.wait_for_line(r"listening for change notifications")
    reader = EventReader(f"{b.base_url}/api/events", token)
    assert reader.opened.wait(10)
    # B's stream waits on notifications, with a 3 s poll only as a safety net
    assert reader.preamble.endswith("woken by notifications"), reader.preamble
    latencies = []
    with httpx.Client(base_url=a.base_url, headers={"Authorization": f"Bearer {token}"}) as api:
        for n in range(5):
            time.sleep(0.7)  # the stream on B is idle, waiting
            response = api.post(
                "/api/orders",
                json={
                    "patient_id": f"NOTIFY{n}",
                    "patient_name": "LIVE^EVENT",
                    "patient_birth_date": "19700101",
                    "patient_sex": "F",
                    "requested_modality": "CT",
                    "study_description": "CT Chest",
                    "priority": "routine",
                },
            )
            assert response.status_code == 201, response.text
            # from A's answer, when the order is committed: how long A took to
            # answer (long on a loaded machine) is no part of the delivery to B.
            # The event may even be there first (a negative latency).
            sent = time.monotonic()
            arrived = reader.arrival(response.json()["id"])
            assert arrived is not None, f"order {n} never reached node B's stream"
            latencies.append(arrived - sent)
    reader.close()
    print("latencies on node B's stream:", [round(x, 3) for x in latencies])
    # within 1 s each; and every one well inside the 3 s safety-net poll, which
    # without a notification would meet 0.5 s five times in a row about once in 10^4
    assert max(latencies) < 1.0, latencies
    assert all(latency < 0.5 for latency in latencies), latencies


# --------------------------------------------------------------------------- the listener


def _order(db: Database, *, rollback: bool = False) -> None:
    with contextlib.suppress(_RolledBack), db.unit_of_work() as session:
        session.add(
            ImagingRequest(
                patient_id="P1",
                patient_name="DOE^JANE",
                patient_name_folded="doe^jane",
                requested_modality="CT",
                status="requested",
            )
        )
        session.flush()
        if rollback:
            raise _RolledBack


class _RolledBack(Exception):
    pass


def _listener_backends(db: Database) -> list[int]:
    with db.read() as session:
        return list(
            session.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        )


def _terminate(db: Database, backend: int) -> None:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})


@pytest.fixture
def pg_db(request: pytest.FixtureRequest) -> Iterator[Database]:
    database = Database(_new_postgres_database(request, template=PG_TEMPLATE))
    yield database
    notify.stop_listener(database)
    database.dispose()


def test_a_commit_wakes_a_waiter_and_a_rollback_does_not(pg_db: Database) -> None:
    listener = notify.start_listener(pg_db)
    assert listener is not None and notify.listener_for(pg_db) is listener

    async def scenario() -> tuple[bool, bool, bool]:
        mark = listener.mark()
        await asyncio.to_thread(_order, pg_db, rollback=True)
        rolled_back = await listener.wait(mark, 1.0)
        # a commit between taking the mark and waiting is not missed
        await asyncio.to_thread(_order, pg_db)
        # once the listener has the notification (a fixed 0.3 s for its delivery
        # was not always enough on a loaded machine)
        deadline = time.monotonic() + 10
        while listener.mark() == mark and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        committed = await listener.wait(mark, 0.01)
        mark = listener.mark()
        return rolled_back, committed, await listener.wait(mark, 0.5)

    assert asyncio.run(scenario()) == (False, True, False)
    with pg_db.read() as session:
        latest = session.scalar(select(func.max(ChangeLogEntry.seq)))
    assert listener.latest_seq == latest  # the payload is the highest new seq


def test_the_listener_reconnects_and_wakes_its_waiters_when_its_session_dies(
    pg_db: Database,
) -> None:
    listener = notify.start_listener(pg_db)
    assert listener is not None
    (backend,) = _listener_backends(pg_db)

    async def scenario() -> tuple[bool, bool]:
        mark = listener.mark()
        await asyncio.to_thread(_terminate, pg_db, backend)
        # losing the connection wakes the waiters: they poll until it is back
        lost = await listener.wait(mark, 5.0)
        await asyncio.to_thread(listener.wait_connected, 10.0)
        mark = listener.mark()
        await asyncio.to_thread(_order, pg_db)
        return lost, await listener.wait(mark, 5.0)

    assert asyncio.run(scenario()) == (True, True)
    assert listener.connected.is_set()
    (new_backend,) = _listener_backends(pg_db)
    assert new_backend != backend


def test_sqlite_has_no_listener(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'one-node.sqlite3'}")
    try:
        assert notify.start_listener(db) is None
        assert notify.listener_for(db) is None
    finally:
        db.dispose()
