"""The pynetdicom Application Entity and its listening server."""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.db.engine import Database
from dicom_node.scp.access import AccessControl
from dicom_node.scp.commitment import COMMITMENT_MODEL, CommitmentHandler
from dicom_node.scp.find import (
    FIND_MODELS,
    GET_MODELS,
    MOVE_MODELS,
    WORKLIST_MODEL,
    FindHandler,
)
from dicom_node.scp.handlers import build_handlers
from dicom_node.scp.mpps import MPPS_MODEL, MppsHandler
from dicom_node.scp.reactor import install_reactor_gate
from dicom_node.scp.retrieve import RetrieveHandler
from dicom_node.scp.store import StoreHandler
from dicom_node.services.ingest import IngestPolicy
from dicom_node.settings import Settings
from dicom_node.storage import FileStore

_LOSSLESS_COMPRESSED = [
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Multi-component Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
_UNCOMPRESSED = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian: keeps the VRs of private tags
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
]
# pynetdicom accepts, within one proposed context, the first syntax of *our* list
# that the peer offers. Senders (storescu included) propose a file's own syntax in
# a context of its own, so it is kept as sent and nothing here decompresses. For a
# context that mixes syntaxes: lossless compressed first, then uncompressed, lossy
# last, so we never make a modality compress an original image lossily.
STORAGE_TRANSFER_SYNTAXES = [
    *[uid for uid in _LOSSLESS_COMPRESSED if uid in ALL_TRANSFER_SYNTAXES],
    *_UNCOMPRESSED,
    *[
        uid
        for uid in ALL_TRANSFER_SYNTAXES
        if uid not in _LOSSLESS_COMPRESSED and uid not in _UNCOMPRESSED
    ],
]

log = logging.getLogger("dicom_node.scp")


def configure_pynetdicom(*, log_phi: bool, accept_unknown_sop_classes: bool) -> None:
    """Process-wide pynetdicom switches; called once by the composition root."""
    # pynetdicom logs request/response identifiers (patient names, IDs) at INFO.
    _config.LOG_REQUEST_IDENTIFIERS = log_phi
    _config.LOG_RESPONSE_IDENTIFIERS = log_phi
    # The "standard" handlers decode every PDU just to log it: costly and chatty.
    _config.LOG_HANDLER_LEVEL = "none"
    # Private storage SOP classes pynetdicom does not know: refused unless configured.
    _config.UNRESTRICTED_STORAGE_SERVICE = accept_unknown_sop_classes
    # pynetdicom's reactor can steal the reply a sending thread waits for (reactor.py)
    install_reactor_gate()


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    ae.add_supported_context(Verification)
    for model in (
        *FIND_MODELS,
        *MOVE_MODELS,
        *GET_MODELS,
        WORKLIST_MODEL,
        MPPS_MODEL,
        COMMITMENT_MODEL,
    ):
        ae.add_supported_context(model)
    for context in AllStoragePresentationContexts:
        # both roles: C-STORE to us, and C-GET's sub-operations from us to a peer
        # that proposes the SCP role for itself (PS3.7 D.3.3.4 role selection)
        ae.add_supported_context(
            str(context.abstract_syntax), STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    return ae


class SharedUidContexts(list[PresentationContext]):
    """The server's supported contexts, cheap to deep-copy.

    pynetdicom deep-copies the server's contexts for every association it
    accepts, so negotiation cannot touch the shared ones. With every storage SOP
    class in both roles and ~20 transfer syntaxes each that is ~8,000 UIDs,
    each re-validated by pydicom as it is rebuilt: ~60 ms before every
    association could even be answered (a C-ECHO by echoscu took 126 ms, 9 ms
    of it against a bare AE). UIDs are immutable strings, so the copies made
    here are new context objects with new lists holding the same UID objects.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            clone = copy.copy(context)
            clone._transfer_syntax = list(context._transfer_syntax)
            copies.append(clone)
        return copies


def _adopting(listener: socket.socket) -> type[ThreadedAssociationServer]:
    """A pynetdicom server class that serves an already listening socket.

    Worker processes inherit the main process's listening socket and all accept
    on it; the kernel hands each connection to one of them. The socket is
    non-blocking, so a worker that loses the race for a connection gets
    EAGAIN (which socketserver ignores) instead of blocking its accept loop.
    """

    class AdoptingServer(ThreadedAssociationServer):
        def server_bind(self) -> None:
            assert self.socket is not None
            self.socket.close()  # the unbound one socketserver made
            self.socket = listener
            self.server_address = listener.getsockname()

        def server_activate(self) -> None:
            """Already listening."""

        def server_close(self) -> None:
            # Close this process's descriptor only. pynetdicom's server_close()
            # calls shutdown(SHUT_RDWR), which acts on the socket itself and so
            # would stop every other worker from accepting.
            listener.close()

    return AdoptingServer


class DicomServer:
    """Starts the SCP without blocking and stops it gracefully.

    It binds its own socket, or serves ``listener`` (a worker process's share of
    the main process's listening socket).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: FileStore,
        *,
        listener: socket.socket | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._listener = listener
        self._ae = build_ae(settings)
        self._store_handler = StoreHandler(
            db,
            store,
            IngestPolicy(settings.duplicate_policy, max_dataset_bytes=settings.max_dataset_bytes),
        )
        self._find_handler = FindHandler(
            db,
            max_matches=settings.max_find_matches,
            worklist_by_calling_ae=settings.worklist_by_calling_ae,
        )
        self._commitment_handler = CommitmentHandler(
            db,
            store,
            dict(settings.peers),
            ae_title=settings.ae_title,
            sla=settings.sla(),
            max_pdu=settings.max_pdu_size,
        )
        # known_ae_required_for, and the audit of refused associations and requests
        self._access = AccessControl.from_settings(settings, db)
        self._retrieve_handler = RetrieveHandler(
            db, store, dict(settings.peers), max_pdu=settings.max_pdu_size
        )
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve; raises OSError if the address is unavailable."""
        handlers = build_handlers(
            self._store_handler,
            self._find_handler,
            self._retrieve_handler,
            MppsHandler(self._db, set_by_creator_only=self._settings.mpps_set_by_creator_only),
            self._commitment_handler,
            access=self._access,
        )
        address = (self._settings.bind_host, self._settings.dicom_port)
        if self._listener is None:
            server = self._ae.start_server(address, block=False, evt_handlers=handlers)
            assert server is not None
        else:
            server = self._ae.make_server(
                address, evt_handlers=handlers, server_class=_adopting(self._listener)
            )
            # as start_server does: the server's shutdown() removes itself from here
            self._ae._servers.append(server)
            threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        server.contexts = SharedUidContexts(server.contexts)
        self._server = server
        host, port = server.server_address[:2]
        if self._listener is None:
            log.info("DICOM SCP listening on %s:%s as AE %s", host, port, self._settings.ae_title)
        return str(host), int(port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def is_listening(self) -> bool:
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() != -1

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server is not None else 0

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let associations in flight finish, then abort the rest."""
        server = self._server
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace_seconds
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining: list[Any] = server.active_associations
        for assoc in remaining:
            requestor = assoc.requestor
            log.warning(
                "aborting association from %s at %s:%s at shutdown",
                requestor.ae_title or "(no association request yet)",
                requestor.address,
                requestor.port,
            )
            assoc.abort()
        for assoc in remaining:
            assoc.join(timeout=2)
        self._server = None
        self._access.close()  # refusal counts still held back are audited now
        log.info("DICOM SCP stopped")
