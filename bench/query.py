"""Query benchmark: C-FIND latency of dicom-node by index size, against Orthanc.

A script, not a timed test. Run as root from the repository:

    .venv/bin/python bench/query.py                          # 10k + 100k, SQLite, Orthanc 10k
    .venv/bin/python bench/query.py --sizes 10000,100000,1000000   # the 1M point too
    .venv/bin/python bench/query.py --postgres               # the same on PostgreSQL as well
    .venv/bin/python bench/query.py --no-orthanc --sizes 10000     # quick check of the setup
    .venv/bin/python bench/query.py --sizes 10000 --rounds 5 --baseline /path/to/old/checkout
        # old node, new node and Orthanc up at once, queried in turn, 5 rounds:
        # the median of the per-round p50s (a shared, noisy machine)

What it does:

1. builds each index straight in the database (SQLAlchemy Core bulk inserts, no
   network, no files): 20 instances a study (2 series of 10), 2 studies a patient,
   study dates spread over 1,000 days, two modalities a study;
2. re-executes itself inside a private network namespace (``unshare -n``, as
   bench/ingest.py does) and starts ``dicom-node serve`` on that database;
3. times each query with an in-process pynetdicom SCU (one association opened
   before the clock starts, ``--repeat`` runs) and with DCMTK ``/usr/bin/findscu``
   (process start included, ``--findscu-repeat`` runs): STUDY by PatientID, by
   PatientName wildcard, by StudyDate range (a week), by ModalitiesInStudy + date,
   by AccessionNumber; SERIES within a study; IMAGE within a series;
4. for the first size (10k by default), generates the same instances as small
   Part 10 files, loads them into Orthanc (its default SQLite index) with storescu
   and runs the same queries there;
5. prints p50/p95 per query and size, the growth from the smallest size, and
   node/Orthanc ratios (below 1: the node is faster).

With ``--rounds N`` (and optionally ``--baseline DIR``, a checkout of an older
node run with ``PYTHONPATH=DIR`` on a copy of the same SQLite index), the
first size is measured interleaved instead: every target started at once, and
in each round every query is timed on every target in turn; the table then
gives the median over the rounds of each round's p50 and p95.

The issue's target: at or below Orthanc's p50 and p95 for every query at 10k, and
selective STUDY queries at p50 <= 20 ms at 1M instances on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import UID  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]  # noqa: E402
from sqlalchemy import Connection, create_engine, insert  # noqa: E402

from bench.ingest import (  # noqa: E402
    ORTHANC,
    STORESCU,
    _env,
    _free_port,
    _kill_all,
    _orthanc_get,
    _spawn,
    _stop,
    _wait_for_health,
    _wait_for_port,
    database,
    ensure_tools,
)
from dicom_node.db import migrate  # noqa: E402
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient  # noqa: E402
from dicom_node.scp.transport import set_nodelay  # noqa: E402

FINDSCU = "/usr/bin/findscu"
DICOM_NODE = Path(sys.executable).parent / "dicom-node"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MODALITIES = ("CT", "MR", "US", "CR")
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 10, 2, 2
PER_STUDY = PER_SERIES * SERIES_PER_STUDY
FIRST_DAY = date(2020, 1, 1)
BATCH = 20_000


def study_uid(i: int) -> str:
    return f"1.2.826.0.1.3680043.10.543.1.{i}"


def series_uid(i: int, j: int) -> str:
    return f"1.2.826.0.1.3680043.10.543.2.{i}.{j}"


def sop_uid(i: int, j: int, k: int) -> str:
    return f"1.2.826.0.1.3680043.10.543.3.{i}.{j}.{k}"


def study_fields(i: int) -> dict[str, str]:
    patient = i // STUDIES_PER_PATIENT
    return {
        "PatientID": f"PID{patient:07d}",
        "PatientName": f"NAME{patient:07d}^TEST",
        "AccessionNumber": f"ACC{i:08d}",
        "StudyDate": (FIRST_DAY + timedelta(days=i % 1000)).strftime("%Y%m%d"),
        "StudyTime": f"{8 + i % 10:02d}{i % 60:02d}00",
    }


def series_modality(i: int, j: int) -> str:
    return MODALITIES[(i + j) % len(MODALITIES)]


# ------------------------------------------------------------------------ loading


def build_index(url: str, instances: int) -> None:
    """The index of ``instances`` instances, inserted directly (no files)."""
    migrate.upgrade(url)
    engine = create_engine(url)
    studies = instances // PER_STUDY
    with engine.begin() as conn:
        patients = []
        for p in range((studies + STUDIES_PER_PATIENT - 1) // STUDIES_PER_PATIENT):
            fields = study_fields(p * STUDIES_PER_PATIENT)
            patients.append(
                {
                    "id": p + 1,
                    "patient_id": fields["PatientID"],
                    "issuer_of_patient_id": "",
                    "patient_name": fields["PatientName"],
                    "patient_name_folded": fields["PatientName"].casefold(),
                    "patient_birth_date": "19700101",
                    "patient_sex": "O",
                }
            )
        _insert(conn, Patient.__table__, patients)
        study_rows, series_rows, instance_rows = [], [], []
        for i in range(studies):
            fields = study_fields(i)
            modalities = sorted({series_modality(i, j) for j in range(SERIES_PER_STUDY)})
            study_rows.append(
                {
                    "id": i + 1,
                    "study_instance_uid": study_uid(i),
                    "patient_pk": i // STUDIES_PER_PATIENT + 1,
                    "accession_number": fields["AccessionNumber"],
                    "study_date": fields["StudyDate"],
                    "study_time": fields["StudyTime"],
                    "study_time_norm": f"{fields['StudyTime']}.000000",
                    "study_description": "BENCH",
                    "modalities_in_study": "\\".join(modalities),
                    "series_count": SERIES_PER_STUDY,
                    "instance_count": PER_STUDY,
                    "metadata_status": "unmatched",
                    "status": "acquired",
                }
            )
            for j in range(SERIES_PER_STUDY):
                series_pk = i * SERIES_PER_STUDY + j + 1
                series_rows.append(
                    {
                        "id": series_pk,
                        "series_instance_uid": series_uid(i, j),
                        "study_pk": i + 1,
                        "modality": series_modality(i, j),
                        "series_number": j + 1,
                        "instance_count": PER_SERIES,
                    }
                )
                for k in range(PER_SERIES):
                    instance_rows.append(
                        {
                            "id": (series_pk - 1) * PER_SERIES + k + 1,
                            "sop_instance_uid": sop_uid(i, j, k),
                            "series_pk": series_pk,
                            "sop_class_uid": CT,
                            "instance_number": k + 1,
                            "transfer_syntax_uid": EXPLICIT_LE,
                            "file_path": f"bench/{i}/{j}/{k}.dcm",
                            "file_size": 1000,
                            "sha256": "0" * 64,
                            "quarantined": False,
                        }
                    )
            if len(instance_rows) >= BATCH:
                _flush(conn, study_rows, series_rows, instance_rows)
        _flush(conn, study_rows, series_rows, instance_rows)
    # begin(), not connect(): ANALYZE's statistics are written in a transaction,
    # which connect() would roll back on exit (planner statistics lost)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


Rows = list[dict[str, object]]


def _flush(conn: Connection, studies: Rows, series: Rows, instances: Rows) -> None:
    _insert(conn, DicomStudy.__table__, studies)
    _insert(conn, DicomSeries.__table__, series)
    _insert(conn, DicomInstance.__table__, instances)
    for rows in (studies, series, instances):
        rows.clear()


def _insert(conn: Connection, table: Any, rows: Rows) -> None:
    if rows:
        conn.execute(insert(table), rows)


def write_part10(directory: Path, instances: int) -> None:
    """The same instances as small files (no pixel data), for Orthanc."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(instances // PER_STUDY):
        fields = study_fields(i)
        for j in range(SERIES_PER_STUDY):
            for k in range(PER_SERIES):
                ds = Dataset()
                ds.SOPClassUID = CT
                ds.SOPInstanceUID = sop_uid(i, j, k)
                ds.StudyInstanceUID = study_uid(i)
                ds.SeriesInstanceUID = series_uid(i, j)
                for keyword, value in fields.items():
                    setattr(ds, keyword, value)
                ds.Modality, ds.SeriesNumber, ds.InstanceNumber = (
                    series_modality(i, j),
                    j + 1,
                    k + 1,
                )
                ds.PatientBirthDate, ds.PatientSex, ds.StudyDescription = "19700101", "O", "BENCH"
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = UID(CT)
                ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid(i, j, k))
                ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
                pydicom.dcmwrite(directory / f"{i}_{j}_{k}.dcm", ds, enforce_file_format=True)


# ------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class Query:
    name: str
    level: str
    keys: dict[str, str]


def queries(instances: int) -> list[Query]:
    studies = instances // PER_STUDY
    i = studies // 2 + 7  # a study in the middle
    fields = study_fields(i)
    day = FIRST_DAY + timedelta(days=i % 1000)
    week = f"{day:%Y%m%d}-{day + timedelta(days=6):%Y%m%d}"
    asked = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": ""}
    # NAME00001* : the 100 patients (200 studies) sharing the name's prefix
    name_prefix = fields["PatientName"][:9] + "*"
    accession = fields["AccessionNumber"]
    study, series = study_uid(i), series_uid(i, 0)
    by_day = {"StudyDate": f"{day:%Y%m%d}", "ModalitiesInStudy": series_modality(i, 0)}
    return [
        Query("STUDY PatientID", "STUDY", {**asked, "PatientID": fields["PatientID"]}),
        Query("STUDY PatientName wildcard", "STUDY", {**asked, "PatientName": name_prefix}),
        Query("STUDY StudyDate week", "STUDY", {**asked, "StudyDate": week}),
        Query("STUDY Modality + date", "STUDY", {**asked, **by_day}),
        Query("STUDY AccessionNumber", "STUDY", {**asked, "AccessionNumber": accession}),
        Query("SERIES in a study", "SERIES", {"StudyInstanceUID": study, "SeriesInstanceUID": ""}),
        Query(
            "IMAGE in a series",
            "IMAGE",
            {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": ""},
        ),
    ]


def time_pynetdicom(port: int, called: str, query: Query, repeat: int) -> tuple[list[float], int]:
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    # TCP_NODELAY on the SCU too: with Nagle on, every response waits for a
    # delayed ACK (about 40 ms here), whichever server answers
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    if not assoc.is_established:
        raise RuntimeError(f"no association with {called}")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = query.level
    for keyword, value in query.keys.items():
        setattr(identifier, keyword, value)
    times, matches = [], 0
    try:
        for _ in range(repeat + 1):  # the first run warms caches: not counted
            start = time.perf_counter()
            matches = sum(
                1
                for status, found in assoc.send_c_find(
                    identifier, StudyRootQueryRetrieveInformationModelFind
                )
                if status and status.Status in (0xFF00, 0xFF01) and found is not None
            )
            times.append((time.perf_counter() - start) * 1000)
    finally:
        assoc.release()
    return times[1:], matches


def time_findscu(port: int, called: str, query: Query, repeat: int) -> list[float]:
    args = [FINDSCU, "-S", "-aec", called, "-k", f"QueryRetrieveLevel={query.level}"]
    for keyword, value in query.keys.items():
        args += ["-k", f"{keyword}={value}"]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([*args, "127.0.0.1", str(port)], check=True, capture_output=True, env=_env())
        times.append((time.perf_counter() - start) * 1000)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    target: str
    size: int
    query: str
    matches: int
    scu: list[float]
    findscu: list[float]


# ------------------------------------------------------------------------ targets


@contextlib.contextmanager
def node_server(run_dir: Path, url: str | None, pythonpath: Path | None = None) -> Iterator[int]:
    config = run_dir / "node.toml"
    config.write_text("# bench\n")
    port, http = _free_port(), _free_port()
    extra = {
        "DICOM_NODE_CONFIG": str(config),
        "DICOM_NODE_DATA_DIR": str(run_dir / "data"),
        "DICOM_NODE_DICOM_PORT": str(port),
        "DICOM_NODE_HTTP_PORT": str(http),
        "DICOM_NODE_BIND_HOST": "127.0.0.1",
        "DICOM_NODE_LOG_LEVEL": "WARNING",
        "DICOM_NODE_MAX_FIND_MATCHES": "100000",
    }
    if url:
        extra["DICOM_NODE_DATABASE_URL"] = url
    if pythonpath is not None:
        extra["PYTHONPATH"] = str(pythonpath)  # another checkout's node
    log = run_dir / "node.log"
    proc = _spawn([DICOM_NODE, "serve"], log=log, env=_env(extra), cwd=run_dir)
    try:
        _wait_for_health(http, proc, log, timeout=120)
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def orthanc_server(run_dir: Path) -> Iterator[tuple[int, int]]:
    port, http = _free_port(), _free_port()
    config = {
        "Name": "dicom-node-bench", "StorageDirectory": str(run_dir / "storage"),
        "IndexDirectory": str(run_dir / "index"), "StorageCompression": False, "Plugins": [],
        "HttpPort": http, "DicomPort": port, "DicomAet": "ORTHANC", "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomAlwaysAllowFind": True,
        "LimitFindResults": 0, "LimitFindInstances": 0, "DicomModalities": {}, "OrthancPeers": {},
    }  # fmt: skip
    (run_dir / "orthanc.json").write_text(json.dumps(config))
    log = run_dir / "orthanc.log"
    proc = _spawn([ORTHANC, run_dir / "orthanc.json"], log=log, env=_env(), cwd=run_dir)
    try:
        _wait_for_port(port, proc, log, timeout=60)
        _wait_for_port(http, proc, log, timeout=60)
        yield port, http
    finally:
        _stop(proc)


# ------------------------------------------------------------------------ the run


def run_target(
    target: str, size: int, port: int, called: str, args: argparse.Namespace
) -> list[Result]:
    results = []
    for query in queries(size):
        scu, matches = time_pynetdicom(port, called, query, args.repeat)
        findscu = time_findscu(port, called, query, args.findscu_repeat)
        results.append(Result(target, size, query.name, matches, scu, findscu))
        print(
            f"  {target:<16} {size:>8} {query.name:<28} {matches:>5} matches  "
            f"scu p50 {p(scu, 0.5):7.2f} ms  p95 {p(scu, 0.95):7.2f}  "
            f"findscu p50 {p(findscu, 0.5):7.2f}",
            flush=True,
        )
    return results


def run_interleaved(
    targets: list[tuple[str, int, str]], size: int, args: argparse.Namespace
) -> list[Result]:
    """Every query on every target in turn, ``args.rounds`` times; a Result's
    ``scu`` holds the per-round p50s, ``findscu`` the per-round p95s."""
    p50: dict[tuple[str, str], list[float]] = {}
    p95: dict[tuple[str, str], list[float]] = {}
    matches: dict[tuple[str, str], int] = {}
    for round_number in range(args.rounds):
        for query in queries(size):
            for target, port, called in targets:
                times, found = time_pynetdicom(port, called, query, args.repeat)
                key = (target, query.name)
                p50.setdefault(key, []).append(p(times, 0.5))
                p95.setdefault(key, []).append(p(times, 0.95))
                matches[key] = found
                print(
                    f"  round {round_number + 1} {target:<14} {query.name:<28} {found:>5} "
                    f"matches  p50 {p(times, 0.5):7.2f} ms  p95 {p(times, 0.95):7.2f}",
                    flush=True,
                )
    return [
        Result(target, size, query.name, matches[(target, query.name)],
               p50[(target, query.name)], p95[(target, query.name)])
        for query in queries(size)
        for target, _, _ in targets
    ]  # fmt: skip


def interleaved_report(results: list[Result], rounds: int) -> str:
    targets = list(dict.fromkeys(r.target for r in results))
    lines = [
        f"SCU p50 / p95 in ms, each the median of {rounds} interleaved rounds",
        "",
        f"| query | matches | {' | '.join(targets)} | ratios of p50 |",
        "|---|---:|" + "---:|" * len(targets) + "---|",
    ]
    by_query: dict[str, list[Result]] = {}
    for r in results:
        by_query.setdefault(r.query, []).append(r)
    for query, rows in by_query.items():
        cells = " | ".join(f"{p(r.scu, 0.5):.2f} / {p(r.findscu, 0.5):.2f}" for r in rows)
        ratios = ", ".join(
            f"{a.target}/{b.target} {p(a.scu, 0.5) / p(b.scu, 0.5):.2f}"
            for i, a in enumerate(rows)
            for b in rows[i + 1 :]
        )
        lines.append(f"| {query} | {rows[0].matches} | {cells} | {ratios} |")
    return "\n".join(lines)


@contextlib.contextmanager
def _interleaved_targets(
    root: Path, size: int, args: argparse.Namespace
) -> Iterator[list[tuple[str, int, str]]]:
    run_dir = root / f"interleaved-{size}"
    (run_dir / "data").mkdir(parents=True)
    url = f"sqlite:///{run_dir / 'data' / 'dicom-node.sqlite3'}"
    start = time.perf_counter()
    build_index(url, size)
    print(f"sqlite {size}: index built in {time.perf_counter() - start:.1f} s")
    with contextlib.ExitStack() as stack:
        targets: list[tuple[str, int, str]] = []
        if args.baseline is not None:
            old_dir = run_dir / "baseline"
            (old_dir / "data").mkdir(parents=True)
            old_db = old_dir / "data" / "dicom-node.sqlite3"
            shutil.copyfile(run_dir / "data" / "dicom-node.sqlite3", old_db)
            port = stack.enter_context(node_server(old_dir, f"sqlite:///{old_db}", args.baseline))
            targets.append(("node-baseline", port, "DICOM_NODE"))
        targets.insert(0, ("node", stack.enter_context(node_server(run_dir, url)), "DICOM_NODE"))
        if args.orthanc:
            orthanc_dir = run_dir / "orthanc"
            orthanc_dir.mkdir()
            write_part10(orthanc_dir / "files", size)
            port, http = stack.enter_context(orthanc_server(orthanc_dir))
            _load_orthanc(orthanc_dir, port, http)
            targets.append(("orthanc", port, "ORTHANC"))
        yield targets


def _load_orthanc(run_dir: Path, port: int, http: int) -> None:
    start = time.perf_counter()
    subprocess.run(
        [STORESCU, "-aec", "ORTHANC", "+sd", "+r", "-xs", "127.0.0.1", str(port),
         str(run_dir / "files")],
        check=True, capture_output=True, env=_env(),
    )  # fmt: skip
    count = _orthanc_get(http, "/statistics")["CountInstances"]
    print(f"orthanc: {count} instances loaded in {time.perf_counter() - start:.1f} s")


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="query-bench-", dir=args.root))
    results: list[Result] = []
    backends = ["sqlite", *(["postgresql"] if args.postgres else [])]
    orthanc = args.orthanc
    try:
        if args.rounds > 1 or args.baseline is not None:
            orthanc = False  # measured in the interleaved rounds
            with _interleaved_targets(root, sizes[0], args) as targets:
                interleaved = run_interleaved(targets, sizes[0], args)
            print()
            print(interleaved_report(interleaved, args.rounds))
            print()
            sizes = sizes[1:]
            if not sizes:
                return 0
        for backend in backends:
            with database(backend) as make_url:
                for size in sizes:
                    run_dir = root / f"{backend}-{size}"
                    (run_dir / "data").mkdir(parents=True)
                    url = make_url(run_dir, str(size))
                    start = time.perf_counter()
                    build_index(url, size)
                    print(f"{backend} {size}: index built in {time.perf_counter() - start:.1f} s")
                    with node_server(run_dir, url) as port:
                        results += run_target(f"node-{backend}", size, port, "DICOM_NODE", args)
        if orthanc:
            size = sizes[0]
            run_dir = root / "orthanc"
            run_dir.mkdir()
            write_part10(run_dir / "files", size)
            with orthanc_server(run_dir) as (port, http):
                _load_orthanc(run_dir, port, http)
                results += run_target("orthanc", size, port, "ORTHANC", args)
    finally:
        _kill_all()
    print()
    print(report(results, sizes))
    return 0


def report(results: list[Result], sizes: list[int]) -> str:
    lines = [
        "| target | size | query | matches | SCU p50 ms | SCU p95 ms | findscu p50 ms "
        "| findscu p95 ms | p50 growth vs smallest | p50 / Orthanc | p95 / Orthanc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.target, r.size, r.query): r for r in results}
    for r in results:
        first = by_key.get((r.target, sizes[0], r.query))
        growth = f"{p(r.scu, 0.5) / p(first.scu, 0.5):.2f}x" if first else ""
        orthanc = by_key.get(("orthanc", r.size, r.query))
        vs50 = vs95 = ""
        if orthanc and r.target != "orthanc":
            vs50 = f"{p(r.scu, 0.5) / p(orthanc.scu, 0.5):.2f}"
            vs95 = f"{p(r.scu, 0.95) / p(orthanc.scu, 0.95):.2f}"
        lines.append(
            f"| {r.target} | {r.size} | {r.query} | {r.matches} | {p(r.scu, 0.5):.2f} "
            f"| {p(r.scu, 0.95):.2f} | {p(r.findscu, 0.5):.1f} | {p(r.findscu, 0.95):.1f} "
            f"| {growth} | {vs50} | {vs95} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="index sizes (instances)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false")
    parser.add_argument("--repeat", type=int, default=50, help="timed SCU runs per query")
    parser.add_argument("--findscu-repeat", type=int, default=10)
    parser.add_argument("--root", type=Path, default=Path("/tmp/dicom-node-bench"))
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds at the first size (see above)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of an older node to compare, interleaved"
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the measuring part runs in a private network namespace)")
    ensure_tools()
    args.root.mkdir(parents=True, exist_ok=True)
    command = ["unshare", "-n", "--", sys.executable, str(Path(__file__).resolve())]
    return subprocess.run([*command, *args.argv, "--inside"]).returncode


if __name__ == "__main__":
    sys.exit(main())
