"""The pynetdicom Application Entity and its listening servers (plain and DICOM TLS)."""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.db.engine import Database
from dicom_node.domain.audit import TargetKind
from dicom_node.log_limit import LogLimiter
from dicom_node.scp import lean_receive, move_sink, tls
from dicom_node.scp.access import AccessControl
from dicom_node.scp.admission import ConnectionGate
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
from dicom_node.scp.outgoing import NodeAE, PeerConnector
from dicom_node.scp.reactor import install_reactor_gate
from dicom_node.scp.retrieve import RetrieveHandler
from dicom_node.scp.store import StoreHandler
from dicom_node.scp.sub_operations import install_log_filter
from dicom_node.scp.wakeup import install_reactor_wakeup
from dicom_node.services.access.refusals import Refusal
from dicom_node.services.ingest.instances import IngestPolicy
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
# connections closed before they became an association (over the pending limit, a
# failed TLS handshake): any host can cause them at will, so rate-limited per
# address and reason
_connection_log = LogLimiter(log)
# pynetdicom's own association limit counts every connection thread, silent ones
# included: it is lifted, and ConnectionGate counts negotiated associations instead
_PYNETDICOM_LIMIT_OFF = 1 << 30


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
    # ... and sleeps 1 ms a pass before looking for a request: woken instead (wakeup.py)
    install_reactor_wakeup()
    # A data set given to send_c_store as a file path (scp/sub_operations.py: an
    # instance retrieved in its stored syntax, the node's only use of a path) is
    # streamed from the file after its file meta: the stored bytes, never decoded.
    _config.STORE_SEND_CHUNKED_DATASET = True
    install_log_filter()  # pynetdicom's lines for sub-operations the node fails itself
    logging.getLogger("pynetdicom.transport").addFilter(_NO_TLS_TRACEBACK)


class _NoTlsTraceback(logging.Filter):
    """pynetdicom logs an outgoing connection that failed its TLS handshake (a
    peer with ``/tls`` whose certificate does not verify) in two lines, then
    again with a traceback (``AssociationSocket.connect``): the lines say why,
    the traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ssl.SSLError)


_NO_TLS_TRACEBACK = _NoTlsTraceback()


def build_ae(settings: Settings) -> NodeAE:
    ae = NodeAE(ae_title=settings.ae_title)
    ae.require_called_aet = True
    lean_receive.configure(enabled=settings.lean_receive)  # C-STORE's receive path
    ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.maximum_associations = _PYNETDICOM_LIMIT_OFF  # see ConnectionGate
    ae.acse_timeout = settings.acse_timeout_seconds
    # the node's own associations (C-MOVE sub-operations): TCP connect and TLS
    # handshake bounded, instead of pynetdicom's no limit
    ae.connection_timeout = settings.tls_handshake_timeout_seconds
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


@dataclass(frozen=True)
class TlsContexts:
    """The DICOM listener's context (None: no TLS port) and the one for
    associations to peers configured with ``/tls`` (None: no such peer)."""

    server: ssl.SSLContext | None
    client: ssl.SSLContext | None


def tls_contexts(settings: Settings) -> TlsContexts:
    """Raises :class:`~dicom_node.scp.tls.TlsConfigError` (one line) on a
    certificate, key or CA bundle that cannot be used."""
    server = None
    if settings.dicom_tls_port is not None:
        assert settings.tls_certificate is not None and settings.tls_private_key is not None
        server = tls.server_context(
            settings.tls_certificate,
            settings.tls_private_key,
            settings.tls_ca_bundle,
            settings.tls_client_certificates,
        )
    client = None
    if any(peer.tls for peer in settings.peers.values()):
        client = tls.client_context(
            settings.tls_certificate, settings.tls_private_key, settings.tls_ca_bundle
        )
    return TlsContexts(server, client)


@dataclass(frozen=True)
class Listeners:
    """The listening sockets of the DICOM port and of the DICOM TLS port (either
    may be absent, not both)."""

    plain: socket.socket | None
    tls: socket.socket | None

    def close(self) -> None:
        for listener in (self.plain, self.tls):
            if listener is not None:
                listener.close()


class ListenError(Exception):
    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        super().__init__(f"{what} {host}:{port}: {cause}")
        self.what, self.host, self.port, self.cause = what, host, port, cause


def bind_listeners(settings: Settings) -> Listeners:
    """Bind the DICOM port (unless ``dicom_plain_listener`` is false) and the
    DICOM TLS port (if set). Non-blocking: worker processes inherit them and
    all accept on them; the one that loses the race for a connection gets
    EAGAIN (which socketserver ignores) instead of blocking its accept loop.
    Raises :class:`ListenError`."""
    host = settings.bind_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound: list[socket.socket | None] = []
    ports = (
        ("DICOM", settings.dicom_port if settings.dicom_plain_listener else None),
        ("DICOM TLS", settings.dicom_tls_port),
    )
    try:
        for what, port in ports:
            if port is None:
                bound.append(None)
                continue
            try:
                listener = socket.create_server((host, port), family=family, backlog=128)
            except OSError as exc:
                raise ListenError(what, host, port, exc) from None
            listener.setblocking(False)
            bound.append(listener)
    except BaseException:
        Listeners(*bound, *([None] * (2 - len(bound)))).close()
        raise
    return Listeners(bound[0], bound[1])


class NodeAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server on an already listening socket, with the
    node's admission control (:class:`ConnectionGate`) and, on the TLS port, the
    handshake on the connection's own thread.

    pynetdicom does the TLS handshake in ``get_request()``, on the one thread
    that accepts every connection, without a timeout: a peer that connects and
    never sends its ClientHello stopped the port for everyone. Here the accept
    thread only accepts, checks the pending limits and starts the connection's
    thread; that thread does the handshake (within
    ``tls_handshake_timeout_seconds``), then hands the connection to pynetdicom.
    ``tests/unit/test_server_contexts.py`` guards the pynetdicom internals used.
    """

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[PresentationContext],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        listener: socket.socket,
        gate: ConnectionGate,
        tls_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        handshake_failed: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self._listener = listener
        self.gate = gate
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self._handshake_failed = handshake_failed  # (host, port, reason): the audit
        self._closing = False
        # ssl_context stays None: pynetdicom would handshake on the accept thread
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers)

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.close()  # the unbound one socketserver made
        self.socket = self._listener
        self.server_address = self._listener.getsockname()

    def server_activate(self) -> None:
        """Already listening."""

    def server_close(self) -> None:
        # Close this process's descriptor only. pynetdicom's server_close()
        # calls shutdown(SHUT_RDWR), which acts on the socket itself and so
        # would stop every other worker from accepting.
        self._listener.close()

    def shutdown(self) -> None:
        self._closing = True  # a handshake finishing now leads nowhere
        super().shutdown()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: no handshake on the accept thread."""
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Still on the accept thread: within the pending limits, or closed now."""
        why = self.gate.admit(str(client_address[0]))
        if why is None:
            return True
        _connection_log.warning(
            ("pending", client_address[0]),
            "connection from %s closed at once: %s",
            _address(client_address),
            why,
        )
        return False  # socketserver closes it

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self.gate.abandon(str(client_address[0]))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's own thread: handshake, then pynetdicom's association
        (which takes over the connection's pending place at EVT_CONN_OPEN)."""
        with self.gate.serving(str(client_address[0])):
            try:
                if self.tls_context is not None:
                    request = self._handshake(request, client_address)
                if request is not None and self._closing:
                    self.shutdown_request(request)
                elif request is not None:
                    self.finish_request(request, client_address)
            except Exception:
                log.exception("connection from %s could not be served", _address(client_address))
                self.shutdown_request(request)

    def _handshake(self, request: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        assert self.tls_context is not None
        try:
            return tls.server_handshake(self.tls_context, request, self.handshake_timeout)
        except tls.ClosedBeforeHandshake:
            # a port probe (C-MOVE's reachability check, a health check): as on
            # the plain port, not worth a warning
            log.debug(
                "connection from %s closed before its TLS handshake", _address(client_address)
            )
        except tls.HandshakeFailed as exc:
            _connection_log.warning(
                ("handshake", client_address[0], str(exc)),
                "TLS handshake with %s failed: %s",
                _address(client_address),
                exc,
            )
            if exc.authentication and self._handshake_failed is not None:
                self._handshake_failed(str(client_address[0]), int(client_address[1]), str(exc))
        return None


def _address(client_address: Any) -> str:
    host, port = client_address[:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class DicomServer:
    """Starts the SCP without blocking and stops it gracefully.

    It binds its own sockets (the DICOM port, the DICOM TLS port, as configured),
    or serves ``listeners`` (a worker process's share of the main process's
    listening sockets). Both ports run the same SCP and share one
    :class:`ConnectionGate`. Raises :class:`~dicom_node.scp.tls.TlsConfigError`
    on TLS files it cannot use.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: FileStore,
        *,
        listeners: Listeners | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._listeners = listeners
        self._tls = tls_contexts(settings)
        self._connector = PeerConnector(
            max_pdu=settings.max_pdu_size,
            connect_timeout=settings.tls_handshake_timeout_seconds,
            tls=self._tls.client,
        )
        self.gate = ConnectionGate(
            max_associations=settings.max_associations,
            max_pending=settings.max_pending_connections,
            request_timeout=settings.association_request_timeout_seconds,
        )
        self._ae = build_ae(settings)
        self._store_handler = StoreHandler(
            db,
            store,
            IngestPolicy(settings.duplicate_policy, max_dataset_bytes=settings.max_dataset_bytes),
            batch_max_instances=settings.ingest_batch_max_instances,
        )
        self._find_handler = FindHandler(
            db,
            max_matches=settings.max_find_matches,
            worklist_by_calling_ae=settings.worklist_by_calling_ae,
            max_list_values=settings.max_query_list_values,
        )
        self._commitment_handler = CommitmentHandler(
            db,
            store,
            dict(settings.peers),
            ae_title=settings.ae_title,
            sla=settings.sla(),
            connector=self._connector,
        )
        # known_ae_required_for, and the audit of refused associations and requests
        self._access = AccessControl.from_settings(settings, db)
        self._retrieve_handler = RetrieveHandler.from_settings(
            db, store, settings, connector=self._connector
        )
        self._server: NodeAssociationServer | None = None  # the plain DICOM port
        self._secure: NodeAssociationServer | None = None  # the DICOM TLS port

    def start(self) -> tuple[str, int]:
        """Bind (unless given listeners) and serve; raises ListenError if an
        address is unavailable. Returns the host and the DICOM port (0: TLS only)."""
        handlers = build_handlers(
            self._store_handler,
            self._find_handler,
            self._retrieve_handler,
            MppsHandler(
                self._db,
                set_by_creator_only=self._settings.mpps_set_by_creator_only,
                refusals=self._access.refusals,
            ),
            self._commitment_handler,
            access=self._access,
            gate=self.gate,
        )
        # after admission's: a C-GET requester's storage syntaxes (get_negotiation.py)
        handlers.append((evt.EVT_REQUESTED, self._retrieve_handler.negotiation.requested))
        bound_here = self._listeners is None
        listeners = bind_listeners(self._settings) if bound_here else self._listeners
        assert listeners is not None
        if listeners.plain is not None:
            self._server = self._serve(listeners.plain, handlers, None)
        if listeners.tls is not None:
            self._secure = self._serve(listeners.tls, handlers, self._tls.server)
        if bound_here:  # a worker's listeners are announced by the main process
            log_listening(self._settings, listeners, "")
        host = (self._server or self._secure).server_address[0]  # type: ignore[union-attr]
        return str(host), self.port

    def _serve(
        self, listener: socket.socket, handlers: Any, context: ssl.SSLContext | None
    ) -> NodeAssociationServer:
        server = self._ae.make_server(
            listener.getsockname()[:2],
            evt_handlers=handlers,
            server_class=NodeAssociationServer,
            listener=listener,
            gate=self.gate,
            tls_context=context,
            handshake_timeout=self._settings.tls_handshake_timeout_seconds,
            handshake_failed=self._audit_handshake_failure,
        )
        assert isinstance(server, NodeAssociationServer)
        server.contexts = SharedUidContexts(server.contexts)
        # as start_server does: the server's shutdown() removes itself from here
        self._ae._servers.append(server)
        name = "dicom-accept-tls" if context is not None else "dicom-accept"
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        return server

    def _audit_handshake_failure(self, host: str, port: int, reason: str) -> None:
        """A peer that failed TLS authentication: a Security Alert (Node
        Authentication, PS3.15 A.5.3.11), aggregated per peer and interval like
        rejected associations (an unauthenticated flood writes one row per
        interval)."""
        try:
            self._access.refusals.record(
                Refusal(
                    action=tls.HANDSHAKE_FAILED,
                    host=host,
                    port=port,
                    calling_ae="",
                    target_class=TargetKind.AE,
                    target_id=self._settings.ae_title,
                    reason=f"TLS handshake failed: {reason}",
                )
            )
        except Exception:  # the connection is refused either way
            log.exception("could not audit a failed TLS handshake")

    def _servers(self) -> list[NodeAssociationServer]:
        return [server for server in (self._server, self._secure) if server is not None]

    @property
    def port(self) -> int:
        """The DICOM port; 0 when only the TLS port is served."""
        return int(self._server.server_address[1]) if self._server is not None else 0

    @property
    def tls_port(self) -> int:
        """The DICOM TLS port; 0 when there is none."""
        return int(self._secure.server_address[1]) if self._secure is not None else 0

    def is_listening(self) -> bool:
        servers = self._servers()
        return bool(servers) and all(
            server.socket is not None and server.socket.fileno() != -1 for server in servers
        )

    def active_associations(self) -> int:
        """Connections being served, associations or not yet (pynetdicom's count)."""
        return sum(len(server.active_associations) for server in self._servers())

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let associations in flight finish, then abort the rest."""
        servers = self._servers()
        if not servers:
            return
        for server in servers:
            server.shutdown()

        def remaining() -> list[Any]:
            return [assoc for server in servers for assoc in server.active_associations]

        deadline = time.monotonic() + grace_seconds
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = remaining()
        for assoc in left:
            requestor = assoc.requestor
            log.warning(
                "aborting association from %s at %s:%s at shutdown",
                requestor.ae_title or "(no association request yet)",
                requestor.address,
                requestor.port,
            )
            assoc.abort()
        for assoc in left:
            assoc.join(timeout=2)
        self._server = self._secure = None
        self._store_handler.close()  # the index writer drained: every C-STORE answered
        move_sink.stop_sink()  # the acceptor refused C-MOVEs were pointed at
        self._access.close()  # refusal counts still held back are audited now
        log.info("DICOM SCP stopped")


def log_listening(settings: Settings, listeners: Listeners, suffix: str) -> None:
    """The start-up lines naming the DICOM ports (``suffix``: the worker count)."""
    for listener, what in ((listeners.plain, "DICOM SCP"), (listeners.tls, "DICOM TLS SCP")):
        if listener is None:
            continue
        host, port = listener.getsockname()[:2]
        clients = (
            f", client certificates {settings.tls_client_certificates}"
            if listener is listeners.tls
            else ""
        )
        log.info(
            "%s listening on %s:%s as AE %s%s%s",
            what,
            host,
            port,
            settings.ae_title,
            clients,
            suffix,
        )
