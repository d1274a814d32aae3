"""API benchmark: the reading worklist under 64 concurrent clients, idle and during ingest.

A script, not a timed test. Run from the repository (root not needed):

    .venv/bin/python bench/api.py                     # 10,000 open items, 64 clients, SQLite
    .venv/bin/python bench/api.py --postgres          # the same on a PostgreSQL it starts
    .venv/bin/python bench/api.py --quick             # small numbers, to check the setup

What it does:

1. creates a database with the current schema and fills it straight through SQL
   with ``--items`` open reading worklist items (each with its patient, order and
   study: what the listing joins), plus one radiologist account;
2. starts ``dicom-node serve`` on it (DICOM in worker processes, the API in the
   main process, as in production) and signs in;
3. idle: ``--clients`` keep-alive connections (one asyncio loop in this process,
   a minimal HTTP/1.1 client so the load generator's own CPU stays small) list
   the reading worklist (``GET /api/worklist``, 50 a page, STAT -> urgent ->
   routine, then due time) for ``--seconds``, in two modes: back to back (each
   client asks again as soon as it has its answer: a stress test, the latency
   is then mostly queueing) and paced (each client asks once per ``--interval``
   seconds, as a workstation polling its queue does); every latency is kept;
4. during ingest: the same while 4 ``/usr/bin/storescu`` send the small set of
   bench/ingest.py to the node's DICOM port over and over;
5. prints p50, p95, p99, max latency and requests/s for both phases, against the
   issue's targets (p99 < 100 ms idle, < 250 ms during ingest).

The clients run on the same 2 cores as the node, so the figures include their
CPU cost; a real deployment's clients are elsewhere. There is no Orthanc figure:
Orthanc has no reading worklist to compare with.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import (
    DICOM_NODE,
    STORESCU,
    _env,
    _free_port,
    _spawn,
    _stop,
    _wait_for_health,
    client_dirs,
    prepare_set,
)
from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, ImagingRequest, Patient, WorklistItem
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.services.access.users import create_user
from tests.support import run_postgres

PASSWORD = "bench-password-1"  # noqa: S105 (a throw-away bench account)
PRIORITIES = (("stat", 0), ("urgent", 1), ("routine", 2), ("routine", 2), ("routine", 2))


def seed(url: str, items: int) -> None:
    """``items`` open reading items, each with patient, order and complete study."""
    migrate.upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    batch = 2000
    with db.unit_of_work() as session:
        create_user(
            session,
            username="reader",
            password=PASSWORD,
            role="radiologist",
            actor=Actor.system(SystemActor.CLI),
        )
    for start in range(0, items, batch):
        rows = range(start, min(start + batch, items))
        with db.unit_of_work() as session:
            session.execute(
                insert(Patient),
                [
                    {
                        "id": i + 1,
                        "patient_id": f"P{i:07d}",
                        "issuer_of_patient_id": "",
                        "patient_name": f"PATIENT^{i:07d}",
                        "patient_name_folded": f"patient^{i:07d}",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
            session.execute(
                insert(ImagingRequest),
                [
                    {
                        "id": i + 1,
                        "patient_id": f"P{i:07d}",
                        "issuer_of_patient_id": "",
                        "patient_name": f"PATIENT^{i:07d}",
                        "patient_name_folded": f"patient^{i:07d}",
                        "accession_number": f"A{i:09d}",
                        "accession_issuer": "",
                        "study_instance_uid": f"2.25.{1000 + i}",
                        "requested_modality": "CT",
                        "priority": PRIORITIES[i % 5][0],
                        "status": "performed",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
            session.execute(
                insert(DicomStudy),
                [
                    {
                        "id": i + 1,
                        "study_instance_uid": f"2.25.{1000 + i}",
                        "patient_pk": i + 1,
                        "imaging_request_id": i + 1,
                        "accession_number": f"A{i:09d}",
                        "accession_issuer": "",
                        "study_date": "20261124",
                        "modality_type": "CT",
                        "modalities_in_study": "CT",
                        "study_description": "CT HEAD",
                        "series_count": 2,
                        "instance_count": 200,
                        "metadata_status": "matched",
                        "status": "acquired",
                        "completeness": "complete",
                        "released_to_reading": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
            session.execute(
                insert(WorklistItem),
                [
                    {
                        "imaging_request_id": i + 1,
                        "dicom_study_id": i + 1,
                        "queue_type": "reading",
                        "status": "pending",
                        "priority": PRIORITIES[i % 5][0],
                        "priority_rank": PRIORITIES[i % 5][1],
                        "due_at": now + timedelta(minutes=(i * 7) % 2000 - 300),
                        "overdue": False,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
    db.dispose()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive GET; returns the status. A minimal client: httpx's own CPU
    cost per request, on the same 2 cores as the node, would be measured too."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(
    port: int, token: str, clients: int, seconds: float, interval: float = 0.0
) -> list[float]:
    """``clients`` connections asking for the first reading page; back to back
    (``interval`` 0) or each once per ``interval`` seconds, started at random."""
    latencies: list[float] = []
    failures = 0
    request = (
        "GET /api/worklist?queue=reading&limit=50 HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    deadline = time.perf_counter() + seconds

    async def one_client(k: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if interval:
            await asyncio.sleep(interval * k / clients)
        next_at = time.perf_counter()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if await _get(reader, writer, request) != 200:
                failures += 1
            latencies.append((time.perf_counter() - started) * 1000)
            if interval:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        writer.close()

    await asyncio.gather(*(one_client(k) for k in range(clients)))
    if failures:
        print(f"  {failures} requests failed", flush=True)
    return latencies


def summary(name: str, latencies: list[float], seconds: float, target: float) -> str:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    verdict = "met" if pct(0.99) < target else "NOT met"
    return (
        f"| {name} | {len(ordered)} | {len(ordered) / seconds:.0f} | "
        f"{statistics.median(ordered):.1f} | {pct(0.95):.1f} | {pct(0.99):.1f} | "
        f"{ordered[-1]:.1f} | < {target:.0f} ms: {verdict} |"
    )


class Ingest(threading.Thread):
    """4 storescu sending the small set again and again until stopped."""

    def __init__(self, dirs: list[Path], port: int, logs: Path) -> None:
        super().__init__(daemon=True)
        self.dirs, self.port, self.logs = dirs, port, logs
        self.stopping = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            procs = [
                _spawn(
                    [
                        STORESCU,
                        "-aet",
                        f"BENCH{k}",
                        "-aec",
                        "DICOM_NODE",
                        "+sd",
                        "127.0.0.1",
                        str(self.port),
                        d,
                    ],
                    log=self.logs / f"storescu{k}.log",
                    env=_env(),
                )
                for k, d in enumerate(self.dirs)
            ]
            for proc in procs:
                while proc.poll() is None and not self.stopping.is_set():
                    time.sleep(0.1)
                _stop(proc, grace=2)
            self.rounds += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="the paced mode: each client asks once per this many seconds",
    )
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("/tmp/dicom-node-bench"))
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.clients, args.seconds = 500, 8, 3.0
    small = prepare_set(args.root / "data", "small", 2000, 400)
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_postgres() if args.postgres else _no_server() as pg,
    ):
        work = Path(tmp)
        url = pg.url("postgres") if pg else f"sqlite:///{work / 'index.sqlite3'}"
        print(f"seeding {args.items} open worklist items ...", flush=True)
        started = time.monotonic()
        seed(url, args.items)
        print(f"  {time.monotonic() - started:.0f} s", flush=True)
        port, http = _free_port(), _free_port()
        config = work / "node.toml"
        config.write_text("")
        env = _env(
            {
                "DICOM_NODE_CONFIG": str(config),
                "DICOM_NODE_DATA_DIR": str(work / "data"),
                "DICOM_NODE_DATABASE_URL": url,
                "DICOM_NODE_DICOM_PORT": str(port),
                "DICOM_NODE_HTTP_PORT": str(http),
                "DICOM_NODE_LOG_LEVEL": "WARNING",
            }
        )
        log = work / "node.log"
        node = _spawn([DICOM_NODE, "serve"], log=log, env=env, cwd=work)
        try:
            _wait_for_health(http, node, log, timeout=60)
            base = f"http://127.0.0.1:{http}"
            token = httpx.post(
                f"{base}/api/auth/token", data={"username": "reader", "password": PASSWORD}
            ).json()
            rows = [
                "| phase | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | target |",
                "|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            bearer = token["access_token"]
            asyncio.run(load(http, bearer, args.clients, 2.0))  # warm-up
            modes = [("back to back", 0.0), (f"each every {args.interval:g} s", args.interval)]
            for mode, interval in modes:
                idle = asyncio.run(load(http, bearer, args.clients, args.seconds, interval))
                rows.append(summary(f"idle, {mode}", idle, args.seconds, 100))
            links = work / "links"
            ingest = Ingest(client_dirs(small, 4, links), port, work)
            ingest.start()
            time.sleep(2.0)  # associations up and storing
            for mode, interval in modes:
                busy = asyncio.run(load(http, bearer, args.clients, args.seconds, interval))
                rows.append(summary(f"4-client C-STORE, {mode}", busy, args.seconds, 250))
            ingest.stopping.set()
            ingest.join()
            print(f"  storescu rounds during the ingest phases: {ingest.rounds}", flush=True)
        finally:
            _stop(node)
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"\nworklist listing, {args.items} open items, {args.clients} clients, "
            f"{args.seconds:.0f} s per phase, {backend}:\n"
        )
        print("\n".join(rows))
    return 0


class _no_server:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
