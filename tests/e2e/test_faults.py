"""Faults while the node runs: the database restarts, the disk fills, clients stall.

What a radiology engineer expects of an archive under a fault: it costs a retry,
never an image. A C-STORE the node cannot keep is answered 0xA700 (Refused: out
of resources; the modality queues it and resends), never Success and never a
hang; whatever was answered Success is indexed with its complete file; nothing
half-written stays behind; and the node recovers by itself once the fault is
gone. A peer that stalls is cut off by a timeout and never holds up the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import select

from dicom_node.db import migrate
from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomStudy
from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from dicom_node.scp.polling import open_associations
from dicom_node.scp.server import DicomServer
from dicom_node.storage import FileStore
from tests.conftest import node_settings
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, to_bytes
from tests.support import require, run_restartable_postgres, wait_for

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PROCESS_INTERNAL = 0xC001
# identifiers that must never reach a log line
PATIENT_ID = "FAULTPID77"
PATIENT_NAME = "FAULTY^PATIENCE"
# a C-STORE or C-ECHO answered within this is "not blocked" on a loaded 2-core machine
PROMPT_SECONDS = 1.0


# --------------------------------------------------------------------------- helpers


def _client(timeout: float = 10.0) -> AE:
    ae = AE(ae_title="FAULT_SCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = timeout
    ae.network_timeout = None  # the client never gives up on its own: the node must
    return ae


def _associate(port: int, timeout: float = 10.0) -> Association:
    assoc = _client(timeout).associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def _image(study: str, *, series: str | None = None, side: int = 4, seed: int = 0) -> Dataset:
    ds = ct_dataset(
        study_uid=study,
        series_uid=series,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        instance_number=seed,
        pixel_seed=seed,
    )
    if side != 4:
        ds.Rows = ds.Columns = side
        ds.PixelData = bytes((seed + i) % 251 for i in range(256)) * (side * side * 2 // 256)
    return ds


def _store(assoc: Association, ds: Dataset) -> int | None:
    """The C-STORE status, or None if the node never answered."""
    response = assoc.send_c_store(ds)
    return int(response.Status) if "Status" in response else None


def _echo(port: int) -> tuple[int | None, float]:
    started = time.monotonic()
    assoc = _associate(port)
    try:
        response = assoc.send_c_echo()
    finally:
        assoc.release()
    return (
        int(response.Status) if "Status" in response else None,
        time.monotonic() - started,
    )


def _find_study(assoc: Association, study: str) -> list[int | None]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    return [
        int(status.Status) if "Status" in status else None
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    ]


def _temp_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "tmp").iterdir())


@dataclass
class IndexCheck:
    rows: dict[str, DicomInstance]
    files: set[str]


def _check_index(db_url: str, data_dir: Path, acknowledged: set[str]) -> IndexCheck:
    """Every acknowledged instance is indexed; every row has its complete file."""
    db = Database(db_url)
    store = FileStore(data_dir, fsync=False)
    try:
        with db.read() as session:
            rows = {i.sop_instance_uid: i for i in session.scalars(select(DicomInstance))}
            counts = {
                uid: count
                for uid, count in session.execute(
                    select(DicomStudy.study_instance_uid, DicomStudy.instance_count)
                )
            }
    finally:
        db.dispose()
    lost = acknowledged - rows.keys()
    assert not lost, f"{len(lost)} acknowledged instances are not indexed"
    for row in rows.values():
        path = store.absolute(row.file_path)
        assert path.is_file(), f"index row {row.sop_instance_uid} has no file"
        data = path.read_bytes()
        assert hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == row.sha256
    assert sum(counts.values()) == len(rows), "study counters disagree with the rows"
    files = {p.relative_to(store.instances).as_posix() for p in store.iter_files()}
    return IndexCheck(rows, files)


def _no_phi_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert PATIENT_ID not in caplog.text
    assert PATIENT_NAME.split("^")[0] not in caplog.text


# --------------------------------------------------------------------------- database restart


@dataclass
class Sender:
    """One association sending new instances back to back, every answer recorded."""

    port: int
    study: str
    statuses: list[tuple[str, int | None, float]] = field(default_factory=list)
    sent: dict[str, Dataset] = field(default_factory=dict)
    running: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> threading.Thread:
        self.running.set()
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            assoc = _associate(self.port)
            seed = 0
            while not self.done.is_set():
                if not self.running.is_set():
                    self.idle.set()
                    self.running.wait(timeout=0.05)
                    continue
                self.idle.clear()
                seed += 1
                ds = _image(self.study, seed=seed)
                started = time.monotonic()
                status = _store(assoc, ds)
                elapsed = time.monotonic() - started
                self.sent[ds.SOPInstanceUID] = ds
                self.statuses.append((ds.SOPInstanceUID, status, elapsed))
                if status is None or not assoc.is_established:
                    return
            assoc.release()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def count(self, status: int, since: int = 0) -> int:
        return sum(1 for _, s, _ in self.statuses[since:] if s == status)

    def pause(self) -> None:
        """Returns once the request in flight (if any) has its answer."""
        self.idle.clear()
        self.running.clear()
        assert self.idle.wait(timeout=30), "the sender is stuck"


def test_database_restart_answers_a700_then_recovers_without_losing_acknowledged_instances(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    study = generate_uid()
    with run_restartable_postgres() as postgres:
        url = postgres.server.url()
        migrate.upgrade(url)
        node = Node(node_settings(url, data_dir))
        node.start()
        sender = Sender(node.dicom_port, study)
        thread = sender.start()
        try:
            assert wait_for(lambda: sender.count(SUCCESS) >= 10, timeout=30), sender.statuses
            # the stop lands while instances are in flight: "-m fast" ends every session
            outage_from = len(sender.statuses)
            postgres.stop()
            assert wait_for(lambda: sender.count(OUT_OF_RESOURCES, outage_from) >= 5, timeout=30)
            sender.pause()
            during = sender.statuses[outage_from:]
            # every answer came, promptly, and none was a "your data is bad" C000
            assert {s for _, s, _ in during} <= {SUCCESS, OUT_OF_RESOURCES}, during
            assert max(e for _, _, e in during) < 5.0

            # the node still talks: C-ECHO needs no database, C-FIND says it cannot answer
            echo, _ = _echo(node.dicom_port)
            assert echo == SUCCESS
            assoc = _associate(node.dicom_port)
            started = time.monotonic()
            find = _find_study(assoc, study)
            assert time.monotonic() - started < 5.0
            # find.py answers C001 (unable to process) for any internal error; A700 would
            # tell the peer it is transient, as C-STORE does (see the report)
            assert find == [OUT_OF_RESOURCES], find
            # a refused instance leaves nothing behind
            assert _temp_files(data_dir) == []

            postgres.start()
            # the first request after the restart: the pool's stale connections are
            # pinged and replaced, no restart of the node
            first = _image(study, seed=10_000)
            assert _store(assoc, first) == SUCCESS
            assoc.release()
            recovered_from = len(sender.statuses)
            sender.running.set()
            assert wait_for(lambda: sender.count(SUCCESS, recovered_from) >= 10, timeout=30)
            sender.pause()
            assert sender.count(SUCCESS, recovered_from) == len(sender.statuses[recovered_from:]), (
                sender.statuses[recovered_from:]
            )
        finally:
            sender.done.set()
            sender.running.set()
            thread.join(timeout=30)
        assert sender.error is None, sender.error

        # what the modality does next: resend every refused instance
        refused = [uid for uid, status, _ in sender.statuses if status != SUCCESS]
        assoc = _associate(node.dicom_port)
        try:
            for uid in refused:
                assert _store(assoc, sender.sent[uid]) == SUCCESS
        finally:
            assoc.release()
        # a restart nobody noticed (no request in between): every pooled connection
        # is dead, and the first request after it must not be the one to find out
        postgres.stop()
        postgres.start()
        after_quiet_restart = _image(study, seed=20_000)
        assoc = _associate(node.dicom_port)
        try:
            assert _store(assoc, after_quiet_restart) == SUCCESS
            assert _find_study(assoc, study) == [0xFF00, SUCCESS]
        finally:
            assoc.release()
        node.stop()

        acknowledged = {uid for uid, _, _ in sender.statuses} | {
            first.SOPInstanceUID,
            after_quiet_restart.SOPInstanceUID,
        }
        check = _check_index(url, data_dir, acknowledged)
        assert check.rows.keys() == acknowledged
        # no orphan either: a file kept after a lost COMMIT was taken over by its resend
        assert check.files == {row.file_path for row in check.rows.values()}
        assert _temp_files(data_dir) == []

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("dicom_node")]
    assert any("instance not stored (database unavailable)" in m for m in messages), messages
    _no_phi_logged(caplog)


# --------------------------------------------------------------------------- disk full

DISK_BYTES = 24 * 1024 * 1024
PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES, unmounted whatever happens."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    require(os.geteuid() == 0, "mounting a small tmpfs (disk-full tests) needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0755", "dicom-node-test", mount],
        capture_output=True,
        text=True,
    )
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mount], capture_output=True)


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(mount: Path, *, leave: int) -> Path:
    """Take all the free space on the disk but ``leave`` bytes."""
    filler = mount / "filler"
    filler.unlink(missing_ok=True)
    size = _free_bytes(mount) - leave
    assert size > 0
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    assert abs(_free_bytes(mount) - leave) <= PAGE
    return filler


@pytest.fixture
def disk_node(
    small_disk: Path, backend: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Node, str]]:
    """A node whose data dir (and SQLite database, on that backend) is on the small disk."""
    data_dir = small_disk / "data"
    data_dir.mkdir()
    if backend == "sqlite":
        database = data_dir / "dicom-node.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        url = f"sqlite:///{database}"
    else:
        url = str(request.getfixturevalue("db_url"))
    node = Node(node_settings(url, data_dir))
    node.start()
    try:
        yield node, url
    finally:
        node.stop()


def test_disk_full_refuses_an_instance_with_a700_and_keeps_serving(
    disk_node: tuple[Node, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node, url = disk_node
    assert node.store is not None
    data_dir, mount = node.store.root, node.store.root.parent
    study = generate_uid()
    assoc = _associate(node.dicom_port)
    try:
        assert _store(assoc, _image(study, seed=1)) == SUCCESS
        filler = _fill(mount, leave=256 * 1024)
        big = _image(study, side=1024, seed=2)  # 2 MiB of pixels
        started = time.monotonic()
        assert _store(assoc, big) == OUT_OF_RESOURCES
        assert time.monotonic() - started < 5.0
        assert _temp_files(data_dir) == []
        # the same association goes on
        assert assoc.send_c_echo().Status == SUCCESS
        echo, _ = _echo(node.dicom_port)
        assert echo == SUCCESS

        filler.unlink()  # the operator frees space: the resend goes through
        assert _store(assoc, big) == SUCCESS
        assert _store(assoc, _image(study, seed=3)) == SUCCESS
    finally:
        assoc.release()
    check = _check_index(url, data_dir, set())
    assert len(check.rows) == 3
    assert check.files == {row.file_path for row in check.rows.values()}
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("dicom_node")]
    assert any("instance not stored (disk full)" in m for m in messages), messages
    _no_phi_logged(caplog)


def test_every_fill_level_either_stores_completely_or_refuses_cleanly(
    disk_node: tuple[Node, str],
) -> None:
    """Walk the space left down through the sizes where each write step fails in
    turn (temp file, new directories, the SQLite WAL): an instance is stored
    whole and indexed, or refused with A700 leaving nothing behind."""
    node, url = disk_node
    assert node.store is not None
    data_dir, mount = node.store.root, node.store.root.parent
    study = generate_uid()
    outcomes: list[int | None] = []
    acknowledged: set[str] = set()
    refused: list[Dataset] = []
    assoc = _associate(node.dicom_port)
    try:
        assert _store(assoc, _image(study, seed=0)) == SUCCESS
        for pages in range(0, 24):
            filler = _fill(mount, leave=pages * PAGE)
            # a new series every other time: its directories need room too
            ds = _image(study, series=None if pages % 2 else generate_uid(), side=64, seed=pages)
            status = _store(assoc, ds)
            outcomes.append(status)
            assert status in (SUCCESS, OUT_OF_RESOURCES), (pages, status)
            assert _temp_files(data_dir) == [], pages
            if status == SUCCESS:
                acknowledged.add(ds.SOPInstanceUID)
            else:
                refused.append(ds)
            filler.unlink()
            check = _check_index(url, data_dir, acknowledged)
            if status != SUCCESS:
                assert ds.SOPInstanceUID not in check.rows, pages
            assert check.files == {row.file_path for row in check.rows.values()}, pages
        # the boundary was crossed: some levels refused, some stored
        assert OUT_OF_RESOURCES in outcomes and SUCCESS in outcomes, outcomes
        for ds in refused:  # with room again, every refused instance goes in
            assert _store(assoc, ds) == SUCCESS
    finally:
        assoc.release()


# --------------------------------------------------------------------------- stalled clients

ACSE_TIMEOUT = 2.0
NETWORK_TIMEOUT = 2.0
# the node closes a stalled peer within its timeout plus this
MARGIN = 2.0
MAX_ASSOCIATIONS = 6


@pytest.fixture
def quick_node(tmp_path: Path, sqlite_template: Path) -> Iterator[Node]:
    """A node with short timeouts. The behaviour under test is the network layer's,
    the same on both databases: SQLite only."""
    database = tmp_path / "quick.sqlite3"
    shutil.copyfile(sqlite_template, database)
    node = Node(
        node_settings(
            f"sqlite:///{database}",
            tmp_path / "data",
            acse_timeout_seconds=ACSE_TIMEOUT,
            network_timeout_seconds=NETWORK_TIMEOUT,
            dimse_timeout_seconds=NETWORK_TIMEOUT,
            max_associations=MAX_ASSOCIATIONS,
        )
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _server(node: Node) -> DicomServer:
    assert isinstance(node.dicom, DicomServer)
    return node.dicom


class Stall:
    """A peer that stops talking, and when the node hung up on it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened = time.monotonic()
        self.closed_after: float | None = None

    def is_open(self) -> bool:
        raise NotImplementedError

    def address(self) -> str:
        """host:port of this peer, as the node sees it."""
        raise NotImplementedError

    def wait_closed(self, timeout: float) -> float | None:
        if wait_for(lambda: not self.is_open(), timeout=timeout, interval=0.02):
            return time.monotonic() - self.opened
        return None

    def close(self) -> None:
        raise NotImplementedError


class RawStall(Stall):
    """A bare TCP connection that sends ``first`` (maybe nothing), then ``trickle``
    one byte at a time every ``every`` seconds."""

    def __init__(
        self, port: int, first: bytes = b"", trickle: bytes = b"", every: float = 0
    ) -> None:
        super().__init__(port)
        self.sock = socket.create_connection(("127.0.0.1", port))
        host, local_port = self.sock.getsockname()[:2]
        self._address = f"{host}:{local_port}"
        self.sock.sendall(first)
        self._trickle = trickle
        self._every = every
        self._closed = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.sock.settimeout(self._every or 0.5)
        pending = self._trickle
        while True:
            try:
                if not self.sock.recv(4096):
                    break  # an A-ABORT PDU may come first; the close is what counts
            except TimeoutError:
                if pending:
                    try:
                        self.sock.send(pending[:1])
                    except OSError:
                        break
                    pending = pending[1:]
            except OSError:
                break
        self._closed.set()

    def is_open(self) -> bool:
        return not self._closed.is_set()

    def address(self) -> str:
        return self._address

    def close(self) -> None:
        self.sock.close()


class AssociatedStall(Stall):
    """An established association that goes quiet, optionally in the middle of a
    C-STORE: after the command and some fragments of the dataset (``mid_store``),
    or inside a PDU (``mid_pdu``: a modality switched off mid-transfer)."""

    def __init__(self, port: int, *, mid_store: bool = False, mid_pdu: bool = False) -> None:
        super().__init__(port)
        self.assoc = _associate(port)
        if mid_store or mid_pdu:
            pdus = _store_pdus(self.assoc, _image(generate_uid(), side=256, seed=9))
            raw = self.assoc.dul.socket.socket  # type: ignore[union-attr]
            assert raw is not None
            for encoded in pdus[:-1] if mid_store else [pdus[0], pdus[1][: len(pdus[1]) // 2]]:
                raw.sendall(encoded)
        self.opened = time.monotonic()

    def is_open(self) -> bool:
        return bool(self.assoc.is_established and self.assoc.is_alive())

    def address(self) -> str:
        return f"{self.assoc.requestor.address}:{self.assoc.requestor.port}"

    def close(self) -> None:
        raw = self.assoc.dul.socket.socket if self.assoc.dul.socket else None
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)  # no A-ABORT handshake to wait out
        self.assoc.abort()


def _store_pdus(assoc: Association, ds: Dataset, max_pdu: int = 16_384) -> list[bytes]:
    """A C-STORE-RQ as the P-DATA-TF PDUs a sender would write (``max_pdu`` each)."""
    context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CT_IMAGE_STORAGE)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CT_IMAGE_STORAGE
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(_dataset_bytes(ds))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    assert context.context_id is not None
    pdus = []
    for primitive in message.encode_msg(context.context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    assert len(pdus) > 3
    return pdus


def _dataset_bytes(ds: Dataset) -> bytes:
    data = to_bytes(ds)
    return data[dataset_offset(data) :]


def _partial_associate_rq(declared: int, sent: int) -> tuple[bytes, bytes]:
    """An A-ASSOCIATE-RQ PDU header declaring ``declared`` bytes: (head, the rest)."""
    body = bytes([0x00, 0x01, 0x00, 0x00]) + b"DICOM_NODE".ljust(16) + b"FAULT_SCU".ljust(16)
    body = body.ljust(declared, b"\x00")
    head = struct.pack(">BBL", 0x01, 0x00, declared) + body[:sent]
    return head, body[sent:]


def _not_blocked(port: int, study: str) -> float:
    """A C-ECHO and a C-STORE by another peer; how long both took."""
    started = time.monotonic()
    echo, _ = _echo(port)
    assert echo == SUCCESS
    assoc = _associate(port)
    try:
        assert _store(assoc, _image(study, seed=int(started * 1000) % 1000)) == SUCCESS
    finally:
        assoc.release()
    return time.monotonic() - started


STALLS: dict[str, Callable[[int], Stall]] = {
    "silent-tcp": lambda port: RawStall(port),
    "partial-associate-rq": lambda port: RawStall(port, _partial_associate_rq(200, 20)[0]),
    "silent-association": lambda port: AssociatedStall(port, mid_store=False),
    "mid-c-store": lambda port: AssociatedStall(port, mid_store=True),
    "mid-pdu": lambda port: AssociatedStall(port, mid_pdu=True),
}


# pynetdicom reads a PDU with blocking recv() calls on a socket without a timeout;
# its timeouts then only stop the association's reactor thread, which waits forever
# for the reader thread (Association.kill). The fix (a reaper that shuts the socket
# down once pynetdicom has given up on an association) belongs in dicom_node/scp/.
@pytest.mark.parametrize(
    "kind",
    [kind for kind in STALLS],
)
def test_a_stalled_peer_is_cut_off_by_the_timeout_without_blocking_others(
    quick_node: Node, kind: str
) -> None:
    assert quick_node.dicom is not None
    open_before = open_associations()
    stall: Stall = STALLS[kind](quick_node.dicom_port)
    try:
        took = _not_blocked(quick_node.dicom_port, generate_uid())
        assert took < PROMPT_SECONDS, f"another peer waited {took:.2f} s"
        assert stall.is_open(), "the node hung up before any timeout"
        closed_after = stall.wait_closed(timeout=max(ACSE_TIMEOUT, NETWORK_TIMEOUT) + MARGIN)
        assert closed_after is not None, "the node never hung up on the stalled peer"
        assert closed_after >= min(ACSE_TIMEOUT, NETWORK_TIMEOUT) * 0.8
        # its slot is free again, without the peer's help
        assert wait_for(lambda: quick_node.dicom.active_associations() == 0, timeout=2)  # type: ignore[union-attr]
        # and its end ran the close handlers (adaptive polling counts open
        # connections), which pynetdicom skips for a reader ended mid-PDU
        assert wait_for(lambda: open_associations() == open_before, timeout=2)
    finally:
        stall.close()
    assert _not_blocked(quick_node.dicom_port, generate_uid()) < PROMPT_SECONDS


def test_each_stalled_peer_cut_off_is_logged_with_its_address(
    quick_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stalls: dict[str, Stall] = {}
    try:
        for kind, make in STALLS.items():
            stalls[kind] = make(quick_node.dicom_port)
        for stall in stalls.values():
            stall.wait_closed(timeout=max(ACSE_TIMEOUT, NETWORK_TIMEOUT) + MARGIN)
    finally:
        for stall in stalls.values():
            stall.close()

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("dicom_node") and r.levelno >= logging.WARNING
        ]

    def unlogged() -> list[str]:
        lines = warnings()
        return [k for k, s in stalls.items() if not any(s.address() in line for line in lines)]

    # An association cut at the network timeout is logged by EVT_ABORTED on the
    # node's association thread, after its DUL thread sent the A-ABORT: the peer
    # may see the close before the line is written. Wait for the lines.
    assert wait_for(lambda: not unlogged()), (unlogged(), warnings())
    _no_phi_logged(caplog)


def test_a_peer_trickling_an_associate_request_is_cut_off_by_the_acse_timeout(
    quick_node: Node,
) -> None:
    """Slowloris: a byte every half second never trips a per-read network timeout."""
    head, rest = _partial_associate_rq(400, 10)
    stall = RawStall(quick_node.dicom_port, head, trickle=rest, every=0.5)
    try:
        closed_after = stall.wait_closed(timeout=ACSE_TIMEOUT + MARGIN)
        assert closed_after is not None, "a trickling peer holds its connection past the timeout"
    finally:
        stall.close()


@pytest.mark.parametrize("kind", ["silent-association", "mid-c-store", "mid-pdu"])
def test_stalled_associations_filling_every_slot_are_reaped_and_the_slots_freed(
    quick_node: Node, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A negotiated association holds its slot (max_associations) until it ends:
    peers that go quiet once associated, even in the middle of a C-STORE or of
    one of its PDUs (where only the reaper can end pynetdicom's read), fill every
    slot until the network timeout cuts them, and then every slot is free."""
    caplog.set_level(logging.INFO)
    port, server = quick_node.dicom_port, _server(quick_node)
    stalls: list[Stall] = []
    held: list[Association] = []
    try:
        for _ in range(MAX_ASSOCIATIONS):
            stalls.append(STALLS[kind](port))
        assert wait_for(lambda: server.gate.negotiated() == MAX_ASSOCIATIONS, timeout=5)
        # one more is refused: A-ASSOCIATE-RJ transient, service provider
        # (presentation), local limit exceeded (PS3.8 9.3.4); the modality retries
        refused = _client().associate("127.0.0.1", port, ae_title="DICOM_NODE")
        assert refused.is_rejected, "a stalled association did not hold its slot"
        answer = refused.acceptor.primitive
        assert answer is not None
        assert (answer.result, answer.result_source, answer.diagnostic) == (0x02, 0x03, 0x02)
        assert all(stall.is_open() for stall in stalls), "refused only once a slot was freed"
        # the node cuts each stalled one at the network timeout, not before
        for stall in stalls:
            closed_after = stall.wait_closed(timeout=NETWORK_TIMEOUT + MARGIN)
            assert closed_after is not None, "the node never hung up on a stalled association"
            assert closed_after >= NETWORK_TIMEOUT * 0.8
        assert wait_for(lambda: server.active_associations() == 0, timeout=2)
        assert server.gate.negotiated() == 0
        # every slot is free again, not just one: the limit's worth at once
        for _ in range(MAX_ASSOCIATIONS):
            held.append(_associate(port))
        assert all(assoc.send_c_echo().Status == SUCCESS for assoc in held)
    finally:
        for assoc in held:
            assoc.release()
        for stall in stalls:
            stall.close()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("dicom_node")]
    assert any("too many associations" in m for m in messages), messages


@pytest.mark.parametrize("kind", ["silent-tcp", "partial-associate-rq"])
def test_stalled_connections_before_their_request_take_no_slot_and_are_cut_at_its_deadline(
    quick_node: Node, kind: str
) -> None:
    """A connection that has not sent its whole A-ASSOCIATE-RQ is pending, not an
    association: the limit's worth of them (silent, or stopped inside the request)
    leaves every slot to real peers at once, and each is cut when its request is
    overdue (association_request_timeout_seconds, or the ACSE timeout if shorter),
    its pending place and thread freed. tests/e2e/test_connection_limits.py covers
    the pending limits themselves and the log line of one such connection."""
    port, server = quick_node.dicom_port, _server(quick_node)
    settings = quick_node.settings
    deadline = min(settings.association_request_timeout_seconds, settings.acse_timeout_seconds)
    stalls: list[Stall] = []
    held: list[Association] = []
    try:
        for _ in range(MAX_ASSOCIATIONS):
            stalls.append(STALLS[kind](port))
        assert wait_for(lambda: server.gate.pending() == MAX_ASSOCIATIONS, timeout=5)
        # every slot, while every stalled connection is still there
        for _ in range(MAX_ASSOCIATIONS):
            held.append(_associate(port))
        assert all(assoc.send_c_echo().Status == SUCCESS for assoc in held)
        assert server.gate.negotiated() == MAX_ASSOCIATIONS
        assert all(stall.is_open() for stall in stalls), "accepted only once a stall was cut"
        # released before the node's network timeout would end them too
        while held:
            held.pop().release()
        for stall in stalls:
            closed_after = stall.wait_closed(timeout=deadline + MARGIN)
            assert closed_after is not None, "a stalled connection outlived its request deadline"
            assert closed_after >= deadline * 0.8
        assert wait_for(lambda: server.active_associations() == 0, timeout=2)
        assert server.gate.pending() == 0
    finally:
        for assoc in held:
            assoc.release()
        for stall in stalls:
            stall.close()
    assert _not_blocked(port, generate_uid()) < PROMPT_SECONDS


def test_the_node_stops_within_its_grace_period_while_peers_are_stalled(
    quick_node: Node,
) -> None:
    port = quick_node.dicom_port
    stalls = [STALLS[kind](port) for kind in ("partial-associate-rq", "mid-pdu", "mid-c-store")]
    stopping = threading.Thread(target=quick_node.stop, daemon=True)
    try:
        stopping.start()
        # shutdown_grace_seconds=1, then every association left is aborted
        stopping.join(timeout=1.0 + MARGIN)
        assert not stopping.is_alive(), "the node did not stop: an abort waits on a stalled peer"
    finally:
        for stall in stalls:
            stall.close()  # a stuck stop() finishes once the peers go
        stopping.join(timeout=10)


# --------------------------------------------------------------------------- over-long PDUs

NODE_MAX_PDU = 1_048_576  # node_settings' default max_pdu_size
A_ABORT = 0x07


def _send_until_refused(sock: socket.socket, total: int) -> int:
    """Write ``total`` zero bytes; how many went out before the node hung up."""
    chunk = bytes(1 << 20)
    sent = 0
    with contextlib.suppress(OSError):
        while sent < total:
            sent += sock.send(chunk[: total - sent])
    return sent


def test_a_p_data_pdu_longer_than_the_node_receives_is_refused_before_it_is_read(
    quick_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom alone reads a PDU whole, whatever its header claims (up to 4 GiB
    held per association); the node compares it with the Maximum Length Received
    it sent (PS3.8 D.1) and aborts at the header."""
    caplog.set_level(logging.INFO)
    assoc = _associate(quick_node.dicom_port)
    assert assoc.acceptor.maximum_length == NODE_MAX_PDU
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    claimed = 256 << 20
    try:
        raw.sendall(struct.pack(">BBL", 0x04, 0x00, claimed))
        sent = _send_until_refused(raw, claimed)
        assert wait_for(lambda: assoc.is_aborted, timeout=5), "no A-ABORT from the node"
    finally:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
        assoc.abort()
    # the body was never read: the node hung up with most of it still unsent
    assert sent < claimed // 4, sent
    address = f"{assoc.requestor.address}:{assoc.requestor.port}"

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("dicom_node")]

    def refused() -> list[str]:
        return [line for line in lines() if address in line and "refused" in line]

    # the line is EVT_ABORTED's, on the node's association thread, which hears of
    # the abort after its DUL thread has sent the A-ABORT this client saw: wait for it
    assert wait_for(lambda: refused() != []), lines()
    assert f"P-DATA-TF PDU of {claimed} bytes" in refused()[0], lines()
    assert wait_for(lambda: quick_node.dicom.active_associations() == 0, timeout=5)  # type: ignore[union-attr]
    assert _not_blocked(quick_node.dicom_port, generate_uid()) < PROMPT_SECONDS


def test_an_over_long_associate_request_is_aborted_at_its_header(
    quick_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the check the node waits for the body until the ACSE timeout and
    closes without an A-ABORT."""
    caplog.set_level(logging.INFO)
    head, _ = _partial_associate_rq(4 << 20, 20)
    with socket.create_connection(("127.0.0.1", quick_node.dicom_port)) as sock:
        host, local_port = sock.getsockname()[:2]
        address = f"{host}:{local_port}"
        sock.sendall(head)
        sock.settimeout(ACSE_TIMEOUT / 2)  # answered long before the ACSE timeout
        answer = sock.recv(10)
        assert answer[:1] == bytes([A_ABORT]), answer
        sock.settimeout(5)
        while sock.recv(4096):
            pass  # then the node closes
    # and its slot is free at once, not after the ACSE timeout
    assert wait_for(lambda: quick_node.dicom.active_associations() == 0, timeout=ACSE_TIMEOUT / 2)  # type: ignore[union-attr]

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("dicom_node")]

    # the line is written by EVT_CONN_CLOSE on the DUL thread once the socket is
    # closed; the association thread (what active_associations() counts) was
    # woken before the A-ABORT went out and may end first: wait for the line
    assert wait_for(
        lambda: any(address in line and "refused a type 0x01 PDU" in line for line in lines())
    ), lines()


def test_p_data_pdus_of_exactly_the_maximum_length_are_received(quick_node: Node) -> None:
    assoc = _associate(quick_node.dicom_port)
    try:
        study = generate_uid()
        ds = _image(study, side=1024, seed=3)  # 2 MiB of pixels: PDUs cut at the maximum
        pdus = _store_pdus(assoc, ds, max_pdu=NODE_MAX_PDU)
        lengths = [struct.unpack(">L", pdu[2:6])[0] for pdu in pdus]
        assert max(lengths) == NODE_MAX_PDU
        assert _store(assoc, ds) == SUCCESS  # pynetdicom cuts at the acceptor's maximum
    finally:
        assoc.release()
