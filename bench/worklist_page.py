"""Worklist page benchmark: the server time of the reading worklist's first page
with 10,000 open items (issue 18, item 5: under 300 ms).

A script, not a timed test. Run from the repository (root not needed):

    .venv/bin/python bench/worklist_page.py               # 10,000 open items, SQLite
    .venv/bin/python bench/worklist_page.py --postgres    # the same on a PostgreSQL it starts
    .venv/bin/python bench/worklist_page.py --quick       # small numbers, to check the setup

What it does:

1. creates a database with the current schema and fills it straight through SQL
   (in batches of 2,000) with ``--items`` open reading worklist items, each with
   its patient, order and complete, matched study: the rows ingest and matching
   leave (as bench/api.py seeds them), with a mix of modalities, body parts,
   priorities, due times (a few hundred overdue) and a tenth claimed by another
   radiologist, plus the radiologist who reads the page;
2. serves the node's HTTP application (the same app ``dicom-node serve`` runs)
   on a loopback port and signs in through the sign-in form, as a browser does
   (the session cookie);
3. ``--rounds`` times, one request at a time on one keep-alive connection (so a
   latency is the server's time plus a loopback round trip, no queueing), asks
   for what the browser asks for to draw the first page: the page itself
   (``GET /worklist``, a server-rendered shell), its stylesheets and scripts,
   and the first page of the list (``GET /api/worklist?offset=0&limit=50``, the
   call worklist.js makes), plus the same listing in the page's other sort
   orders and with the overdue filter. Rounds are ``--interval`` seconds apart:
   the API reuses a listing for at most a second while the change feed has not
   moved (api/cache.py), and every listing measured here is a cold one; one more
   listing right after each cold one shows the cached answer;
4. prints p50, p95 and max per request, and the first page's total (page +
   assets + listing, as the browser asks for them one after another) against
   the target.

The browser's own work (parsing, running the script, drawing the table) is
not server time and is not measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomStudy, ImagingRequest, Patient, WorklistItem
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.services.access.users import create_user
from tests.api.conftest import serve
from tests.conftest import node_settings
from tests.support import run_postgres

PASSWORD = "bench-password-1"  # noqa: S105 (a throw-away bench account)
TARGET_MS = 300.0
BATCH = 2000
# (modality, body part, description), (priority, rank): cycled through the items
EXAMS = (("CT", "HEAD", "CT HEAD"), ("MR", "KNEE", "MR KNEE"), ("CR", "CHEST", "CHEST PA"))
PRIORITIES = (("stat", 0), ("urgent", 1), ("routine", 2), ("routine", 2), ("routine", 2))
PAGE = "/worklist"
# what base.html and worklist.html load (the browser asks for each)
ASSETS = (
    "/static/css/app.css",
    "/static/css/worklist.css",
    "/static/js/local-time.js",
    "/static/js/worklist.js",
    "/static/js/api.js",
)
FIRST_PAGE = "/api/worklist?offset=0&limit=50"
# the other listings the page offers from its form (each a cold listing too)
VARIANTS = (
    ("listing, sort=due_at", FIRST_PAGE + "&sort=due_at"),
    ("listing, sort=-created_at", FIRST_PAGE + "&sort=-created_at"),
    ("listing, overdue=true", FIRST_PAGE + "&overdue=true"),
    ("listing, modality=CT, assigned_to=none", FIRST_PAGE + "&modality=CT&assigned_to=none"),
)


def _rows(start: int, end: int, holder: int, now: datetime) -> dict[type, list[dict[str, Any]]]:
    """Items ``start`` to ``end`` - 1: patient, order, study and reading item each."""
    rows: dict[type, list[dict[str, Any]]] = {
        Patient: [],
        ImagingRequest: [],
        DicomStudy: [],
        WorklistItem: [],
    }
    stamps = {"created_at": now, "updated_at": now}
    for i in range(start, end):
        modality, body_part, description = EXAMS[i % len(EXAMS)]
        priority, rank = PRIORITIES[i % len(PRIORITIES)]
        name = f"PATIENT^{i:07d}"
        people = {"patient_id": f"P{i:07d}", "issuer_of_patient_id": "", "patient_name": name}
        people["patient_name_folded"] = name.lower()
        accession = {"accession_number": f"A{i:09d}", "accession_issuer": ""}
        uid = f"2.25.{1000 + i}"
        rows[Patient].append({"id": i + 1, **people, **stamps})
        rows[ImagingRequest].append(
            {
                "id": i + 1,
                **people,
                **accession,
                "study_instance_uid": uid,
                "requested_modality": modality,
                "priority": priority,
                "status": "performed",
                **stamps,
            }
        )
        rows[DicomStudy].append(
            {
                "id": i + 1,
                "study_instance_uid": uid,
                "patient_pk": i + 1,
                "imaging_request_id": i + 1,
                **accession,
                "study_date": (now - timedelta(days=i % 3)).strftime("%Y%m%d"),
                "body_part_examined": body_part,
                "modality_type": modality,
                "modalities_in_study": modality,
                "study_description": description,
                "series_count": 2,
                "instance_count": 200,
                "metadata_status": "matched",
                "status": "reading" if i % 10 == 0 else "acquired",
                "completeness": "complete",
                **stamps,
            }
        )
        claimed = i % 10 == 0
        rows[WorklistItem].append(
            {
                "imaging_request_id": i + 1,
                "dicom_study_id": i + 1,
                "queue_type": "reading",
                "status": "claimed" if claimed else "pending",
                "assigned_to_id": holder if claimed else None,
                "claimed_at": now if claimed else None,
                "priority": priority,
                "priority_rank": rank,
                # about 1 in 7 already past due
                "due_at": now + timedelta(minutes=(i * 7) % 2000 - 300),
                "overdue": False,
                "version": 2 if claimed else 1,
                **stamps,
            }
        )
    return rows


def seed(url: str, items: int) -> None:
    """``items`` open reading items and two radiologists: ``reader`` (who reads
    the page) and ``colleague`` (who holds a tenth of the items)."""
    migrate.upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    with db.unit_of_work() as session:
        for username in ("reader", "colleague"):
            user = create_user(
                session,
                username=username,
                password=PASSWORD,
                role="radiologist",
                actor=Actor.system(SystemActor.CLI),
            )
        holder = user.id
    for start in range(0, items, BATCH):
        with db.unit_of_work() as session:
            for model, values in _rows(start, min(start + BATCH, items), holder, now).items():
                session.execute(insert(model), values)
    db.dispose()


def timed(client: httpx.Client, path: str) -> float:
    """One GET, answered 200; its time in milliseconds (the body read included)."""
    started = time.perf_counter()
    answer = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    return elapsed


def row(name: str, values: list[float], target: float | None = None) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    verdict = "" if target is None else ("met" if p95 < target else "MISSED")
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.1f} | {p95:.1f} "
        f"| {ordered[-1]:.1f} | {f'< {target:g} ms (p95): {verdict}' if target else ''} |"
    )


def measure(base_url: str, rounds: int, interval: float) -> list[str]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        answer = client.post("/sign-in", data={"username": "reader", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        total = client.get(FIRST_PAGE).json()["total"]
        print(f"  the listing's total: {total}", flush=True)
        times: dict[str, list[float]] = {}

        def keep(name: str, value: float) -> float:
            times.setdefault(name, []).append(value)
            return value

        # warm-up: the first request of a process imports and compiles lazily
        for path in (PAGE, *ASSETS, FIRST_PAGE):
            client.get(path)
        time.sleep(interval)
        for _ in range(rounds):
            started = time.monotonic()
            first = keep("page (GET /worklist)", timed(client, PAGE))
            first += keep("assets (5 files, together)", sum(timed(client, a) for a in ASSETS))
            first += keep("listing, first page (cold)", timed(client, FIRST_PAGE))
            keep("first page: page + assets + listing", first)
            keep("listing, first page (cached, < 1 s)", timed(client, FIRST_PAGE))
            for name, path in VARIANTS:
                keep(f"{name} (cold)", timed(client, path))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    header = [
        "| request | n | p50 ms | p95 ms | max ms | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    target_row = "first page: page + assets + listing"
    return header + [
        row(name, values, TARGET_MS if name == target_row else None)
        for name, values in times.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--interval",
        type=float,
        default=1.2,
        help="seconds between rounds: longer than the listing cache's second",
    )
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.rounds = 500, 3
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_postgres() if args.postgres else contextlib.nullcontext() as pg,
    ):
        work = Path(tmp)
        url = pg.url("postgres") if pg else f"sqlite:///{work / 'index.sqlite3'}"
        print(f"seeding {args.items} open worklist items ...", flush=True)
        started = time.monotonic()
        seed(url, args.items)
        print(f"  {time.monotonic() - started:.0f} s", flush=True)
        db = Database(url)
        server, thread, port = serve(db, node_settings(url, work / "data"))
        try:
            rows = measure(f"http://127.0.0.1:{port}", args.rounds, args.interval)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            db.dispose()
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nthe worklist page's first page, {args.items} open items, {args.rounds} rounds "
        f"{args.interval:g} s apart, one request at a time, {backend}:\n"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
