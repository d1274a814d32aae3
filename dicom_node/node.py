"""Composition root: settings -> database -> DICOM SCP, HTTP API, scheduler.

The only module that knows all three front-ends. ``Node`` is used the same way
by ``dicom-node serve`` and by the test fixtures.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from dicom_node import log_limit
from dicom_node.db import migrate, notify
from dicom_node.db.engine import Database, redact_url
from dicom_node.domain.matching import SlaPolicy
from dicom_node.jobs.backup import run_scheduled_backup
from dicom_node.jobs.escalation import run_escalation
from dicom_node.jobs.maintenance import (
    run_change_log_trim,
    run_rematch,
    run_retention,
    run_stale_orders,
)
from dicom_node.jobs.scheduler import JobScheduler, JobSpec, build_scheduler
from dicom_node.jobs.tokens import run_token_purge
from dicom_node.jobs.workflow import run_study_stability, run_temp_sweep
from dicom_node.scp.send import StudySender
from dicom_node.scp.server import DicomServer, ListenError, configure_pynetdicom, tls_contexts
from dicom_node.scp.tls import BCP195_TLS12_CIPHERS, TlsConfigError, check_http_certificate
from dicom_node.services.access import passwords
from dicom_node.services.audit.chain import announce_audit_trail
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from dicom_node.workers import WorkerPool, WorkerStartError

if TYPE_CHECKING:
    import uvicorn

    from api.streams import StreamSlots

log = logging.getLogger("dicom_node")

HTTP_START_TIMEOUT_SECONDS = 15.0
# at shutdown, jobs running (a backup, a purge) get this long to finish
JOB_STOP_WAIT_SECONDS = 30.0
# at shutdown, open live-event streams get this long to send their last event
STREAM_END_WAIT_SECONDS = 2.0


class StartupError(Exception):
    """The node cannot start; the message is one line for the operator."""


def configure_password_hashing(settings: Settings) -> None:
    passwords.configure(
        time_cost=settings.password_hash_time_cost,
        memory_kib=settings.password_hash_memory_kib,
        parallelism=settings.password_hash_parallelism,
    )
    passwords.configure_concurrency(
        max_concurrent=settings.max_concurrent_password_hashes,
        wait_seconds=settings.password_hash_wait_seconds,
    )


def open_database(settings: Settings) -> Database:
    """Create the data dir (SQLite) and check that the database answers."""
    if settings.is_sqlite:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create data dir {settings.data_dir}: {exc.strerror}"
            ) from None
    db = Database(settings.database_url)
    try:
        with db.engine.connect():
            pass
    except SQLAlchemyError as exc:
        db.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise StartupError(
            f"database {redact_url(settings.database_url)} is unreachable: {reason}"
        ) from None
    return db


def open_store(settings: Settings) -> FileStore:
    try:
        return FileStore(settings.data_dir, fsync=settings.fsync)
    except OSError as exc:
        raise StartupError(f"cannot use data dir {settings.data_dir}: {exc.strerror}") from None


def sla_policy(settings: Settings) -> SlaPolicy:
    return settings.sla()


def ensure_schema(db: Database, *, upgrade_if_empty: bool, owner_url: str = "") -> None:
    """Upgrade an empty database; refuse one that is behind, ahead or foreign.

    The schema is created by ``owner_url``'s role when given (PostgreSQL: the
    node's own role then gets only what it needs, see db/migrate.py)."""
    current = migrate.current_revision(db.engine)
    head = migrate.head_revision()
    if current == head:
        return
    if current is None:
        if inspect(db.engine).get_table_names():
            raise StartupError("the database has tables but no dicom-node schema version")
        if not upgrade_if_empty:
            raise StartupError("the database is empty: run `dicom-node db upgrade`")
        log.info("empty database: creating the schema")
        try:
            migrate.upgrade_schema(db.url, owner_url)
        except migrate.SchemaAccessError as exc:
            raise StartupError(str(exc)) from None
        return
    raise StartupError(
        f"the database schema is at revision {current}, this version needs {head}: "
        "run `dicom-node db upgrade`"
    )


def check_tls_files(settings: Settings) -> None:
    """Every certificate, key and CA bundle the node will use loads, or the node
    does not start (one line naming the file): not a worker process failing, or
    the first TLS peer refused, later."""
    try:
        tls_contexts(settings)
        if settings.http_tls_certificate is not None:
            assert settings.http_tls_private_key is not None  # the settings check both
            check_http_certificate(settings.http_tls_certificate, settings.http_tls_private_key)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from None


def bind_http_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise StartupError(_bind_error("HTTP", host, port, exc)) from None
    # asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # proto == IPPROTO_TCP, and create_server() leaves proto 0. Without it every
    # keep-alive response after the first waited ~40 ms for the client's delayed
    # ACK (Nagle): measured 45 ms per GET /health, 1.4 ms with it.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=listener.detach())


def _bind_error(what: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{what} port {host}:{port} is already in use"
    if exc.errno == errno.EACCES:
        return f"{what} port {host}:{port} needs privileges this process does not have"
    return f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"


class Node:
    """One running node: SCP, API and scheduler over one database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Database | None = None
        # the SCP in this process, or worker processes sharing its port
        self.dicom: DicomServer | WorkerPool | None = None
        self._http_server: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self._http_socket: socket.socket | None = None
        # the live streams of the HTTP API: SSE event streams, GraphQL subscriptions
        self._live_streams: tuple[StreamSlots, ...] = ()
        self._scheduler: JobScheduler | None = None
        # stop() left jobs running: the process should exit without joining them
        self.jobs_abandoned = False
        self.store: FileStore | None = None
        self.http_port = 0
        self.dicom_port = 0  # 0: TLS only
        self.dicom_tls_port = 0  # 0: no DICOM TLS port

    def _jobs(self, db: Database, store: FileStore, stopping: threading.Event) -> list[JobSpec]:
        """Every scheduled job of the node, registered here and only here."""
        settings = self.settings
        sla = sla_policy(settings)
        return [
            JobSpec(
                "study-stability",
                partial(
                    run_study_stability,
                    db,
                    stable_seconds=settings.study_stable_seconds,
                    sla=sla,
                    mpps_wait_seconds=settings.mpps_wait_max_seconds,
                ),
                settings.stability_check_interval_seconds,
            ),
            JobSpec(
                "temp-file-sweep",
                partial(run_temp_sweep, store, max_age_seconds=settings.temp_file_max_age_seconds),
                max(60.0, settings.temp_file_max_age_seconds / 4),
            ),
            JobSpec(
                "escalation",
                partial(run_escalation, db),
                settings.escalation_interval_seconds,
            ),
            JobSpec(
                "stale-orders",
                partial(run_stale_orders, db, stale_hours=settings.stale_order_hours),
                settings.stale_order_interval_seconds,
            ),
            JobSpec(
                "rematch", partial(run_rematch, db, sla=sla), settings.rematch_interval_seconds
            ),
            JobSpec(
                # off (a no-op run) while retention_days is 0
                "retention",
                partial(
                    run_retention,
                    db,
                    store,
                    retention_days=settings.retention_days,
                    max_studies=settings.retention_max_studies_per_run,
                    cancel=stopping,
                ),
                settings.retention_interval_seconds,
            ),
            JobSpec(
                "change-log-trim",
                partial(run_change_log_trim, db, keep_days=settings.change_log_keep_days),
                settings.change_log_trim_interval_seconds,
            ),
            JobSpec(
                "token-purge",
                partial(run_token_purge, db),
                settings.token_purge_interval_seconds,
            ),
            JobSpec(
                # a no-op run while backup_dir is unset
                "backup",
                partial(run_scheduled_backup, settings, cancel=stopping),
                settings.backup_interval_hours * 3600,
            ),
        ]

    def start(self) -> None:
        """Start everything, or nothing: a failure stops what already started."""
        configure_pynetdicom(
            log_phi=self.settings.log_phi,
            accept_unknown_sop_classes=self.settings.accept_unknown_sop_classes,
        )
        configure_password_hashing(self.settings)
        try:
            self.db = open_database(self.settings)
            ensure_schema(
                self.db, upgrade_if_empty=True, owner_url=self.settings.database_owner_url
            )
            announce_audit_trail(self.db)
            self.store = open_store(self.settings)
            check_tls_files(self.settings)
            # Bind the HTTP port first: the socket is only held, nothing served yet.
            self._http_socket = bind_http_socket(self.settings.bind_host, self.settings.http_port)
            workers = self.settings.dicom_worker_count
            self.dicom = (
                DicomServer(self.settings, self.db, self.store)
                if workers == 1
                else WorkerPool(self.settings, workers)
            )
            try:
                self.dicom.start()
            except ListenError as exc:
                raise StartupError(_bind_error(exc.what, exc.host, exc.port, exc.cause)) from None
            except WorkerStartError as exc:
                raise StartupError(str(exc)) from None
            self.dicom_port = self.dicom.port
            self.dicom_tls_port = self.dicom.tls_port
            # PostgreSQL: each job runs on one node per tick (advisory locks)
            # set by the scheduler's shutdown: a backup or purge then stops at its
            # next safe point instead of being abandoned
            stopping = threading.Event()
            self._scheduler = build_scheduler(
                self._jobs(self.db, self.store, stopping), self.db, stopping
            )
            self._scheduler.start()
            log.info("scheduler started with %d jobs", len(self._scheduler.get_jobs()))
            # PostgreSQL: live streams wake on changes made by any node (LISTEN/NOTIFY)
            notify.start_listener(self.db)
            self._start_http()
        except BaseException:
            self.stop()
            raise

    def _start_http(self) -> None:
        # imported here: the API (FastAPI, every route and schema) takes over a
        # second to import, which every one-shot `dicom-node` command would pay
        import uvicorn

        from api.app import create_app
        from api.deps import ApiContext, proxy_options

        assert self.db is not None and self.dicom is not None and self._http_socket is not None
        assert self.store is not None
        dicom, scheduler = self.dicom, self._scheduler
        assert scheduler is not None
        context = ApiContext(
            db=self.db,
            settings=self.settings,
            probes={"dicom": dicom.is_listening, "scheduler": lambda: bool(scheduler.running)},
            # once per process: its TLS client context (checked by check_tls_files)
            # and its limit on concurrent sends
            sender=StudySender.from_settings(
                self.settings, self.store, tls=tls_contexts(self.settings).client
            ),
        )
        https: dict[str, object] = {}
        if self.settings.http_tls_certificate is not None:
            # uvicorn's TLS (checked by check_tls_files), with the DICOM port's
            # protocol versions and TLS 1.2 suites (BCP 195) instead of uvicorn's
            # default cipher list, which allows CBC and SHA-1 suites
            https = {
                "ssl_certfile": self.settings.http_tls_certificate,
                "ssl_keyfile": self.settings.http_tls_private_key,
                "ssl_ciphers": BCP195_TLS12_CIPHERS,
            }
        app = create_app(context)
        self._live_streams = (app.state.event_streams, app.state.graphql_subscriptions)
        config = uvicorn.Config(
            app,
            log_config=None,
            # access logs would carry query strings, which may carry PHI
            access_log=False,
            lifespan="off",
            # open SSE streams are ended before (stop); this bounds a client not reading
            timeout_graceful_shutdown=3,
            # a GraphQL WebSocket message is held to the size of a POST body
            ws_max_size=self.settings.graphql_max_request_bytes,
            # X-Forwarded-For only from settings.trusted_proxies (none by default),
            # whatever uvicorn's defaults and FORWARDED_ALLOW_IPS say
            **proxy_options(self.settings.trusted_proxies),
            **https,  # type: ignore[arg-type]
        )
        server = uvicorn.Server(config)
        # In a thread, uvicorn leaves signal handling to us (see serve_until_signalled).
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._http_socket]}, name="http", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + HTTP_START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise StartupError("the HTTP server did not start")
            time.sleep(0.01)
        self._http_server, self._http_thread = server, thread
        host, port = self._http_socket.getsockname()[:2]
        self.http_port = int(port)
        scheme = "https" if self.settings.http_tls_certificate is not None else "http"
        log.info("HTTP API listening on %s://%s:%s (OpenAPI at /docs)", scheme, host, port)

    def stop(self) -> None:
        """Stop serving HTTP, then DICOM (in-flight associations get a grace period)."""
        if isinstance(self.dicom, WorkerPool):
            self.dicom.begin_stop()  # a worker exiting from here on is not replaced
        for streams in self._live_streams:
            # each gets its last event (a subscription completes) and ends;
            # uvicorn would cancel them (ERROR lines, a socket dropped mid-frame)
            streams.end_all(STREAM_END_WAIT_SECONDS)
        self._live_streams = ()
        if self._http_server is not None and self._http_thread is not None:
            self._http_server.should_exit = True
            self._http_thread.join(timeout=10)
            self._http_server = self._http_thread = None
        if self._http_socket is not None:
            self._http_socket.close()
            self._http_socket = None
        if self._scheduler is not None and self._scheduler.running:
            # no new runs; the running ones are waited for below, after DICOM stopped
            # taking associations (a long backup must not keep the port open)
            self._scheduler.shutdown(wait=False)
        if self.db is not None:
            notify.stop_listener(self.db)
        if self.dicom is not None:
            self.dicom.stop(self.settings.shutdown_grace_seconds)
            self.dicom = None
            log_limit.flush_all()  # refusal lines still held back, with their counts
        if self._scheduler is not None:
            still_running = self._scheduler.wait_idle(JOB_STOP_WAIT_SECONDS)
            if still_running:
                # each job is crash-safe (a backup leaves an .incomplete directory
                # the next run removes; a purge commits rows before files)
                log.warning(
                    "not waiting for jobs still running at shutdown: %s",
                    ", ".join(still_running),
                )
                self.jobs_abandoned = True
            self._scheduler = None
        if self.db is not None:
            self.db.dispose()
            self.db = None
