"""Helpers shared by the test suites: external tools (DCMTK's findscu, the
`dicom-node` command, `dicom-node serve` in the background), free ports,
PostgreSQL. What tests build (data, peers, tables) is in tests/builders.py."""

from __future__ import annotations

import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy

if TYPE_CHECKING:
    from dicom_node.node import Node

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "sample_dicom"
COMMAND = [sys.executable, "-m", "dicom_node"]


def require(condition: bool, why: str) -> None:
    """Skip outside CI; in CI a missing prerequisite is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI is missing a prerequisite: {why}")
    pytest.skip(why)


def dcmtk_tool(name: str) -> str:
    """The DCMTK binary itself: pynetdicom installs scripts of the same names in the venv."""
    path = Path("/usr/bin") / name
    require(path.exists(), f"DCMTK's {name} is not installed (apt-get install dcmtk)")
    return str(path)


def dcmtk_env() -> dict[str, str]:
    # DCMTK leaves Nagle on unless told otherwise: 40 ms stalls per request.
    return {**os.environ, "TCP_NODELAY": "1"}


def findscu(
    node: Node, out: Path, *keys: str, model: str = "-S", extra: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk_tool("findscu"), model, "-aec", "DICOM_NODE", "-X", "-od", str(out), *extra]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(node.dicom_port)],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=60,
    )
    return result, [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def findscu_w(node: Node, out: Path, *keys: str, calling: str = "CT_MAIN_1") -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        dcmtk_tool("findscu"),
        "-W",
        "-aet",
        calling,
        "-aec",
        "DICOM_NODE",
        "-X",
        "-od",
        str(out),
    ]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(node.dicom_port)],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_PORTS = random.SystemRandom()  # not random's seeded state: the same in every xdist worker
_GIVEN: set[int] = set()  # never twice in a process: two calls in a row, both bound later


def free_port() -> int:
    """A port nothing listens on, for a server a test starts later (DCMTK's storescp,
    a `dicom-node serve`, PostgreSQL).

    Below the kernel's ephemeral range: a port from that range (a bind to port 0)
    could be taken meanwhile by any outgoing connection (a node's, a PostgreSQL
    client's, the other xdist worker's), and the server's bind then failed with
    EADDRINUSE. A port below it is taken only by a bind to that very port, such as
    the other xdist worker's free_port() drawing the same one of some 12,000."""
    low, _ = _ephemeral_ports()
    for _ in range(200):
        port = _PORTS.randrange(max(1024, low - 12_000), low)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # free on every address, not only loopback
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int

    def url(self, database: str = "postgres", *, user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    def psycopg_dsn(self, database: str = "postgres", *, user: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={user} dbname={database}"


@contextmanager
def run_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server in a temp dir on a free loopback port.

    initdb refuses to run as root, so as root the server runs as the `postgres`
    user the Debian package creates. ``durable`` keeps PostgreSQL's own flushes
    (fsync, synchronous commit, full page writes), as a benchmark must.
    """
    with run_restartable_postgres(durable=durable) as postgres:
        yield postgres.server


class RestartablePostgres:
    """A throw-away PostgreSQL server a test may stop and start again (same port, same data)."""

    def __init__(
        self, bin_dir: Path, base: Path, prefix: list[str], *, durable: bool = False
    ) -> None:
        self._durable = durable
        self._pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(base / "data")]
        self._log = base / "server.log"
        self._base = base
        self.server = PostgresServer("127.0.0.1", free_port())

    def start(self) -> None:
        options = (
            f"-p {self.server.port} -k {self._base} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 "
        )
        if not self._durable:
            # test data is disposable: skip the flushes that make a real server durable
            options += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            [*self._pg_ctl, "-l", str(self._log), "-o", options, "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        """``fast`` ends every session at once, as a DBA's restart does."""
        subprocess.run(
            [*self._pg_ctl, "-m", mode, "-w", "-t", "60", "stop"], check=check, capture_output=True
        )


@contextmanager
def run_restartable_postgres(*, durable: bool = False) -> Iterator[RestartablePostgres]:
    """``run_postgres`` for tests that also stop and start the server."""
    bin_dir = postgres_bin_dir()
    require(
        bin_dir is not None, "PostgreSQL server binaries not found (apt-get install postgresql)"
    )
    assert bin_dir is not None
    as_root = os.geteuid() == 0
    prefix: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="dicom-node-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            *("-D", str(base / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
            *("--locale=C", "--no-sync"),
        ],
        check=True,
        capture_output=True,
    )
    postgres = RestartablePostgres(bin_dir, base, prefix, durable=durable)
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop("immediate", check=False)  # a no-op if the test left it stopped
        # the session's server holds a database copy per test (GBs, ~10^5 files):
        # removing them must not hold up the end of the run
        subprocess.Popen(["rm", "-rf", str(base)], start_new_session=True)


def backdate_study(session: Session, study_id: int, received: datetime) -> None:
    """Make a study and all its instances look received at ``received``."""
    session.execute(
        update(DicomStudy)
        .where(DicomStudy.id == study_id)
        .values(first_received_at=received, last_received_at=received)
    )
    session.execute(
        update(DicomInstance)
        .where(
            DicomInstance.series_pk.in_(
                select(DicomSeries.id).where(DicomSeries.study_pk == study_id)
            )
        )
        .values(received_at=received)
    )


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --------------------------------------------------------------------------- dicom-node serve


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    env["DICOM_NODE_DATA_DIR"] = str(tmp_path / "data")
    env.update({f"DICOM_NODE_{name.upper()}": value for name, value in settings.items()})
    return env


def run(
    tmp_path: Path, *args: str, stdin: str = "", **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=clean_env(tmp_path, **settings),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dicom-node: error:")]
    assert len(errors) == 1, result.stderr
    assert text in errors[0]


class Served:
    """`dicom-node serve` in the background, its log read as it runs."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        settings = {"dicom_port": "0", "http_port": "0", **settings}
        self.process = subprocess.Popen(
            [*COMMAND, "serve"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=tmp_path,
            env=clean_env(tmp_path, **settings),
            # its own process group, so a test can kill the node and its workers at once
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{''.join(self.lines)}")

    def ports(self) -> tuple[int, int]:
        self.wait_for_line(r"running \(SIGINT or SIGTERM to stop\)")
        dicom = int(self.wait_for_line(r"DICOM SCP listening on [\d.]+:(\d+)").group(1))
        http = int(self.wait_for_line(r"HTTP API listening on http://[\d.]+:(\d+)").group(1))
        return dicom, http

    def kill_all(self) -> None:
        """SIGKILL the main process and its DICOM workers together, as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


class StoreSender(threading.Thread):
    """One association sending one CT instance to a node (AE title DICOM_NODE);
    ``status`` once answered, None if no answer came (the node died first)."""

    def __init__(self, port: int, ds: Dataset) -> None:
        super().__init__(daemon=True)
        self.port, self.ds = port, ds
        self.status: int | None = None

    def run(self) -> None:
        ae = AE(ae_title="BATCH_SCU")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        assoc = ae.associate("127.0.0.1", self.port, ae_title="DICOM_NODE")
        assert assoc.is_established
        try:
            answer = assoc.send_c_store(self.ds)
            self.status = int(answer.Status) if "Status" in answer else None
        finally:
            if assoc.is_established:
                assoc.release()
