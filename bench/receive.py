"""The receive path alone: pynetdicom plus the node's receive hooks, a C-STORE
handler that keeps nothing, storescu (DCMTK) as the sender.

A script, not a test. From the repository (the worktree's code with PYTHONPATH):

    .venv/bin/python bench/receive.py DIR [DIR ...] --clients 1 --rounds 3
    .venv/bin/python bench/receive.py DIR --breakdown      # ms per instance per part

Each DIR is a directory of DICOM files (bench/ingest.py's sets under
/tmp/dicom-node-bench/data). ``--mode`` chooses what receives: ``stock``
(pynetdicom as shipped, data set decoded in memory), ``node`` (the node's hooks:
adaptive polling, bounded PDUs, data sets written to a temp file), ``lean``
(the node's hooks plus the lean receive path, scp/lean_receive.py), ``lean+prefix``
(and the file meta encoded by scp/file_meta.py instead of pydicom). Each round
sends every DIR with one storescu per client (TCP_NODELAY=1) and prints
instances/s; ``--breakdown`` times pynetdicom's parts by wrapping them (adds
~2 us a call) and prints ms per instance for each, on each thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

STORESCU = "/usr/bin/storescu"
HEAVY = os.environ.get("RECEIVE_HEAVY") == "1"
MAX_PDU = 131072


def build(mode: str, scratch: Path) -> tuple[AE, list[Any]]:
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"  # as the node configures it (scp/server.py)
    ae = AE(ae_title="RECV")
    ae.maximum_pdu_size = MAX_PDU
    ae.maximum_associations = 64
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(
            context.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
        )
    if mode == "stock":

        def stock(event: Event) -> int:
            _ = event.dataset  # pynetdicom decodes it for any real handler
            return 0x0000

        return ae, [(evt.EVT_C_STORE, stock)]

    from dicom_node.scp import lean_receive, wakeup
    from dicom_node.scp.dataset_limit import bound_messages, claim_received
    from dicom_node.scp.handlers import handle_connection_opened
    from dicom_node.scp.store import part10_prefix

    wakeup.install_reactor_wakeup()  # and the reactor gate, as the node
    lean_receive.configure(enabled=mode != "node")  # bound_messages switches to it
    prefix = part10_prefix
    if mode == "lean+prefix":
        from dicom_node.scp.file_meta import encode_prefix

        def prefix(assoc: Any, command_set: Dataset, syntax: str) -> bytes:
            fast = encode_prefix(
                str(command_set.AffectedSOPClassUID),
                str(command_set.AffectedSOPInstanceUID),
                syntax,
                assoc.requestor.ae_title,
            )
            return fast if fast is not None else part10_prefix(assoc, command_set, syntax)

    def opened(event: Event) -> None:
        handle_connection_opened(event)
        bound_messages(event.assoc, limit=1 << 30, scratch_dir=scratch, prefix=prefix)

    def store(event: Event) -> Dataset:
        received = claim_received(event)
        if received is not None and received.path is not None and HEAVY:
            import pydicom  # a handler with the node's kind of work: parse, fsync

            pydicom.dcmread(received.path, stop_before_pixels=True)
            with open(received.path, "rb+") as f:
                os.fsync(f.fileno())
        if received is not None:
            received.discard()
        status = Dataset()
        status.Status = 0x0000
        return status

    return ae, [(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, store)]


def files_in(dirs: list[Path]) -> int:
    return sum(
        1
        for d in dirs
        for p in d.rglob("*")
        if p.is_file() and not p.name.endswith((".json", ".txt"))
    )


def send(dirs: list[Path], port: int, clients: int) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    procs = []
    for k in range(clients):
        args = [STORESCU, "-aet", f"B{k}", "-aec", "RECV", "-R", "-pdu", str(MAX_PDU)]
        args += ["--max-send-pdu", str(MAX_PDU), "127.0.0.1", str(port)]
        # each client sends its share: files k, k+clients, ... of every directory
        args += [str(p) for d in dirs for i, p in enumerate(sorted(_dicom(d))) if i % clients == k]
        procs.append(
            subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or b"E:" in err:
            sys.exit(f"storescu failed: {err.decode(errors='replace')[-400:]}")
    return time.perf_counter() - started


def _dicom(d: Path) -> Iterator[Path]:
    return (p for p in d.rglob("*") if p.is_file() and not p.name.endswith((".json", ".txt")))


# ----------------------------------------------------------------------------- breakdown

_totals: dict[str, float] = defaultdict(float)
_calls: dict[str, int] = defaultdict(int)
_lock = threading.Lock()


def _wrap(owner: Any, name: str, label: str, when: Callable[..., bool] | None = None) -> None:
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        if when is not None and not when(*args, **kwargs):
            return original(*args, **kwargs)
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            with _lock:
                _totals[label] += spent
                _calls[label] += 1

    setattr(owner, name, timed)


def instrument() -> None:
    from pynetdicom import association, dimse, dimse_messages, dul, fsm, transport

    _wrap(transport.AssociationSocket, "recv", "DUL: socket recv")
    _wrap(transport.AssociationSocket, "send", "DUL: socket send")
    _wrap(dul.DULServiceProvider, "_decode_pdu", "DUL: PDU decode (P-DATA-TF object)")
    _wrap(fsm, "DT_2", "DUL: DT-2 (PDU->primitive, DIMSE assembly+decode)")
    fsm.ACTIONS["DT-2"] = (fsm.ACTIONS["DT-2"][0], fsm.DT_2, fsm.ACTIONS["DT-2"][2])
    _wrap(fsm, "DT_1", "DUL: DT-1 (encode + send the response PDU)")
    fsm.ACTIONS["DT-1"] = (fsm.ACTIONS["DT-1"][0], fsm.DT_1, fsm.ACTIONS["DT-1"][2])
    _wrap(
        dimse.DIMSEServiceProvider, "receive_primitive", "DUL:  DIMSE receive_primitive (fragments)"
    )
    _wrap(dimse_messages.DIMSEMessage, "decode_msg", "DUL:   decode_msg (PDV assembly)")
    _wrap(
        dimse_messages.DIMSEMessage,
        "message_to_primitive",
        "DUL:   message_to_primitive (command decode)",
    )
    _wrap(association.Association, "_serve_request", "assoc: _serve_request (dispatch+handler+rsp)")
    _wrap(dimse.DIMSEServiceProvider, "send_msg", "assoc:  send_msg (rsp encode -> queue)")
    _wrap(evt, "trigger", "any: evt.trigger")
    from pynetdicom import pdu as pdus

    _wrap(pdus.P_DATA_TF, "to_primitive", "DUL:  P-DATA-TF to_primitive")
    from dicom_node.scp import dataset_limit, store

    _wrap(dataset_limit.BoundedDIMSE, "receive_primitive", "DUL:  node receive_primitive (bounded)")
    _wrap(dataset_limit.BoundedDIMSE, "_start", "DUL:   node: temp file open + Part 10 prefix")
    _wrap(store, "part10_prefix", "DUL:    node: part10_prefix (pydicom file meta)")
    _wrap(dataset_limit.ReceivedDataset, "add", "DUL:   node: temp file write")
    _wrap(dataset_limit.ReceivedDataset, "finish", "DUL:   node: temp file close")
    _wrap(dataset_limit.ReceivedDataset, "discard", "assoc:  handler: temp file unlink")


def report(instances: int) -> None:
    print(f"{'part':58s} {'ms/inst':>8s} {'calls/inst':>10s}")
    for label in sorted(_totals):
        print(
            f"{label:58s} {_totals[label] * 1000 / instances:8.3f}",
            f"{_calls[label] / instances:10.2f}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--mode", default="node", choices=("stock", "node", "lean", "lean+prefix"))
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    if args.breakdown:
        instrument()
    with tempfile.TemporaryDirectory() as tmp:
        ae, handlers = build(args.mode, Path(tmp))
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        port = server.server_address[1]
        count = files_in(args.dirs)
        rates = []
        for _ in range(args.rounds):
            _totals.clear()
            _calls.clear()
            cpu = time.process_time()
            seconds = send(args.dirs, port, args.clients)
            cpu = time.process_time() - cpu
            rates.append(count / seconds)
            print(
                f"{args.mode}: {count} instances, {args.clients} client(s): "
                f"{count / seconds:.0f} inst/s, "
                f"{seconds * 1000 / count:.2f} ms/inst wall, {cpu * 1000 / count:.2f} ms/inst CPU",
                flush=True,
            )
        if args.rounds > 1:
            print(f"{args.mode}: median {statistics.median(rates):.0f} inst/s")
        if args.breakdown:
            report(count)
        server.shutdown()


if __name__ == "__main__":
    main()
