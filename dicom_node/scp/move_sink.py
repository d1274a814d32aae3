"""A C-MOVE answered with one final status and no sub-operation sent (a refused
identifier, an unknown calling AE, an unreachable destination).

pynetdicom's move loop associates with the destination the handler names before
it takes any status from it, and answers 0xA801 (Move Destination Unknown) when
that fails (PS3.4 C.4.2.1.5 allows no other way through it). So such a C-MOVE is
pointed at a Verification-only acceptor on the loopback, which it reaches; the
handler's final status then goes out, the announced sub-operations counted as
failed. One acceptor per process, started at the first such C-MOVE and stopped
with the DICOM server (:func:`stop_sink`), instead of a server started and
stopped for each refusal (a peer refused in a loop made the node start one per
request).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

SINK_AE_TITLE = "MOVE_SINK"
SINK_TIMEOUT_SECONDS = 5
# Each requester association runs one C-MOVE at a time, so the sink holds at most
# one association per association the node serves (max_associations): this is
# only a ceiling far above that, not a limit anyone should meet.
SINK_MAX_ASSOCIATIONS = 1024

Response = tuple[int | Dataset, Dataset | None]

_lock = threading.Lock()
_server: ThreadedAssociationServer | None = None


def final_status_only(announced: int, final: Response) -> Iterator[Any]:
    """The C-MOVE handler's yields for ``final`` with ``announced`` sub-operations,
    none sent (pynetdicom counts them as failed)."""
    host, port = sink_address()
    yield host, port, {"ae_title": SINK_AE_TITLE, "contexts": [build_context(Verification)]}
    yield announced
    yield final


def sink_address() -> tuple[str, int]:
    """The acceptor's address, started if it is not running."""
    global _server
    with _lock:
        if _server is None:
            sink = AE(ae_title=SINK_AE_TITLE)
            sink.add_supported_context(Verification)
            sink.acse_timeout = sink.dimse_timeout = sink.network_timeout = SINK_TIMEOUT_SECONDS
            sink.maximum_associations = SINK_MAX_ASSOCIATIONS
            _server = sink.start_server(("127.0.0.1", 0), block=False)
            assert _server is not None  # block=False returns the running server
        host, port = _server.server_address[:2]
        return str(host), int(port)


def stop_sink() -> None:
    """Stop the acceptor, if started (the DICOM server stops; a later refused
    C-MOVE starts it again)."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()


def sink_running() -> bool:
    with _lock:
        return _server is not None
