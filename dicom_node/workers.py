"""DICOM worker processes: several receivers on one port.

pynetdicom runs every association on Python threads, so one process uses one
core for C-STORE however many modalities send at once (the GIL). The main
process binds the DICOM port (and the DICOM TLS port) once and starts
``dicom_workers`` processes that inherit the listening sockets; each runs the
same SCP (handlers, services, database, TLS handshakes) and the kernel gives
every new connection to one of them. The main
process keeps the HTTP API and the scheduler, restarts a worker that dies, and
on shutdown passes SIGTERM on so every worker gives its associations the grace
period.

Run as ``python -m dicom_node.workers PLAIN_FD TLS_FD PARENT_PID`` (``-`` for a
port not served): the settings arrive as JSON on stdin (never in argv or the
environment, where other users could read a database password), and the worker
prints ``ready`` once it serves.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from dicom_node import log_limit
from dicom_node.db.engine import Database
from dicom_node.logging_setup import configure_logging
from dicom_node.metrics import (
    MULTIPROCESS_ENV,
    multiprocess_dir,
    reset_multiprocess_dir,
    worker_exited,
)
from dicom_node.scp.server import (
    DicomServer,
    Listeners,
    bind_listeners,
    configure_pynetdicom,
    log_listening,
)
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

log = logging.getLogger("dicom_node.scp")

READY = "ready"
START_TIMEOUT_SECONDS = 60.0
# A worker that keeps dying is not restarted in a tight loop.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 60.0


class WorkerStartError(RuntimeError):
    pass


class WorkerPool:
    """The main process's side: the listening socket and the worker processes."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._listeners: Listeners | None = None
        self._workers: list[subprocess.Popen[str]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._restarts: list[float] = []
        self._monitor: threading.Thread | None = None
        # the workers' metric files, added to the main process's at GET /metrics
        self._metrics_dir = multiprocess_dir(settings.data_dir)

    def start(self) -> tuple[str, int]:
        """Bind, start every worker and wait until all serve; raises ListenError on bind."""
        reset_multiprocess_dir(self._metrics_dir)
        listeners = bind_listeners(self._settings)
        self._listeners = listeners
        try:
            for _ in range(self._count):
                self._workers.append(self._spawn())
        except BaseException:
            self.stop(0)
            raise
        self._monitor = threading.Thread(target=self._watch, name="dicom-workers", daemon=True)
        self._monitor.start()
        log_listening(self._settings, listeners, f" ({self._count} worker processes)")
        return self._settings.bind_host, self.port

    @property
    def port(self) -> int:
        """The DICOM port; 0 when only the TLS port is served."""
        return _port(self._listeners.plain if self._listeners else None)

    @property
    def tls_port(self) -> int:
        """The DICOM TLS port; 0 when there is none."""
        return _port(self._listeners.tls if self._listeners else None)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [worker.pid for worker in self._workers if worker.poll() is None]

    def is_listening(self) -> bool:
        listeners = self._listeners
        return (
            listeners is not None
            and all(
                listener.fileno() != -1
                for listener in (listeners.plain, listeners.tls)
                if listener is not None
            )
            and bool(self.pids)
        )

    def _spawn(self) -> subprocess.Popen[str]:
        assert self._listeners is not None
        fds = [
            listener.fileno() if listener is not None else None
            for listener in (self._listeners.plain, self._listeners.tls)
        ]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicom_node.workers",
                *("-" if fd is None else str(fd) for fd in fds),
                str(os.getpid()),
            ],
            pass_fds=[fd for fd in fds if fd is not None],
            # prometheus_client reads it at import: the worker's metrics go to files
            env={**os.environ, MULTIPROCESS_ENV: str(self._metrics_dir)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        # secrets are masked in a dump, and a worker serves no HTTP: leave them out
        process.stdin.write(self._settings.model_dump_json(exclude={"metrics_token"}))
        process.stdin.close()
        if not _wait_for_ready(process, START_TIMEOUT_SECONDS):
            process.kill()
            process.wait()
            raise WorkerStartError("a DICOM worker process did not start (see the log above)")
        return process

    def _watch(self) -> None:
        """Reap workers that died and keep the pool full, at most RESTART_LIMIT
        starts a minute (a crash loop is logged, and refilled once it calms)."""
        warned = False
        while not self._stopping.wait(0.5):
            with self._lock:
                dead = [w for w in self._workers if w.poll() is not None]
                for worker in dead:
                    self._workers.remove(worker)
                missing = self._count - len(self._workers)
            for worker in dead:
                _close_pipe(worker)
                worker_exited(self._metrics_dir, worker.pid)
                log.error(
                    "DICOM worker %d exited with code %s; its associations were lost",
                    worker.pid,
                    worker.returncode,
                )
            for _ in range(missing):
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
                if len(self._restarts) >= RESTART_LIMIT:
                    if not warned:
                        log.error("DICOM workers keep exiting: restarts paused for a minute")
                        warned = True
                    break
                warned = False
                self._restarts.append(now)
                try:
                    replacement = self._spawn()
                except (OSError, WorkerStartError) as exc:
                    log.error("could not restart a DICOM worker: %s", exc)
                    continue
                with self._lock:
                    if self._stopping.is_set():  # stop() began while it started
                        replacement.terminate()
                        replacement.wait()
                        _close_pipe(replacement)
                        return
                    self._workers.append(replacement)
                log.info("DICOM worker %d started", replacement.pid)

    def begin_stop(self) -> None:
        """No more restarts: called first thing at shutdown, before the HTTP
        server and the scheduler stop, so a worker exiting meanwhile is not replaced."""
        with self._lock:
            self._stopping.set()

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM every worker (each lets its associations finish within the grace
        period, then aborts them), wait, and close the listening socket."""
        self.begin_stop()
        if self._monitor is not None:
            self._monitor.join(timeout=START_TIMEOUT_SECONDS + 5)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + 10
        for worker in workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("DICOM worker %d did not stop; killing it", worker.pid)
                worker.kill()
                worker.wait()
            _close_pipe(worker)
            worker_exited(self._metrics_dir, worker.pid)
        if self._listeners is not None:
            self._listeners.close()
            self._listeners = None
        log.info("DICOM SCP stopped")


def _port(listener: socket.socket | None) -> int:
    return int(listener.getsockname()[1]) if listener is not None else 0


def _close_pipe(process: subprocess.Popen[str]) -> None:
    if process.stdout is not None:
        process.stdout.close()


def _wait_for_ready(process: subprocess.Popen[str], timeout: float) -> bool:
    stdout = process.stdout
    assert stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return bool(result) and result[0].strip() == READY


# --------------------------------------------------------------------------- worker side


def run_worker(plain_fd: int | None, tls_fd: int | None, parent: int) -> int:
    # Ctrl-C reaches the whole process group: the main process handles it and
    # passes SIGTERM on, in the order shutdown needs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.model_validate_json(sys.stdin.read())
    configure_logging(settings.log_level, fmt=settings.log_format)
    configure_pynetdicom(
        log_phi=settings.log_phi, accept_unknown_sop_classes=settings.accept_unknown_sop_classes
    )
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    listeners = Listeners(
        plain=socket.socket(fileno=plain_fd) if plain_fd is not None else None,
        tls=socket.socket(fileno=tls_fd) if tls_fd is not None else None,
    )
    db = Database(settings.database_url)
    server = DicomServer(
        settings,
        db,
        FileStore(settings.data_dir, fsync=settings.fsync),
        listeners=listeners,
        # Each worker takes the node's whole limit: the kernel hands a connection to
        # whichever worker accepts first, not the least loaded, so a per-worker
        # share refused associations while another worker sat idle.
    )
    try:
        server.start()
        print(READY, flush=True)
        # An orphaned worker (the main process was killed) stops by itself; the
        # parent's pid came in argv, so a parent gone before now is noticed too.
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("main process gone: DICOM worker %d stopping", os.getpid())
                break
        server.stop(settings.shutdown_grace_seconds)
        log_limit.flush_all()  # refusal lines still held back, with their counts
    finally:
        db.dispose()
    return 0


def _fd(arg: str) -> int | None:
    return None if arg == "-" else int(arg)


if __name__ == "__main__":
    sys.exit(run_worker(_fd(sys.argv[1]), _fd(sys.argv[2]), int(sys.argv[3])))
