"""Ingest benchmark: dicom-node against Orthanc and DCMTK storescp, sent by storescu.

A script, not a timed test. Run as root from the repository:

    .venv/bin/python bench/ingest.py                 # CT 1,500 + small 5,000, 1 and 4 clients
    .venv/bin/python bench/ingest.py --quick         # small numbers, to check the setup
    .venv/bin/python bench/ingest.py --ct 0 --small 0 --soak 20000   # RSS-flat check only
    .venv/bin/python bench/ingest.py --database postgresql   # the node on a PostgreSQL it starts

What it does:

1. installs what is missing (dcmtk, orthanc) with apt-get, then generates the data
   sets with pydicom, deterministically, into a cache directory reused by later runs:
   a CT-like set (256x256 16-bit, about 130 KB an instance, several series a study,
   explicit VR little endian) and a small set (about 1.5 KB an instance over 1,000
   studies);
2. re-executes itself inside a private network namespace (``unshare -n``, then
   ``ip link set lo up``), because storescp and Orthanc listen on every interface;
3. for each set x client count x target (dicom-node, Orthanc with its default SQLite
   index, storescp writing files: the practical ceiling), starts the target on a fresh
   empty storage directory, sends the set with K parallel ``/usr/bin/storescu``
   (disjoint parts, TCP_NODELAY=1), times first start to last exit, checks that every
   storescu exited 0 and that the target holds every instance (the node's SQLite
   index, Orthanc's /statistics, storescp's files), samples the peak RSS and PSS of
   the target's process tree every 0.2 s, and stops the target;
4. prints a table: instances/s, node/Orthanc and node/storescp ratios, peak RSS
   (summed over the node's processes, each counting the pages they share) and
   peak PSS (shared pages split among them: what the tree costs the machine).

``--profile`` then reads the node's /metrics after each node run (its worker
processes' figures merged by prometheus_client's multiprocess mode) and prints
the per-instance milliseconds of each ingest stage (receive, header, write,
sync, index, respond: dicom_node_ingest_stage_seconds), the mean group-commit
batch, and the CPU the node's process tree used per instance (/proc, user +
system): what the stages do not account for is pynetdicom's own per-message
work (PDU decoding, thread hand-offs, polling).

``--database postgresql`` runs the node on a throw-away PostgreSQL server
started inside the namespace (durable: fsync and synchronous commit on), a
fresh database per node run; the default is the node's own SQLite file.

``--node-env KEY=VALUE`` (repeatable) runs the node with that setting in its
environment, e.g. ``--node-env DICOM_NODE_FSYNC=false`` to see what the disk
flushes cost; the first line of the output names it.

``--soak N`` then sends N unique small instances to one node with 4 clients and
samples the RSS of its process tree every second: RSS flat over the run or not.

The issue's target: at least Orthanc's instances/s with full indexing, at 1 and 4
clients, on both sets, and RSS flat over 20,000 instances.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pydicom
import pynetdicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, generate_uid

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"
REPO = Path(__file__).resolve().parent.parent
DICOM_NODE = Path(sys.executable).parent / "dicom-node"

DEFAULT_ROOT = Path("/tmp/dicom-node-bench")
DATA_VERSION = "3"  # bump when the generated data changes; the cache is regenerated
TARGETS = ("node", "orthanc", "storescp")
DATABASES = ("sqlite", "postgresql")
MAX_PDU = 131072  # DCMTK's largest; storescu sends, storescp and Orthanc receive this size
RSS_INTERVAL = 0.2
SOAK_INTERVAL = 1.0

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

# Every DCMTK process (storescu, storescp, Orthanc's DICOM layer) reads this; without it
# Nagle's algorithm stalls each small PDU and every DCMTK peer looks ten times slower.
TCP_ENV = {"TCP_NODELAY": "1"}
# the node's /metrics token under --profile (a private namespace: nobody else asks)
PROFILE_TOKEN = secrets.token_urlsafe(24)
STAGES = ("receive", "header", "write", "sync", "index", "respond")

_children: list[subprocess.Popen[bytes]] = []  # killed on any exit, see _kill_all


# --------------------------------------------------------------------------------------
# data generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    name: str
    files: list[Path]
    studies: int
    total_bytes: int

    @property
    def mean_kb(self) -> float:
        return self.total_bytes / max(len(self.files), 1) / 1024


def _uid(*parts: object) -> str:
    # pydicom hashes the sources joined with nothing between them: without a
    # separator (study 1, series 12) and (study 11, series 2) made one UID
    return str(
        generate_uid(entropy_srcs=["|".join(["dicom-node-bench", DATA_VERSION, *map(str, parts)])])
    )


def _phantom(rows: int, columns: int, seed: int) -> bytes:
    """A CT-like axial slice in stored values (HU + 1024, 12 bits): body, lungs, spine."""
    rng = random.Random(seed)
    pixels = array("H", bytes(rows * columns * 2))
    cy, cx = rows / 2, columns / 2
    for y in range(rows):
        for x in range(columns):
            dy, dx = (y - cy) / rows, (x - cx) / columns
            if (dx / 0.42) ** 2 + (dy / 0.32) ** 2 > 1:
                hu = -1000
            elif ((abs(dx) - 0.17) / 0.13) ** 2 + (dy / 0.22) ** 2 < 1:
                hu = -820
            elif (dx / 0.05) ** 2 + ((dy - 0.2) / 0.05) ** 2 < 1:
                hu = 700
            else:
                hu = 40
            pixels[y * columns + x] = max(0, min(4095, hu + 1024 + rng.randint(-12, 12)))
    if sys.byteorder != "little":
        pixels.byteswap()
    return pixels.tobytes()


def _base_dataset(
    *,
    sop_instance_uid: str,
    study_uid: str,
    series_uid: str,
    patient: int,
    study: int,
    series: int,
    instance: int,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DICOMNODE_BENCH"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    day = 1 + study % 28
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"202601{day:02d}"
    ds.StudyTime = f"{8 + study % 10:02d}{study % 60:02d}00"
    ds.SeriesTime = f"{8 + study % 10:02d}{study % 60:02d}{series * 5:02d}"
    ds.ContentTime = f"{8 + study % 10:02d}{study % 60:02d}{series * 5:02d}.{instance:06d}"
    ds.AccessionNumber = f"BENCH{study:08d}"
    ds.Modality = "CT"
    ds.Manufacturer = "BENCH"
    ds.ReferringPhysicianName = "REFERRER^ANN"
    ds.PatientName = f"BENCH^PATIENT{patient:06d}"
    ds.PatientID = f"BP{patient:08d}"
    ds.PatientBirthDate = f"19{40 + patient % 60:02d}0{1 + patient % 9}15"
    ds.PatientSex = "MF"[patient % 2]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{study}"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    return ds


def _ct_instance(
    path: Path, set_name: str, study: int, series: int, instance: int, pixels: bytes
) -> None:
    study_uid = _uid(set_name, "study", study)
    ds = _base_dataset(
        sop_instance_uid=_uid(set_name, "instance", study, series, instance),
        study_uid=study_uid,
        series_uid=_uid(set_name, "series", study, series),
        patient=study,
        study=study,
        series=series,
        instance=instance,
    )
    thickness = (5.0, 1.0, 2.0)[(series - 1) % 3]
    position = -100.0 - instance * thickness
    extra = {
        "InstitutionName": "Bench General Hospital",
        "StationName": "CT01",
        "StudyDescription": "CT CHEST ABDOMEN PELVIS W CONTRAST",
        "SeriesDescription": ("Axial 5.0 mm", "Axial 1.0 mm B30f", "Coronal MPR 2 mm")[
            (series - 1) % 3
        ],
        "ManufacturerModelName": "Bench CT 128",
        "SoftwareVersions": "bench 1.0",
        "PatientAge": "054Y",
        "BodyPartExamined": "CHEST",
        "ContrastBolusAgent": "IOHEXOL 350",
        "ScanOptions": "HELICAL MODE",
        "SliceThickness": thickness,
        "KVP": 120,
        "DataCollectionDiameter": 500,
        "ReconstructionDiameter": 380,
        "DistanceSourceToDetector": 1085.6,
        "DistanceSourceToPatient": 595,
        "GantryDetectorTilt": 0,
        "TableHeight": 160,
        "RotationDirection": "CW",
        "ExposureTime": 500,
        "XRayTubeCurrent": 220,
        "Exposure": 110,
        "FilterType": "FLAT",
        "GeneratorPower": 26,
        "FocalSpots": 1.2,
        "ConvolutionKernel": "B30f",
        "PatientPosition": "FFS",
        "AcquisitionNumber": 1,
        "ImagePositionPatient": [-190.0, -190.0, position],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "FrameOfReferenceUID": _uid(set_name, "frame", study),
        "PositionReferenceIndicator": "",
        "SliceLocation": position,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 256,
        "Columns": 256,
        "PixelSpacing": [1.484375, 1.484375],
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": [40, -600],
        "WindowWidth": [400, 1500],
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "RescaleType": "HU",
        "WindowCenterWidthExplanation": ["WINDOW1", "WINDOW2"],
    }
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    shift = (instance * 2) % len(pixels)  # every slice distinct: roll by one pixel
    ds.PixelData = pixels[shift:] + pixels[:shift]
    ds.save_as(path, enforce_file_format=True)


def _small_instance(path: Path, set_name: str, study: int, series: int, instance: int) -> None:
    ds = _base_dataset(
        sop_instance_uid=_uid(set_name, "instance", study, series, instance),
        study_uid=_uid(set_name, "study", study),
        series_uid=_uid(set_name, "series", study, series),
        patient=study,
        study=study,
        series=series,
        instance=instance,
    )
    extra = {
        "StudyDescription": "CT HEAD WO CONTRAST",
        "SeriesDescription": f"Axial {series}",
        "BodyPartExamined": "HEAD",
        "SliceThickness": 5.0,
        "KVP": 120,
        "ImagePositionPatient": [0.0, 0.0, instance * 5.0],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "FrameOfReferenceUID": _uid(set_name, "frame", study),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 12,
        "Columns": 12,
        "PixelSpacing": [0.5, 0.5],
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
    }
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    seed = (study * 131 + series * 17 + instance) % 4096
    ds.PixelData = array("H", [(seed + i * 7) % 4096 for i in range(144)]).tobytes()
    ds.save_as(path, enforce_file_format=True)


CT_SERIES = (40, 200, 60)  # instances per series: a CT study of 300 instances in 3 series


def _ct_layout(count: int) -> Iterator[tuple[int, int, int]]:
    made, study = 0, 0
    while made < count:
        study += 1
        for series, size in enumerate(CT_SERIES, start=1):
            for instance in range(1, size + 1):
                if made == count:
                    return
                yield study, series, instance
                made += 1


def _small_layout(count: int, studies: int) -> Iterator[tuple[int, int, int]]:
    per_study, extra = divmod(count, studies)
    for study in range(1, studies + 1):
        for index in range(per_study + (study <= extra)):
            yield study, 1 + index % 2, 1 + index // 2  # two series a study


def prepare_set(cache: Path, kind: str, count: int, studies: int) -> DataSet:
    """The set from the cache, generated first when it is not there (deterministic)."""
    name = f"{kind}-{count}" if kind == "ct" else f"{kind}-{count}-{studies}"
    root = cache / name
    marker = root / "complete.json"
    manifest = root / "manifest.txt"
    expected = {"version": DATA_VERSION, "count": count, "studies": studies}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        cached = [root / line for line in manifest.read_text().split()]
        return DataSet(name, cached, studies, sum(f.stat().st_size for f in cached))

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating {name} into {root} ...", flush=True)
    started = time.monotonic()
    files: list[Path] = []
    if kind == "ct":
        layout = _ct_layout(count)
        phantoms: dict[int, bytes] = {}
    else:
        layout = _small_layout(count, studies)
    for study, series, instance in layout:
        path = root / f"st{study:05d}" / f"se{series}" / f"i{instance:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "ct":
            if series not in phantoms:
                phantoms[series] = _phantom(256, 256, seed=series)
            _ct_instance(path, name, study, series, instance, phantoms[series])
        else:
            _small_instance(path, name, study, series, instance)
        files.append(path)
    manifest.write_text("".join(f"{f.relative_to(root)}\n" for f in files))
    marker.write_text(json.dumps(expected))
    print(f"  {len(files)} files in {time.monotonic() - started:.0f} s", flush=True)
    return DataSet(name, files, studies, sum(f.stat().st_size for f in files))


# --------------------------------------------------------------------------------------
# processes, ports, RSS
# --------------------------------------------------------------------------------------


def _spawn(
    args: Sequence[str | Path], *, log: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    try:
        proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: we stop the whole tree
        )
    finally:
        handle.close()
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"  pid {proc.pid} ignored SIGTERM for {grace:.0f} s: SIGKILL", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (storescp --fork)
    proc.wait()
    if proc in _children:
        _children.remove(proc)


def _kill_all() -> None:
    for proc in list(_children):
        _stop(proc, grace=10.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} at start:\n{_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout:.0f} s:\n{_tail(log)}")


def _wait_for_health(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} at start:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"node not healthy after {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _tree(root: int) -> list[int]:
    """A process and all its descendants (walks /proc by PPid)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process tree so far (live processes; a worker that
    exited meanwhile is not counted: the pool keeps its workers for the run)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / ticks


def _node_profile(server: Server, instances: int, cpu_seconds: float) -> dict[str, float]:
    """Per-instance ms of each stage from the node's /metrics, the mean batch, CPU."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/metrics",
        headers={"Authorization": f"Bearer {PROFILE_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http only)
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("dicom_node_ingest_"):
            name, _, number = line.rpartition(" ")
            samples[name] = float(number)
    profile: dict[str, float] = {}
    for stage in STAGES:
        total = samples.get(f'dicom_node_ingest_stage_seconds_sum{{stage="{stage}"}}', 0.0)
        profile[stage] = total * 1000 / max(instances, 1)
    commits = samples.get("dicom_node_ingest_batch_instances_count", 0.0)
    batched = samples.get("dicom_node_ingest_batch_instances_sum", 0.0)
    profile["batch"] = batched / commits if commits else 0.0
    profile["cpu"] = cpu_seconds * 1000 / max(instances, 1)
    return profile


def profile_table(results: list[Measurement]) -> str:
    """ms per instance by stage, wall time per instance, and the node's CPU."""
    head = ["set", "clients", *STAGES, "sum", "wall/inst", "CPU/inst", "batch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in results:
        if not m.profile:
            continue
        p = m.profile
        stages = [f"{p[s]:.2f}" for s in STAGES]
        wall = m.seconds * 1000 / max(m.instances, 1)
        lines.append(
            f"| {m.set_name} | {m.clients} | "
            + " | ".join(stages)
            + f" | {sum(p[s] for s in STAGES):.2f} | {wall:.2f} | {p['cpu']:.2f} | "
            + f"{p['batch']:.1f} |"
        )
    return "\n".join(lines)


def _tree_memory_kb(root: int) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over a process and all its descendants (walks /proc
    by PPid). RSS counts a page shared by several processes (a shared library, the
    node's worker processes' copies of the same code) once per process; PSS
    (proportional set size) splits it among them, so a tree of processes that
    share pages is not charged several times for one page. For a single process
    (Orthanc) the two are about equal."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    rss = pss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(parents.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                    break
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
        except OSError:
            continue
    return rss, pss


class RssSampler(threading.Thread):
    """Samples the RSS and PSS of a process tree until stopped; keeps the peaks and
    the RSS samples."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, pss = _tree_memory_kb(self.pid)
            self.samples.append((time.monotonic(), rss))
            self.peak_kb = max(self.peak_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    ae_title: str
    log: Path
    store: Path
    http_port: int = 0
    note: str = ""
    url: str = ""  # the node's database URL, when not its default SQLite file


class Target(Protocol):
    name: str

    def start(self, run_dir: Path, clients: int) -> Server: ...

    def count(self, server: Server) -> int: ...


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    env.update(TCP_ENV)
    env.update(extra or {})
    return env


# (run directory, database name) -> the node's database URL for one run
DatabaseUrl = Callable[[Path, str], str]


@contextlib.contextmanager
def database(backend: str) -> Iterator[DatabaseUrl]:
    """A fresh, empty database for each node run: a SQLite file in the run directory,
    or a database on one throw-away PostgreSQL server that lives as long as the block
    (started inside the bench's network namespace, durable: fsync and synchronous
    commit on, as the node's SQLite syncs its WAL)."""
    if backend == "sqlite":
        yield lambda run_dir, name: f"sqlite:///{run_dir / 'data' / 'dicom-node.sqlite3'}"
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # tests.support, run as a script from anywhere
    import psycopg

    from tests.support import run_postgres

    with run_postgres(durable=True) as server:

        def make(run_dir: Path, name: str) -> str:
            with psycopg.connect(server.psycopg_dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE bench_{name}")
            return str(server.url(f"bench_{name}"))

        yield make


class NodeTarget:
    name = "node"

    def __init__(
        self,
        workers: int | None,
        *,
        profile: bool = False,
        url: DatabaseUrl | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.env = env or {}
        self.profile = profile
        self.url = url
        self._runs = 0

    def start(self, run_dir: Path, clients: int) -> Server:
        empty_config = run_dir / "node.toml"
        empty_config.write_text("# bench: defaults plus the environment\n")
        data = run_dir / "data"
        port, http = _free_port(), _free_port()
        extra = {
            "DICOM_NODE_CONFIG": str(empty_config),
            "DICOM_NODE_DATA_DIR": str(data),
            "DICOM_NODE_DICOM_PORT": str(port),
            "DICOM_NODE_HTTP_PORT": str(http),
            "DICOM_NODE_BIND_HOST": "127.0.0.1",
            "DICOM_NODE_LOG_LEVEL": "WARNING",
        }
        url = ""
        if self.url is not None:
            self._runs += 1
            url = self.url(run_dir, f"{os.getpid()}_{self._runs}")
            extra["DICOM_NODE_DATABASE_URL"] = url
        if self.workers is not None:
            extra["DICOM_NODE_DICOM_WORKERS"] = str(self.workers)
        if self.profile:
            extra["DICOM_NODE_METRICS_TOKEN"] = PROFILE_TOKEN
        extra.update(self.env)  # --node-env
        log = run_dir / "node.log"
        proc = _spawn([DICOM_NODE, "serve"], log=log, env=_env(extra), cwd=run_dir)
        # Not the DICOM port: with worker processes the main process listens (and
        # queues connections) before the workers serve. /health says ok only then.
        _wait_for_health(http, proc, log, timeout=60)
        return Server(proc, port, "DICOM_NODE", log, data, http, url=url)

    def count(self, server: Server) -> int:
        return _node_count(server)


def _node_count(server: Server) -> int:
    if not server.url.startswith("postgresql"):  # the node's default: SQLite in its data dir
        db = server.store / "dicom-node.sqlite3"
        uri = f"file:{db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            row = conn.execute("select count(*) from dicom_instances").fetchone()
            return int(row[0])
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(server.url)
    dsn = f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"
    with psycopg.connect(dsn) as conn:
        found = conn.execute("select count(*) from dicom_instances").fetchone()
        return int(found[0]) if found else 0


class OrthancTarget:
    name = "orthanc"

    def start(self, run_dir: Path, clients: int) -> Server:
        store = run_dir / "storage"
        port, http = _free_port(), _free_port()
        config = {
            "Name": "dicom-node-bench",
            "StorageDirectory": str(store),
            "IndexDirectory": str(run_dir / "index"),
            "StorageCompression": False,
            "Plugins": [],
            "HttpPort": http,
            "DicomPort": port,
            "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "MaximumPduLength": MAX_PDU,
            "DicomModalities": {},
            "OrthancPeers": {},
        }
        config_file = run_dir / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        log = run_dir / "orthanc.log"
        proc = _spawn([ORTHANC, config_file], log=log, env=_env(), cwd=run_dir)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{_tail(log)}")
            try:
                _orthanc_get(http, "/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc REST not answering:\n{_tail(log)}") from None
                time.sleep(0.1)
        _wait_for_port(port, proc, log, timeout=30)
        return Server(proc, port, "ORTHANC", log, store, http)

    def count(self, server: Server) -> int:
        return int(str(_orthanc_get(server.http_port, "/statistics")["CountInstances"]))


def _orthanc_get(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        result: dict[str, object] = json.load(response)
        return result


class StorescpTarget:
    name = "storescp"

    def start(self, run_dir: Path, clients: int) -> Server:
        store = run_dir / "storage"
        store.mkdir()
        port = _free_port()
        args: list[str | Path] = [STORESCP, "-aet", "STORESCP", "-od", store, "+xa"]
        args += ["-pdu", str(MAX_PDU), "-dhl"]
        note = ""
        if clients > 1:
            args.append("--fork")  # plain storescp serves one association at a time
            note = "--fork"
        args.append(str(port))
        log = run_dir / "storescp.log"
        proc = _spawn(args, log=log, env=_env(), cwd=run_dir)
        _wait_for_port(port, proc, log, timeout=30)
        return Server(proc, port, "STORESCP", log, store, note=note)

    def count(self, server: Server) -> int:
        return sum(len(files) for _, _, files in os.walk(server.store))


# --------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    target: str
    set_name: str
    clients: int
    instances: int
    seconds: float = 0.0
    peak_rss_kb: int = 0
    peak_pss_kb: int = 0
    # the server's process tree, user + system, per instance; None: not known
    # (storescp --fork: its children's CPU is not counted)
    cpu_ms: float | None = None
    stored: int = -1
    errors: list[str] = field(default_factory=list)
    note: str = ""
    # --profile, node runs: ms per instance by stage, "batch", "cpu" (ms/instance)
    profile: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.ok and self.seconds > 0 else 0.0


def client_dirs(data: DataSet, clients: int, links: Path) -> list[Path]:
    """K disjoint, contiguous parts of the set, each a directory of hard links."""
    dirs = []
    size = -(-len(data.files) // clients)
    for k in range(clients):
        part = data.files[k * size : (k + 1) * size]
        target = links / f"{data.name}-{clients}" / f"client{k}"
        if not target.is_dir():
            target.mkdir(parents=True)
            for index, source in enumerate(part):
                link = target / f"{index:06d}.dcm"
                try:
                    os.link(source, link)
                except OSError:
                    shutil.copyfile(source, link)  # another file system
        dirs.append(target)
    return dirs


def send(
    dirs: Sequence[Path], port: int, ae_title: str, logs: Path, timeout: float
) -> tuple[float, list[str]]:
    """Run one storescu per directory in parallel; seconds from first start to last exit."""
    errors: list[str] = []
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.perf_counter()
    for k, directory in enumerate(dirs):
        log = logs / f"storescu{k}.log"
        args: list[str | Path] = [STORESCU, "-aet", f"BENCH{k}", "-aec", ae_title, "-R"]
        args += ["-pdu", str(MAX_PDU), "--max-send-pdu", str(MAX_PDU)]
        args += ["+sd", "127.0.0.1", str(port), directory]
        procs.append((_spawn(args, log=log, env=_env()), log))
    deadline = started + timeout
    for proc, log in procs:
        try:
            proc.wait(timeout=max(deadline - time.perf_counter(), 0.1))
        except subprocess.TimeoutExpired:
            errors.append(f"storescu {proc.pid} still running after {timeout:.0f} s: killed")
            _stop(proc, grace=1)
            continue
        finally:
            with contextlib.suppress(ValueError):
                _children.remove(proc)
        if proc.returncode != 0:
            errors.append(f"storescu exited {proc.returncode}:\n{_tail(log, 8)}")
    elapsed = time.perf_counter() - started
    for _, log in procs:  # exit 0 with error lines is a failure too
        bad = [line for line in log.read_text(errors="replace").splitlines() if "E:" in line]
        if bad:
            errors.append(f"{log.name}: {len(bad)} error lines, first: {bad[0]}")
    return elapsed, errors


def measure(target: Target, data: DataSet, clients: int, work: Path, links: Path) -> Measurement:
    result = Measurement(target.name, data.name, clients, len(data.files))
    dirs = client_dirs(data, clients, links)
    run_dir = work / f"{target.name}-{data.name}-c{clients}"
    run_dir.mkdir(parents=True)
    server: Server | None = None
    sampler: RssSampler | None = None
    try:
        server = target.start(run_dir, clients)
        result.note = server.note
        sampler = RssSampler(server.proc.pid, RSS_INTERVAL)
        sampler.start()
        profiling = isinstance(target, NodeTarget) and target.profile
        cpu_before = _tree_cpu_seconds(server.proc.pid)
        seconds, errors = send(
            dirs, server.port, server.ae_title, run_dir, timeout=300 + len(data.files) * 0.5
        )
        cpu = _tree_cpu_seconds(server.proc.pid) - cpu_before
        if not (isinstance(target, StorescpTarget) and clients > 1):
            result.cpu_ms = cpu * 1000 / len(data.files)
        if profiling:
            result.profile = _node_profile(server, len(data.files), cpu)
        result.seconds = seconds
        result.errors += errors
        result.stored = target.count(server)
        if result.stored != len(data.files):
            result.errors.append(f"{result.stored} of {len(data.files)} instances stored")
        if server.proc.poll() is not None:
            result.errors.append(f"server exited {server.proc.returncode} during the run")
    except Exception as exc:  # a failed run is reported, the others still run
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if sampler is not None:
            sampler.stop()
            result.peak_rss_kb = sampler.peak_kb
            result.peak_pss_kb = sampler.peak_pss_kb
        if server is not None:
            _stop(server.proc)
            if not result.ok:
                problems = _log_problems(server.log)
                if problems:
                    result.errors.append(f"{target.name} log:\n{problems}")
    if result.ok:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        result.errors.append(f"(logs kept in {run_dir})")
    return result


def _log_problems(log: Path, limit: int = 15) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keys = ("ERROR", "Error", "error", "Traceback", "E:", "W:", "WARNING", "Exception")
    picked = [line for line in lines if any(key in line for key in keys)]
    return "\n".join("    " + line for line in (picked or lines)[-limit:])


def warm(data: DataSet) -> None:
    """Read every file once so no target pays for a cold page cache."""
    for path in data.files:
        path.read_bytes()


# --------------------------------------------------------------------------------------
# soak: RSS over N instances
# --------------------------------------------------------------------------------------


def soak(
    data: DataSet,
    workers: int | None,
    work: Path,
    links: Path,
    clients: int = 4,
    url: DatabaseUrl | None = None,
    env: dict[str, str] | None = None,
) -> bool:
    """Whether the soak ran without errors (flat or not is printed)."""
    count = len(data.files)
    print(f"\nsoak: {count} unique small instances to one node, {clients} clients", flush=True)
    dirs = client_dirs(data, clients, links)
    run_dir = work / "soak"
    run_dir.mkdir(parents=True)
    target = NodeTarget(workers, url=url, env=env)
    server = target.start(run_dir, clients)
    samples: list[tuple[float, int, int, int]] = []  # seconds, RSS kB, PSS kB, indexed
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while True:
            try:
                indexed = _node_count(server)
            except Exception:  # a busy or starting database: keep the last count
                indexed = samples[-1][3] if samples else 0
            samples.append((time.monotonic() - t0, *_tree_memory_kb(server.proc.pid), indexed))
            if stop.wait(SOAK_INTERVAL):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    errors: list[str] = []
    try:
        sampler.start()
        time.sleep(2 * SOAK_INTERVAL)  # an idle sample or two before sending
        seconds, errors = send(dirs, server.port, server.ae_title, run_dir, timeout=300 + count)
        time.sleep(2 * SOAK_INTERVAL)
        stop.set()
        sampler.join()
        final = _node_count(server)
        samples.append((samples[-1][0] + SOAK_INTERVAL, *_tree_memory_kb(server.proc.pid), final))
        if final != count:
            errors.append(f"{final} of {count} instances indexed")
    finally:
        stop.set()
        _stop(server.proc)
    if errors:
        print("soak FAILED:\n  " + "\n  ".join(errors) + f"\n{_log_problems(server.log)}")
        print(f"(logs kept in {run_dir})")
        return False
    shutil.rmtree(run_dir, ignore_errors=True)

    def at(fraction: float) -> tuple[float, int, int, int]:
        if fraction == 0:
            return samples[0]
        if fraction == 1:
            return samples[-1]
        return next(s for s in samples if s[3] >= fraction * count)

    print(f"  {count} instances in {seconds:.1f} s = {count / seconds:.1f} inst/s")
    print("  | point | t (s) | indexed | RSS (MB) | PSS (MB) |")
    print("  | --- | ---: | ---: | ---: | ---: |")
    marks = {}
    for label, fraction in (("start", 0.0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75)):
        marks[label] = at(fraction)
    marks["end"] = at(1.0)
    for label, (t, rss, pss, indexed) in marks.items():
        print(f"  | {label} | {t:.0f} | {indexed} | {rss / 1024:.1f} | {pss / 1024:.1f} |")
    base, end = marks["25%"][1], marks["end"][1]
    growth = (end - base) / base * 100 if base else 0.0
    peak = max(s[1] for s in samples)
    flat = growth <= 10.0
    print(
        f"  RSS 25% -> end: {base / 1024:.1f} -> {end / 1024:.1f} MB ({growth:+.1f}%), "
        f"peak {peak / 1024:.1f} MB: {'FLAT' if flat else 'NOT FLAT'} "
        "(flat = at most +10% from the 25% mark, after warm-up, to the end)"
    )
    return True


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _version(args: Sequence[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "missing"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _node_config(extra: dict[str, str]) -> dict[str, str]:
    """The node's effective settings (`dicom-node config show`) under the bench environment."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "node.toml"
        config.write_text("")
        out = subprocess.run(
            [str(DICOM_NODE), "config", "show"],
            capture_output=True,
            text=True,
            env=_env({"DICOM_NODE_CONFIG": str(config), **extra}),
            cwd=tmp,
            check=False,
        )
    if out.returncode != 0:
        return {"error": out.stderr.strip()}
    return dict(line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)


def facts(args: argparse.Namespace, workers_note: str, fsync: str) -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GB"
    fs = subprocess.run(
        ["df", "--output=fstype", str(args.root)], capture_output=True, text=True, check=False
    ).stdout.split()[-1:]
    command = " ".join(["python", "bench/ingest.py", *args.argv])
    return "\n".join(
        [
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: {command}",
            f"machine: nproc {os.cpu_count()}, {cpu}, {mem} RAM, {platform.platform()}, "
            f"work dir {args.root} on {fs[0] if fs else '?'}, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work skews the numbers)",
            f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
            f"pynetdicom {pynetdicom.__version__}, {_version([STORESCU, '--version'])}, "
            f"{_version([ORTHANC, '--version'])}",
            f"node: fsync={fsync} ({_settings_note(args)}), "
            f"full indexing into {_index_note(args)}, "
            f"workers: {workers_note}; Orthanc: default SQLite index, SyncStorageArea default "
            "(true), MaximumPduLength 131072; storescp: -pdu 131072 +xa, no fsync, "
            "--fork at >1 client",
            f"storescu: -R -pdu {MAX_PDU} --max-send-pdu {MAX_PDU}, TCP_NODELAY=1 for "
            "storescu, storescp and Orthanc; inside a private network namespace",
        ]
    )


def _settings_note(args: argparse.Namespace) -> str:
    if not args.node_env:
        return "the default; kept"
    return "defaults but --node-env " + " ".join(f"{k}={v}" for k, v in args.node_env.items())


def _index_note(args: argparse.Namespace) -> str:
    if args.database == "sqlite":
        return "SQLite (WAL)"
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    version = _version([str(bin_dir[-1]), "--version"]) if bin_dir else "PostgreSQL ?"
    return (
        f"{version} (local, throw-away, fsync and synchronous_commit on; started by the "
        "bench, so the node's CPU and memory figures leave the database server out)"
    )


def table(results: list[Measurement], sets: list[DataSet], clients: list[int]) -> str:
    def find(target: str, set_name: str, k: int) -> Measurement | None:
        return next(
            (
                m
                for m in results
                if m.target == target and m.set_name == set_name and m.clients == k
            ),
            None,
        )

    def rate(m: Measurement | None) -> str:
        if m is None:
            return "-"
        return f"{m.rate:.1f}" if m.ok else "FAIL"

    def ratio(a: Measurement | None, b: Measurement | None) -> str:
        if a is None or b is None or not a.ok or not b.ok or b.rate == 0:
            return "-"
        return f"{a.rate / b.rate:.2f}"

    def rss(m: Measurement | None) -> str:
        return "-" if m is None else f"{m.peak_rss_kb / 1024:.0f}"

    def pss(m: Measurement | None) -> str:
        return "-" if m is None else f"{m.peak_pss_kb / 1024:.0f}"

    lines = [
        "| set | clients | node inst/s | orthanc inst/s | storescp inst/s | node/orthanc "
        "| node/storescp | peak RSS MB node | orthanc | storescp | peak PSS MB node "
        "| orthanc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for data in sets:
        label = f"{data.name} ({len(data.files)} x {data.mean_kb:.1f} KB, {data.studies} studies)"
        for k in clients:
            node, orthanc, scp = (find(t, data.name, k) for t in TARGETS)
            lines.append(
                f"| {label} | {k} | {rate(node)} | {rate(orthanc)} | {rate(scp)} "
                f"| {ratio(node, orthanc)} | {ratio(node, scp)} "
                f"| {rss(node)} | {rss(orthanc)} | {rss(scp)} | {pss(node)} | {pss(orthanc)} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--ct", type=int, default=None, help="CT-like instances (1500)")
    parser.add_argument("--small", type=int, default=None, help="small instances (5000)")
    parser.add_argument("--small-studies", type=int, default=None, help="studies (1000)")
    parser.add_argument("--clients", default="1,4", help="parallel storescu counts (1,4)")
    parser.add_argument("--only", default=",".join(TARGETS), help="targets (node,orthanc,storescp)")
    parser.add_argument(
        "--soak",
        type=int,
        nargs="?",
        const=-1,
        default=None,
        help="after the table, N unique small instances to the node: RSS flat? "
        "(20000; 1000 with --quick)",
    )
    parser.add_argument("--workers", type=int, default=None, help="DICOM_NODE_DICOM_WORKERS")
    parser.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a DICOM_NODE_* setting for the node's runs (repeatable), e.g. DICOM_NODE_FSYNC=false",
    )
    parser.add_argument(
        "--profile", action="store_true", help="per-stage ms and CPU per instance of the node"
    )
    parser.add_argument(
        "--database",
        choices=DATABASES,
        default="sqlite",
        help="the node's index: its SQLite file, or a throw-away PostgreSQL server "
        "started for the run (sqlite)",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the measurements to this file"
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data cache, work dir")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = [a for a in argv if a != "--inside"]
    quick = args.quick
    args.ct = args.ct if args.ct is not None else (60 if quick else 1500)
    args.small = args.small if args.small is not None else (250 if quick else 5000)
    if args.small_studies is None:
        args.small_studies = 50 if quick else 1000
    args.small_studies = max(1, min(args.small_studies, args.small // 5 or 1))
    if args.soak == -1:
        args.soak = 1000 if quick else 20000
    args.clients = sorted({int(k) for k in args.clients.split(",") if k.strip()})
    args.only = [t for t in TARGETS if t in {x.strip() for x in args.only.split(",")}]
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients: positive integers, e.g. 1,4")
    if not args.only:
        parser.error(f"--only: some of {','.join(TARGETS)}")
    node_env = dict(item.partition("=")[::2] for item in args.node_env)
    if any(not key.startswith("DICOM_NODE_") or not value for key, value in node_env.items()):
        parser.error("--node-env: DICOM_NODE_<SETTING>=<value>")
    args.node_env = node_env
    return args


def prepare_all(args: argparse.Namespace) -> tuple[list[DataSet], DataSet | None]:
    cache = args.root / "data"
    sets = []
    if args.ct > 0:
        sets.append(prepare_set(cache, "ct", args.ct, -(-args.ct // sum(CT_SERIES))))
    if args.small > 0:
        sets.append(prepare_set(cache, "small", args.small, args.small_studies))
    soak_set = None
    if args.soak:
        soak_set = prepare_set(cache, "soak", args.soak, max(1, args.soak // 5))
    return sets, soak_set


def ensure_tools() -> None:
    needed = {STORESCU: "dcmtk", STORESCP: "dcmtk", ORTHANC: "orthanc"}
    missing = sorted({pkg for path, pkg in needed.items() if not Path(path).exists()})
    if missing:
        print(f"installing {' '.join(missing)} (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found (util-linux, iproute2)")


def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the measuring part runs in a private network namespace)")
    ensure_tools()
    prepare_all(args)  # generate here, so the namespace run only reads the cache
    command = ["unshare", "-n", "--", sys.executable, str(Path(__file__).resolve())]
    proc = subprocess.Popen([*command, *args.argv, "--inside"])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue  # the child got the SIGINT too and is cleaning up; wait for it


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # /proc/self/net is per network namespace (/sys/class/net is the mount's, not ours)
    interfaces = sorted(
        line.split(":")[0].strip()
        for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]
    )
    if interfaces != ["lo"]:
        sys.exit(f"bench: not in a private network namespace (interfaces: {interfaces})")
    sets, soak_set = prepare_all(args)

    defaults = _node_config(args.node_env)
    fsync = defaults.get("fsync", "?")
    if args.workers is None:
        workers_note = (
            f"dicom_workers={defaults['dicom_workers']} (node default; 0 = one per CPU)"
            if "dicom_workers" in defaults
            else "node has no dicom_workers setting"
        )
    elif "dicom_workers" in _node_config({"DICOM_NODE_DICOM_WORKERS": str(args.workers)}):
        workers_note = f"DICOM_NODE_DICOM_WORKERS={args.workers}"
    else:
        workers_note = f"{args.workers} asked, but this node has no dicom_workers: not passed"
        args.workers = None
    header = facts(args, workers_note, fsync)
    print(header, flush=True)

    with database(args.database) as url:
        return _run(args, header, sets, soak_set, url)


def _run(
    args: argparse.Namespace,
    header: str,
    sets: list[DataSet],
    soak_set: DataSet | None,
    url: DatabaseUrl,
) -> int:
    targets: dict[str, Target] = {
        "node": NodeTarget(args.workers, profile=args.profile, url=url, env=args.node_env),
        "orthanc": OrthancTarget(),
        "storescp": StorescpTarget(),
    }
    args.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=args.root))
    links = work / "links"
    results: list[Measurement] = []
    soak_ok = True
    try:
        for data in sets:
            warm(data)
            for k in args.clients:
                for name in args.only:
                    m = measure(targets[name], data, k, work, links)
                    results.append(m)
                    state = "ok" if m.ok else "FAILED"
                    print(
                        f"{name:8} {data.name:16} {k} client(s) {m.note:6}: "
                        f"{m.instances} in {m.seconds:.1f} s = {m.rate:.1f} inst/s, "
                        f"{m.instances * data.mean_kb / 1024 / max(m.seconds, 1e-9):.1f} MB/s, "
                        f"peak RSS {m.peak_rss_kb / 1024:.0f} MB, "
                        f"CPU {_cpu(m)} ms/instance, stored {m.stored}: {state}",
                        flush=True,
                    )
                    for error in m.errors:
                        print("  " + error.replace("\n", "\n  "), flush=True)
                    if m.profile:
                        print(
                            "  profile ms/instance: "
                            + ", ".join(f"{k} {v:.2f}" for k, v in m.profile.items()),
                            flush=True,
                        )
        if results:
            print()
            print(header)
            print()
            print(table(results, sets, args.clients))
            _verdict(results, sets, args.clients)
            if args.profile:
                print("\nnode, ms per instance by stage (wall/inst: the run's wall time per")
                print("instance; CPU/inst: the node's process tree, user + system):\n")
                print(profile_table(results))
            if args.json is not None:
                _write_json(args.json, results, sets)
        if soak_set is not None:
            soak_ok = soak(soak_set, args.workers, work, links, url=url, env=args.node_env)
    finally:
        _kill_all()
        if all(m.ok for m in results) and soak_ok:
            shutil.rmtree(work, ignore_errors=True)
        else:  # failed runs keep their logs
            shutil.rmtree(links, ignore_errors=True)
    return 0 if all(m.ok for m in results) and soak_ok else 1


def _cpu(m: Measurement) -> str:
    return "-" if m.cpu_ms is None else f"{m.cpu_ms:.2f}"


def _write_json(path: Path, results: list[Measurement], sets: list[DataSet]) -> None:
    """The measurements, for a script that runs the bench several times
    (bench/ingest_rounds.py): one object per target, set and client count."""
    kb = {data.name: data.mean_kb for data in sets}
    rows = [
        {
            "target": m.target,
            "set": m.set_name,
            "mean_kb": kb.get(m.set_name, 0.0),
            "clients": m.clients,
            "instances": m.instances,
            "seconds": m.seconds,
            "rate": m.rate if m.ok else None,
            "peak_rss_mb": m.peak_rss_kb / 1024,
            "peak_pss_mb": m.peak_pss_kb / 1024,
            "cpu_ms": m.cpu_ms,
            "profile": m.profile,
            "errors": m.errors,
        }
        for m in results
    ]
    path.write_text(json.dumps({"loadavg": os.getloadavg(), "results": rows}, indent=1))


def _verdict(results: list[Measurement], sets: list[DataSet], clients: list[int]) -> None:
    failed = [m for m in results if not m.ok]
    if failed:
        print(
            f"\n{len(failed)} run(s) FAILED: "
            + ", ".join(f"{m.target}/{m.set_name}/{m.clients}" for m in failed)
        )
    rows = []
    for data in sets:
        for k in clients:
            pair = {
                m.target: m for m in results if m.set_name == data.name and m.clients == k and m.ok
            }
            if "node" in pair and "orthanc" in pair:
                met = pair["node"].rate >= pair["orthanc"].rate
                rows.append(f"{data.name}/{k}: {'met' if met else 'NOT met'}")
    if rows:
        print("\ntarget node >= Orthanc inst/s: " + "; ".join(rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.inside:
        return outside(args)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return inside(args)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        _kill_all()


if __name__ == "__main__":
    sys.exit(main())
