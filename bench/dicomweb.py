"""DICOMweb benchmark: dicom-node's QIDO-RS, WADO-RS and rendered resources
against Orthanc's DICOMweb plugin, on the same data, in one run.

A script, not a timed test. Run as root from the repository:

    .venv/bin/python bench/dicomweb.py                    # 10,000 studies, CT of 1,500
    .venv/bin/python bench/dicomweb.py --studies 500 --ct-instances 60 --repeat 20
        # a quick check of the setup
    .venv/bin/python bench/dicomweb.py --database postgresql   # the node on a PostgreSQL
    .venv/bin/python bench/dicomweb.py --keep             # keep the servers' data and logs

What it does:

1. generates two data sets with pydicom, deterministically, into a cache
   directory reused by later runs: ``--studies`` small studies of one
   instance each (the patients, names, dates and accession numbers of
   bench/query.py: two studies a patient, dates over 1,000 days, one modality
   a study), and one CT study of ``--ct-instances`` instances in three series
   (512x512, 16-bit, explicit VR little endian, about 0.5 MB an instance);
2. re-executes itself inside a private network namespace (``unshare -n``, as
   bench/ingest.py does) and starts ``dicom-node serve`` (defaults; a service
   account's API key from the CLI, sent as ``Authorization: Bearer``) and
   Orthanc with its DICOMweb plugin (its default SQLite index, no
   authentication, keep-alive on, no HTTP compression);
3. loads the small studies into both with ``/usr/bin/storescu`` (2 clients
   each), checks both hold every instance, and waits until what the load set
   off is over (the node's study-stability job and Orthanc's stable-study
   events, 60 s after a study's last instance; then both idle for 2 s), as
   after every load;
4. QIDO-RS: times study searches on both over one keep-alive connection each
   (``http.client``, opened before the clock), each query alternating between
   the two, ``--repeat`` times after one untimed warm-up: by PatientID, by
   PatientName wildcard, by StudyDate (a week), by ModalitiesInStudy and a
   day, by AccessionNumber, and a plain ``?limit=100`` list; the clock runs
   from sending the request to the last byte of the answer (not parsed); the
   number of matches is read from the warm-up's answer, and must be the same
   on both;
5. loads the CT study into both (storescu, 2 clients), then WADO-RS: retrieves
   the whole study ``--rounds`` times from each, alternating (who goes first
   alternates too), after one untimed retrieve each, with ``curl -o /dev/null``
   (a C client that discards the bytes) asking for
   ``multipart/related; type="application/dicom"; transfer-syntax=*`` (as
   stored; the files are stored as sent); MB/s (10^6 bytes) from curl's byte
   count and total time, whose median is compared; the byte count must be at
   least the study's files and within 2% of them;
6. rendered: ``GET .../instances/{uid}/rendered`` and
   ``.../frames/1/rendered`` (``Accept: image/jpeg``), ``--render-repeat``
   times on each target, alternating, a different instance of the middle
   series each time (the same one on both), one keep-alive connection each;
   every answer must be a 512x512 JPEG;
7. prints the tables (p50, p95, node/Orthanc ratios; below 1 the node is
   faster for latencies, above 1 for MB/s), the versions, the date, the load
   average at each phase, and the verdict against the issue's targets.

The issue's targets (issue 17, item 7): QIDO p50 and p95 at or below Orthanc's
plugin, WADO-RS MB/s at or above it, a rendered 512x512 uncompressed CT frame
in under 50 ms p50.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
import pynetdicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import UID  # noqa: E402

from bench.ingest import (  # noqa: E402
    DATABASES,
    DICOM_NODE,
    MAX_PDU,
    ORTHANC,
    DataSet,
    Server,
    _base_dataset,
    _env,
    _free_port,
    _kill_all,
    _node_count,
    _orthanc_get,
    _phantom,
    _spawn,
    _stop,
    _tree_cpu_seconds,
    _uid,
    _version,
    _wait_for_health,
    _wait_for_port,
    client_dirs,
    database,
    ensure_tools,
    send,
    warm,
)
from bench.query import (  # noqa: E402
    CT,
    EXPLICIT_LE,
    FIRST_DAY,
    MODALITIES,
    p,
    series_uid,
    sop_uid,
    study_fields,
    study_uid,
)

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian's orthanc-dicomweb
DATA_VERSION = "1"  # bump when the generated data changes; the cache is regenerated
CT_SIZE = 512
CT_SERIES = 3
LOAD_CLIENTS = 2
NODE_ROOT, ORTHANC_ROOT = "/dicomweb", "/dicom-web"
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
TARGET_RENDERED_P50_MS = 50.0
STABLE_WAIT = 75.0  # the stable age of both (60 s), the node's check interval (10 s), margin
SETTLE_LIMIT = 600.0


# ------------------------------------------------------------------------ data


def small_modality(i: int) -> str:
    """One modality a study, mixed within a day (bench/query.py's dates repeat
    every 1,000 studies), so that ModalitiesInStudy + a day narrows the day."""
    return MODALITIES[(i + i // 1000) % len(MODALITIES)]


def _small_file(path: Path, i: int) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid(i, 0, 0)
    ds.StudyInstanceUID = study_uid(i)
    ds.SeriesInstanceUID = series_uid(i, 0)
    for keyword, value in study_fields(i).items():
        setattr(ds, keyword, value)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = small_modality(i), 1, 1
    ds.StudyID, ds.ReferringPhysicianName = str(i), "REFERRER^ANN"
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDescription = "19700101", "O", "BENCH"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid(i, 0, 0))
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _ct_file(path: Path, name: str, series: int, instance: int, pixels: bytes) -> None:
    ds = _base_dataset(
        sop_instance_uid=_uid(name, "instance", series, instance),
        study_uid=_uid(name, "study"),
        series_uid=_uid(name, "series", series),
        patient=1,
        study=1,
        series=series,
        instance=instance,
    )
    position = -100.0 - instance * 1.0
    attributes: dict[str, object] = {
        "StudyDescription": "CT CHEST ABDOMEN PELVIS W CONTRAST",
        "SeriesDescription": f"Axial 1.0 mm part {series}",
        "BodyPartExamined": "CHEST",
        "SliceThickness": 1.0,
        "KVP": 120,
        "ConvolutionKernel": "B30f",
        "PatientPosition": "FFS",
        "ImagePositionPatient": [-250.0, -250.0, position],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "FrameOfReferenceUID": _uid(name, "frame"),
        "SliceLocation": position,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": CT_SIZE,
        "Columns": CT_SIZE,
        "PixelSpacing": [0.9765625, 0.9765625],
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": [40, -600],
        "WindowWidth": [400, 1500],
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "RescaleType": "HU",
    }
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    shift = (instance * 2) % len(pixels)  # every slice distinct: roll by one pixel
    ds.PixelData = pixels[shift:] + pixels[:shift]
    ds.save_as(path, enforce_file_format=True)


def _series_sizes(count: int) -> list[int]:
    base, extra = divmod(count, CT_SERIES)
    return [base + (series < extra) for series in range(CT_SERIES)]


def prepare(cache: Path, kind: str, count: int) -> DataSet:
    """The set from the cache, generated first when it is not there (deterministic)."""
    name = f"dicomweb-{kind}-{count}"
    root = cache / name
    marker, manifest = root / "complete.json", root / "manifest.txt"
    expected = {"version": DATA_VERSION, "count": count}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        cached = [root / line for line in manifest.read_text().split()]
        studies = count if kind == "small" else 1
        return DataSet(name, cached, studies, sum(f.stat().st_size for f in cached))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating {name} into {root} ...", flush=True)
    started = time.monotonic()
    files: list[Path] = []
    if kind == "small":
        for i in range(count):
            path = root / f"{i // 1000:03d}" / f"{i:06d}.dcm"
            path.parent.mkdir(exist_ok=True)
            _small_file(path, i)
            files.append(path)
    else:
        for series, size in enumerate(_series_sizes(count), start=1):
            pixels = _phantom(CT_SIZE, CT_SIZE, seed=series)
            (root / f"se{series}").mkdir()
            for instance in range(1, size + 1):
                path = root / f"se{series}" / f"i{instance:04d}.dcm"
                _ct_file(path, name, series, instance, pixels)
                files.append(path)
    manifest.write_text("".join(f"{f.relative_to(root)}\n" for f in files))
    marker.write_text(json.dumps(expected))
    print(f"  {len(files)} files in {time.monotonic() - started:.0f} s", flush=True)
    return prepare(cache, kind, count)


def ct_uids(data: DataSet) -> tuple[str, list[tuple[str, str]]]:
    """The CT study's UID and (series, instance) UIDs of its middle series."""
    middle = (CT_SERIES + 1) // 2
    instances = []
    study = ""
    for path in data.files:
        if path.parent.name != f"se{middle}":
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = str(ds.StudyInstanceUID)
        instances.append((str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)))
    return study, instances


# ------------------------------------------------------------------------ targets


@dataclass
class Target:
    name: str  # "node" or "orthanc"
    server: Server
    root: str  # the DICOMweb base path
    headers: dict[str, str]
    connection: http.client.HTTPConnection | None = None
    reconnections: int = 0

    def get(self, path: str, accept: str) -> tuple[int, bytes]:
        """One request on the keep-alive connection (opened on first use). A
        connection the server closed while idle (uvicorn after 5 s, Orthanc
        1.10's CivetWeb sooner; neither configurable here) is opened again and
        the request sent again, counted in ``reconnections``: that request's
        time includes the connect."""
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.server.http_port, timeout=300
                )
            try:
                self.connection.request(
                    "GET", self.root + path, headers={**self.headers, "Accept": accept}
                )
                answer = self.connection.getresponse()
                body = answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or attempt == 2:
                    raise
                self.reconnections += 1
                continue
            if answer.will_close:  # a server that closes: a new connection next time
                self.close()
            return answer.status, body
        raise AssertionError("unreachable")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.http_port}{self.root}{path}"

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@contextlib.contextmanager
def node_target(run_dir: Path, url: str) -> Iterator[Target]:
    """``dicom-node serve`` with its defaults, and a read-images API key made by
    the CLI before it starts (the key alone on stdout)."""
    run_dir.mkdir(parents=True)
    config = run_dir / "node.toml"
    config.write_text("# bench: defaults plus the environment\n")
    port, http_port = _free_port(), _free_port()
    env = _env(
        {
            "DICOM_NODE_CONFIG": str(config),
            "DICOM_NODE_DATA_DIR": str(run_dir / "data"),
            "DICOM_NODE_DATABASE_URL": url,
            "DICOM_NODE_DICOM_PORT": str(port),
            "DICOM_NODE_HTTP_PORT": str(http_port),
            "DICOM_NODE_BIND_HOST": "127.0.0.1",
            "DICOM_NODE_LOG_LEVEL": "WARNING",
        }
    )
    cli = [str(DICOM_NODE), "service-account"]
    subprocess.run(
        [*cli, "create", "bench", "--role", "radiologist", "--description", "bench/dicomweb.py"],
        check=True, capture_output=True, env=env, cwd=run_dir,
    )  # fmt: skip
    key = subprocess.run(
        [*cli, "key", "bench", "--scope", "read-images", "--days", "2", "--label", "bench"],
        check=True, capture_output=True, text=True, env=env, cwd=run_dir,
    ).stdout.strip()  # fmt: skip
    log = run_dir / "node.log"
    proc = _spawn([DICOM_NODE, "serve"], log=log, env=env, cwd=run_dir)
    try:
        _wait_for_health(http_port, proc, log, timeout=120)
        server = Server(proc, port, "DICOM_NODE", log, run_dir / "data", http_port, url=url)
        yield Target("node", server, NODE_ROOT, {"Authorization": f"Bearer {key}"})
    finally:
        _stop(proc)


@contextlib.contextmanager
def orthanc_target(run_dir: Path) -> Iterator[Target]:
    """Orthanc with its DICOMweb plugin's defaults (the plugin enabled at /dicom-web/)."""
    run_dir.mkdir(parents=True)
    port, http_port = _free_port(), _free_port()
    config = {
        "Name": "dicom-node-bench", "StorageDirectory": str(run_dir / "storage"),
        "IndexDirectory": str(run_dir / "index"), "StorageCompression": False,
        "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": f"{ORTHANC_ROOT}/"},
        "HttpPort": http_port, "DicomPort": port, "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "MaximumPduLength": MAX_PDU,
        # keep-alive and no Nagle, as the node's HTTP server (asyncio) does; no gzip
        # (curl and http.client do not ask for it anyway)
        "KeepAlive": True, "TcpNoDelay": True, "HttpCompressionEnabled": False,
        "DicomModalities": {}, "OrthancPeers": {},
    }  # fmt: skip
    config_file = run_dir / "orthanc.json"
    config_file.write_text(json.dumps(config, indent=2))
    log = run_dir / "orthanc.log"
    proc = _spawn([ORTHANC, config_file], log=log, env=_env(), cwd=run_dir)
    try:
        _wait_for_port(http_port, proc, log, timeout=60)
        _wait_for_port(port, proc, log, timeout=60)
        server = Server(proc, port, "ORTHANC", log, run_dir / "storage", http_port)
        yield Target("orthanc", server, ORTHANC_ROOT, {})
    finally:
        _stop(proc)


def held(target: Target) -> int:
    if target.name == "node":
        return _node_count(target.server)
    return int(str(_orthanc_get(target.server.http_port, "/statistics")["CountInstances"]))


def load(targets: list[Target], data: DataSet, work: Path) -> None:
    """``data`` into every target with storescu; every instance must be held."""
    warm(data)
    dirs = client_dirs(data, LOAD_CLIENTS, work / "links")
    for target in targets:
        before = held(target)
        logs = work / f"load-{target.name}-{data.name}"
        logs.mkdir()
        seconds, errors = send(
            dirs, target.server.port, target.server.ae_title, logs, 600 + len(data.files)
        )
        count = held(target) - before
        if errors or count != len(data.files):
            sys.exit(f"bench: loading {data.name} into {target.name}: {count} held, {errors}")
        print(
            f"{target.name:8} {data.name}: {count} instances loaded in {seconds:.1f} s",
            flush=True,
        )
    settle(targets)


def settle(targets: list[Target]) -> None:
    """Wait until what the load set off is over, so that it does not run during
    the measurements: the node's study-stability job and Orthanc's stable-study
    events (both 60 s after a study's last instance, the node's checked every
    10 s: at least ``STABLE_WAIT``), then until every server's process tree
    used under 2% of a core for 2 s."""
    started = time.monotonic()
    time.sleep(STABLE_WAIT)
    while time.monotonic() - started < SETTLE_LIMIT:
        before = [_tree_cpu_seconds(t.server.proc.pid) for t in targets]
        time.sleep(2.0)
        used = [
            _tree_cpu_seconds(t.server.proc.pid) - b for t, b in zip(targets, before, strict=True)
        ]
        if max(used) < 0.04:
            print(f"  settled: idle {time.monotonic() - started:.0f} s after the load", flush=True)
            return
    print(
        f"  WARNING: still busy {SETTLE_LIMIT:.0f} s after the load; measuring anyway", flush=True
    )


# ------------------------------------------------------------------------ QIDO-RS


@dataclass(frozen=True)
class Query:
    name: str
    params: dict[str, str]


def qido_queries(studies: int) -> list[Query]:
    """Study searches around a study in the middle of the set (bench/query.py's)."""
    i = studies // 2 + 7
    fields = study_fields(i)
    day = FIRST_DAY.toordinal() + i % 1000
    first, last = (datetime.fromordinal(d) for d in (day, day + 6))
    # NAME00025*: with 2 studies a patient, the 100 patients sharing the prefix
    return [
        Query("PatientID", {"PatientID": fields["PatientID"]}),
        Query("PatientName wildcard", {"PatientName": fields["PatientName"][:9] + "*"}),
        Query("StudyDate week", {"StudyDate": f"{first:%Y%m%d}-{last:%Y%m%d}"}),
        Query(
            "ModalitiesInStudy + date",
            {"ModalitiesInStudy": small_modality(i), "StudyDate": f"{first:%Y%m%d}"},
        ),
        Query("AccessionNumber", {"AccessionNumber": fields["AccessionNumber"]}),
        Query("list ?limit=100", {"limit": "100"}),
    ]


@dataclass
class Latency:
    what: str
    answers: dict[str, int] = field(default_factory=dict)  # target -> matches (or bytes)
    ms: dict[str, list[float]] = field(default_factory=dict)  # target -> timings


def _timed(target: Target, path: str, accept: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    status, body = target.get(path, accept)
    return (time.perf_counter() - start) * 1000, status, body


def measure_qido(targets: list[Target], studies: int, repeat: int) -> list[Latency]:
    results = []
    for query in qido_queries(studies):
        result = Latency(query.name)
        # "*" as it is: Orthanc's plugin does not decode %2A, and finds nothing
        path = f"/studies?{urlencode(query.params, safe='*')}"
        for target in targets:  # the warm-up, not timed: it gives the matches
            _, status, body = _timed(target, path, "application/dicom+json")
            if status not in (200, 204):  # 204: no match (PS3.18 allows it)
                sys.exit(f"bench: {target.name} QIDO {path}: HTTP {status} {body[:200]!r}")
            result.answers[target.name] = len(json.loads(body)) if status == 200 else 0
            result.ms[target.name] = []
        for n in range(repeat):
            for target in targets if n % 2 == 0 else targets[::-1]:
                ms, status, _ = _timed(target, path, "application/dicom+json")
                if status not in (200, 204):
                    sys.exit(f"bench: {target.name} QIDO {path}: HTTP {status}")
                result.ms[target.name].append(ms)
        results.append(result)
        print(f"  QIDO {_line(result)}", flush=True)
    return results


def _line(result: Latency) -> str:
    return f"{result.what:<26} " + "  ".join(
        f"{name} {result.answers[name]} found, p50 {p(ms, 0.5):7.2f} ms p95 {p(ms, 0.95):7.2f}"
        for name, ms in result.ms.items()
    )


# ------------------------------------------------------------------------ WADO-RS


@dataclass
class Retrieve:
    study_bytes: int  # the files' sizes summed
    bytes: dict[str, int] = field(default_factory=dict)
    mb_s: dict[str, list[float]] = field(default_factory=dict)


def _curl(target: Target, path: str) -> tuple[int, float]:
    """Bytes and seconds of one streamed retrieve, the bytes discarded by curl."""
    args = ["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code} %{size_download} "
            "%{time_total}", "-H", f"Accept: {RETRIEVE_ACCEPT}"]  # fmt: skip
    for name, value in target.headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, target.url(path)], check=True, capture_output=True, text=True)
    status, size, seconds = out.stdout.split()
    if status != "200":
        sys.exit(f"bench: {target.name} WADO-RS {path}: HTTP {status}")
    return int(size), float(seconds)


def measure_retrieve(targets: list[Target], study: str, data: DataSet, rounds: int) -> Retrieve:
    result = Retrieve(data.total_bytes)
    path = f"/studies/{study}"
    for target in targets:
        size, _ = _curl(target, path)  # from the page cache for both from here on
        if not data.total_bytes <= size <= data.total_bytes * 1.02:
            sys.exit(
                f"bench: {target.name} retrieve gave {size} bytes, the study is "
                f"{data.total_bytes}: not the whole study"
            )
        result.bytes[target.name] = size
        result.mb_s[target.name] = []
    for n in range(rounds):
        for target in targets if n % 2 == 0 else targets[::-1]:
            size, seconds = _curl(target, path)
            if size != result.bytes[target.name]:
                sys.exit(f"bench: {target.name} retrieve gave {size} bytes this time")
            result.mb_s[target.name].append(size / seconds / 1e6)
            print(
                f"  round {n + 1} {target.name:8} {size / 1e6:.1f} MB in {seconds:.2f} s"
                f" = {size / seconds / 1e6:.1f} MB/s",
                flush=True,
            )
    return result


# ------------------------------------------------------------------------ rendered


def measure_rendered(
    targets: list[Target], study: str, instances: list[tuple[str, str]], repeat: int
) -> list[Latency]:
    results = []
    for what, suffix in (
        ("instance rendered", "/rendered"),
        ("frame 1 rendered", "/frames/1/rendered"),
    ):
        result = Latency(what)
        for target in targets:
            result.ms[target.name] = []
        for n in range(repeat + 1):  # the first, not timed, checks the image
            series, sop = instances[n % len(instances)]
            path = f"/studies/{study}/series/{series}/instances/{sop}{suffix}"
            for target in targets if n % 2 == 0 else targets[::-1]:
                ms, status, body = _timed(target, path, "image/jpeg")
                if n == 0:
                    _check_jpeg(target, path, status, body)
                    result.answers[target.name] = len(body)
                else:
                    if status != 200:
                        sys.exit(f"bench: {target.name} {path}: HTTP {status}")
                    result.ms[target.name].append(ms)
        results.append(result)
        print(f"  {_line(result)}", flush=True)
    return results


def _check_jpeg(target: Target, path: str, status: int, body: bytes) -> None:
    if status != 200:
        sys.exit(f"bench: {target.name} {path}: HTTP {status} {body[:200]!r}")
    with Image.open(io.BytesIO(body)) as image:
        if image.format != "JPEG" or image.size != (CT_SIZE, CT_SIZE):
            sys.exit(f"bench: {target.name} {path}: {image.format} {image.size}")


# ------------------------------------------------------------------------ report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(
    qido: list[Latency], retrieve: Retrieve, rendered: list[Latency], args: argparse.Namespace
) -> str:
    lines = [
        f"QIDO-RS study search at {args.studies} studies, ms over {args.repeat} requests "
        "(keep-alive, alternating)",
        "",
        "| query | matches node / Orthanc | node p50 | node p95 | Orthanc p50 | Orthanc p95 "
        "| node/Orthanc p50 | p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in qido:
        node, orthanc = r.ms["node"], r.ms["orthanc"]
        lines.append(
            f"| {r.what} | {r.answers['node']} / {r.answers['orthanc']} "
            f"| {p(node, 0.5):.2f} | {p(node, 0.95):.2f} | {p(orthanc, 0.5):.2f} "
            f"| {p(orthanc, 0.95):.2f} | {_ratio(p(node, 0.5), p(orthanc, 0.5))} "
            f"| {_ratio(p(node, 0.95), p(orthanc, 0.95))} |"
        )
    node_mb, orthanc_mb = (median(retrieve.mb_s[t]) for t in ("node", "orthanc"))
    lines += [
        "",
        f"WADO-RS retrieve of the CT study ({args.ct_instances} instances of {CT_SIZE}x{CT_SIZE}, "
        f"{retrieve.study_bytes / 1e6:.1f} MB of files), as stored, curl to /dev/null, "
        f"{args.rounds} rounds alternating: MB/s (10^6 bytes)",
        "",
        "| target | bytes received | median MB/s | each round | node/Orthanc |",
        "|---|---:|---:|---|---:|",
    ]
    for name, mb in (("node", node_mb), ("orthanc", orthanc_mb)):
        rounds = ", ".join(f"{x:.0f}" for x in retrieve.mb_s[name])
        ratio = _ratio(node_mb, orthanc_mb) if name == "node" else ""
        lines.append(f"| {name} | {retrieve.bytes[name]} | {mb:.1f} | {rounds} | {ratio} |")
    lines += [
        "",
        f"Rendered {CT_SIZE}x{CT_SIZE} CT (image/jpeg), ms over {args.render_repeat} requests, "
        "a different instance each (keep-alive, alternating)",
        "",
        "| resource | JPEG bytes node / Orthanc | node p50 | node p95 | Orthanc p50 "
        "| Orthanc p95 | node/Orthanc p50 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rendered:
        node, orthanc = r.ms["node"], r.ms["orthanc"]
        lines.append(
            f"| {r.what} | {r.answers['node']} / {r.answers['orthanc']} | {p(node, 0.5):.2f} "
            f"| {p(node, 0.95):.2f} | {p(orthanc, 0.5):.2f} | {p(orthanc, 0.95):.2f} "
            f"| {_ratio(p(node, 0.5), p(orthanc, 0.5))} |"
        )
    return "\n".join(lines)


def verdict(qido: list[Latency], retrieve: Retrieve, rendered: list[Latency]) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    slower = [
        r.what for r in qido if any(p(r.ms["node"], q) > p(r.ms["orthanc"], q) for q in (0.5, 0.95))
    ]
    same = all(r.answers["node"] == r.answers["orthanc"] for r in qido)
    node_mb, orthanc_mb = (median(retrieve.mb_s[t]) for t in ("node", "orthanc"))
    worst = max(p(r.ms["node"], 0.5) for r in rendered)
    return "\n".join(
        [
            f"QIDO p50 and p95 <= Orthanc's on every query: {met(not slower)}"
            + (f" (slower: {', '.join(slower)})" if slower else "")
            + ("" if same else "; WARNING: the match counts differ"),
            f"WADO-RS MB/s >= Orthanc's: {met(node_mb >= orthanc_mb)} "
            f"({node_mb:.1f} vs {orthanc_mb:.1f})",
            f"rendered p50 < {TARGET_RENDERED_P50_MS:.0f} ms: "
            f"{met(worst < TARGET_RENDERED_P50_MS)} (worst p50 {worst:.1f} ms)",
        ]
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def facts(args: argparse.Namespace, targets: list[Target], database_note: str) -> str:
    orthanc = next(t for t in targets if t.name == "orthanc")
    plugin = _orthanc_get(orthanc.server.http_port, "/plugins/dicom-web").get("Version", "?")
    system = _orthanc_get(orthanc.server.http_port, "/system")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    command = " ".join(["python", "bench/dicomweb.py", *args.argv])
    return "\n".join(
        [
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: {command}",
            f"machine: nproc {os.cpu_count()}, {platform.platform()}",
            f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
            f"pynetdicom {pynetdicom.__version__}, {_version([str(DICOM_NODE), '--version'])} "
            f"(commit {commit or '?'}), Orthanc {system.get('Version', '?')} with its DICOMweb "
            f"plugin {plugin}, {' '.join(_version(['curl', '--version']).split()[:2])}",
            f"node: defaults, index on {database_note}, a read-images API key; "
            "Orthanc: default SQLite index, plugin defaults, no authentication",
        ]
    )


# ------------------------------------------------------------------------ the run


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    cache = args.root / "data"
    small = prepare(cache, "small", args.studies)
    ct = prepare(cache, "ct", args.ct_instances)
    study, instances = ct_uids(ct)
    work = Path(tempfile.mkdtemp(prefix="dicomweb-", dir=args.root))
    loads: list[tuple[str, str]] = [("start", _load())]
    try:
        with contextlib.ExitStack() as stack:
            make_url = stack.enter_context(database(args.database))
            url = make_url(work / "node", "dicomweb")
            node = stack.enter_context(node_target(work / "node", url))
            orthanc = stack.enter_context(orthanc_target(work / "orthanc"))
            targets = [node, orthanc]
            header = facts(args, targets, args.database)
            print(header, flush=True)

            load(targets, small, work)
            loads.append(("QIDO", _load()))
            print(f"QIDO-RS ({args.repeat} requests a query and target) ...", flush=True)
            qido = measure_qido(targets, args.studies, args.repeat)

            load(targets, ct, work)
            loads.append(("WADO-RS", _load()))
            print(f"WADO-RS retrieve ({args.rounds} rounds) ...", flush=True)
            retrieve = measure_retrieve(targets, study, ct, args.rounds)

            loads.append(("rendered", _load()))
            print(f"rendered ({args.render_repeat} requests each) ...", flush=True)
            rendered = measure_rendered(targets, study, instances, args.render_repeat)
            loads.append(("end", _load()))
            reopened = ", ".join(f"{t.name} {t.reconnections}" for t in targets)
            for target in targets:
                target.close()
    finally:
        _kill_all()
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(header)
    print("load average (1, 5, 15 min): " + "; ".join(f"{k} {v}" for k, v in loads))
    print(f"keep-alive connections the server closed while idle, reopened: {reopened}")
    print()
    print(report(qido, retrieve, rendered, args))
    print()
    print(verdict(qido, retrieve, rendered))
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000, help="small studies (10000)")
    parser.add_argument("--ct-instances", type=int, default=1500, help="the CT study (1500)")
    parser.add_argument("--repeat", type=int, default=100, help="timed QIDO requests (100)")
    parser.add_argument("--rounds", type=int, default=7, help="timed retrieves per target (7)")
    parser.add_argument("--render-repeat", type=int, default=50, help="rendered requests (50)")
    parser.add_argument("--database", choices=DATABASES, default="sqlite", help="the node's")
    parser.add_argument("--keep", action="store_true", help="keep the run's data and logs")
    parser.add_argument("--root", type=Path, default=Path("/tmp/dicom-node-bench"))
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = [a for a in argv if a != "--inside"]
    if args.studies < 100 or args.ct_instances < CT_SERIES:
        parser.error("--studies at least 100, --ct-instances at least 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the measuring part runs in a private network namespace)")
    ensure_tools()
    if not Path(PLUGIN).exists():
        subprocess.run(["apt-get", "install", "-y", "orthanc-dicomweb"], check=True)
    if shutil.which("curl") is None:
        sys.exit("bench: curl not found")
    args.root.mkdir(parents=True, exist_ok=True)
    prepare(args.root / "data", "small", args.studies)  # generated here, read inside
    prepare(args.root / "data", "ct", args.ct_instances)
    command = ["unshare", "-n", "--", sys.executable, str(Path(__file__).resolve())]
    return subprocess.run([*command, *args.argv, "--inside"]).returncode


if __name__ == "__main__":
    sys.exit(main())
