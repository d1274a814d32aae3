"""The real peers of the interop tests, each run inside the tests' private network
namespace (tests/interop/netns.py): Orthanc with its own JSON config, DCMTK's
storescp and clients, a pynetdicom Storage SCP that refuses chosen instances,
and the node itself as ``dicom-node serve``.

Every process writes its log to a file (the node: to memory, tests.support.Served)
whose tail the conftest adds to a failed test's report. Nothing here sleeps for
a fixed time: readiness is a port answering or a REST call succeeding.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from tests.support import dcmtk_env

ORTHANC = "/usr/sbin/Orthanc"
# Debian's orthanc-dicomweb
ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
NODE_AET = "DICOM_NODE"

UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
# Orthanc 1.10's groups of transfer syntaxes (its orthanc.json): applied after
# AcceptedTransferSyntaxes, so an uncompressed-only Orthanc turns them all off.
ORTHANC_SYNTAX_GROUPS = (
    "DeflatedTransferSyntaxAccepted",
    "JpegTransferSyntaxAccepted",
    "Jpeg2000TransferSyntaxAccepted",
    "JpegLosslessTransferSyntaxAccepted",
    "JpipTransferSyntaxAccepted",
    "Mpeg2TransferSyntaxAccepted",
    "RleTransferSyntaxAccepted",
    "Mpeg4TransferSyntaxAccepted",
    "H265TransferSyntaxAccepted",
)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Poll ``condition`` until true; fail early, with the log, if the process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"{what}: exited with {process.returncode}\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready within {timeout:.0f} s\n{tail(log)}")
        time.sleep(0.05)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Orthanc:
    """Orthanc 1.10 on loopback with the node as its modality ``node``.

    ``accepted``: the transfer syntaxes its C-STORE SCP accepts (None: every one
    it knows, its default). No ingest transcoding, no compression of its storage,
    no authentication (loopback in a private namespace, nobody else can call)."""

    def __init__(
        self,
        base: Path,
        *,
        aet: str,
        dicom_port: int,
        http_port: int,
        node_port: int,
        accepted: Iterable[str] | None = None,
        plugins: Iterable[str] = (),
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.aet, self.dicom_port, self.http_port = aet, dicom_port, http_port
        base.mkdir(parents=True, exist_ok=True)
        self.log = base / "orthanc.log"
        config: dict[str, Any] = {
            "Name": aet,
            "StorageDirectory": str(base / "storage"),
            "IndexDirectory": str(base / "index"),
            "StorageCompression": False,
            "SyncStorageArea": False,
            "Plugins": list(plugins),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # files of 110 MB come back over loopback: gzip would only cost time
            "HttpCompressionEnabled": False,
            "DicomModalities": {
                "node": {"AET": NODE_AET, "Host": "127.0.0.1", "Port": node_port},
            },
            # a transcoding move of a 110 MB study takes seconds; Orthanc's default is 10
            "DicomScuTimeout": 120,
            "SynchronousCMove": True,
            "SaveJobs": False,
            "OverwriteInstances": True,
        }
        config.update(extra_config or {})
        if accepted is not None:
            config["AcceptedTransferSyntaxes"] = list(accepted)
            config.update(dict.fromkeys(ORTHANC_SYNTAX_GROUPS, False))
        config_file = base / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [ORTHANC, "--verbose", str(config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base,
                env=dcmtk_env(),
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=180)
        for ready, what, timeout in (
            (self._rest_answers, "REST", 60),
            (lambda: port_answers(dicom_port), "DICOM", 30),
        ):
            wait_until(
                ready, f"Orthanc {aet} {what}", timeout=timeout, process=self.process, log=self.log
            )

    def _rest_answers(self) -> bool:
        try:
            return self.http.get("/system").status_code == 200
        except httpx.TransportError:
            return False

    def log_tail(self) -> str:
        return tail(self.log)

    def clear(self) -> None:
        """Delete everything Orthanc holds (between tests)."""
        for patient in self.http.get("/patients").json():
            self.http.delete(f"/patients/{patient}").raise_for_status()

    def instances(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc's instance id."""
        answer = self.http.get("/instances", params={"expand": ""})
        answer.raise_for_status()
        return {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in answer.json()}

    def file(self, instance_id: str) -> bytes:
        answer = self.http.get(f"/instances/{instance_id}/file")
        answer.raise_for_status()
        return answer.content

    def move_study(self, study_instance_uid: str) -> httpx.Response:
        """Orthanc's C-MOVE SCU at STUDY level: the node sends the study to Orthanc."""
        return self.http.post(
            "/modalities/node/move",
            json={
                "Level": "Study",
                "Resources": [{"StudyInstanceUID": study_instance_uid}],
                "TargetAet": self.aet,
                "Synchronous": True,
                "Timeout": 120,
            },
        )

    def query_and_retrieve_patient(self, patient_id: str) -> httpx.Response:
        """What Orthanc Explorer does for a patient found on a modality: a PATIENT
        level C-FIND, then a C-MOVE of the answer, which Orthanc sends at PATIENT
        level on the Study Root model."""
        query = self.http.post(
            "/modalities/node/query",
            json={"Level": "Patient", "Query": {"PatientID": patient_id}},
        )
        query.raise_for_status()
        path = query.json()["Path"]
        answers = self.http.get(f"{path}/answers").json()
        assert answers == ["0"], f"C-FIND for the patient found {answers}"
        return self.http.post(
            f"{path}/answers/0/retrieve",
            json={"TargetAet": self.aet, "Synchronous": True, "Timeout": 120},
        )

    def stop(self) -> None:
        """SIGTERM and wait (Orthanc takes a few seconds: ``stop_all`` overlaps them)."""
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def stop_all(orthancs: Iterable[Orthanc]) -> None:
    """Stop several Orthancs at once: each takes seconds to flush and exit."""
    orthancs = list(orthancs)
    for orthanc in orthancs:
        orthanc.process.terminate()
    for orthanc in orthancs:
        orthanc.stop()


class Storescp:
    """DCMTK's storescp writing what it receives under ``directory``, bit for bit
    (``+B``). ``options``: its transfer syntax options (none: its default,
    uncompressed syntaxes only; ``+xa``: every syntax it knows)."""

    def __init__(self, base: Path, *, aet: str, port: int, options: Iterable[str] = ()) -> None:
        self.aet, self.port = aet, port
        base.mkdir(parents=True, exist_ok=True)
        self.directory = base / "received"
        self.directory.mkdir()
        self.log = base / "storescp.log"
        self.command = [
            "/usr/bin/storescp", "-v", "-aet", aet, *options, "+B",
            "-od", str(self.directory), str(port),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env()
            )
        wait_until(
            lambda: port_answers(port),
            f"storescp {aet}",
            timeout=30,
            process=self.process,
            log=self.log,
        )

    def log_tail(self) -> str:
        return tail(self.log)

    def clear(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()

    def received(self) -> dict[str, bytes]:
        """SOP Instance UID -> the file storescp wrote."""
        result = {}
        for path in self.directory.iterdir():
            data = path.read_bytes()
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            result[str(uid)] = data
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class RefusingStoreScp:
    """A Storage SCP (pynetdicom) taking every storage SOP class in every transfer
    syntax, answering 0xA700 Out of Resources for the SOP Instance UIDs in
    ``refuse`` and Success for the rest (without keeping anything)."""

    def __init__(self, *, aet: str, port: int) -> None:
        self.refuse: set[str] = set()
        self.stored: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=aet)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)  # type: ignore[union-attr]
        with self._lock:
            if uid in self.refuse:
                self.refused.append(uid)
                return 0xA700
            self.stored.append(uid)
            return 0x0000

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()


def run_tool(args: list[str], *, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """A DCMTK client, its output kept for the assertion message."""
    return subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout)


_RESPONSE = re.compile(r"D: Message Type\s*:\s*C-(?:MOVE|GET) RSP")
_COUNT = re.compile(r"D: (Remaining|Completed|Failed|Warning) Suboperations\s*:\s*(\d+)")


def final_counts(output: str) -> dict[str, int]:
    """The sub-operation counts of the last C-MOVE/C-GET response in DCMTK's
    debug output (-d). The remaining count is the sub-operations still to be
    invoked (PS3.7 9.1.3.1.7 for C-GET, 9.1.4 for C-MOVE): required in pending
    responses, optional in the final one, and 0 there (absent: 0)."""
    responses = _RESPONSE.split(output)
    assert len(responses) > 1, f"no C-MOVE/C-GET response in DCMTK's output:\n{output[-2000:]}"
    last = responses[-1].split("END DIMSE MESSAGE")[0]
    counts = {name.lower(): int(value) for name, value in _COUNT.findall(last)}
    counts.setdefault("remaining", 0)
    return counts
