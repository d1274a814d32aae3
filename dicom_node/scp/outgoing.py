"""Associations the node opens to its peers (C-MOVE destinations, storage
commitment reports): one place decides how a peer is reached, in plain TCP or
DICOM TLS (PS3.15 B.1) as its entry in ``peers`` says. The contexts they
propose come from ``scp/contexts.py``."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from dicom_node.domain.aetitle import Peer
from dicom_node.scp.transport import outgoing_connection_opened


class NodeAE(AE):
    """The node's Application Entity: ``associate()`` also takes an association
    the node has already established (``established=``) and returns it.

    pynetdicom's C-MOVE loop opens the destination association itself, with
    ``self.ae.associate(host, port, **kwargs)`` and the keyword arguments the
    handler yields, and answers 0xA801 (Move Destination unknown) when it is
    not established. The node opens it first instead (``scp/retrieve.py``), so
    that a destination that refuses the association, or accepts none of the
    proposed contexts, is answered 0xA702 with every sub-operation counted and
    listed (PS3.4 C.4.2.1.4), and hands that association to the loop here.
    """

    def associate(
        self, addr: str | tuple[str, int, int], port: int, *args: Any, **kwargs: Any
    ) -> Association:
        established = kwargs.pop("established", None)
        if established is not None:
            assert isinstance(established, Association)
            return established
        return super().associate(addr, port, *args, **kwargs)


class PeerNeedsTls(Exception):
    """A peer configured with ``/tls`` while the node has no TLS client context."""


@dataclass(frozen=True)
class PeerConnector:
    """How the node reaches its peers.

    ``tls``: the client context of :func:`dicom_node.scp.tls.client_context`,
    or None when no peer is configured with ``/tls``. ``connect_timeout``
    bounds the TCP connect and the TLS handshake (pynetdicom's connection
    timeout, otherwise unlimited).
    """

    max_pdu: int
    connect_timeout: float
    tls: ssl.SSLContext | None = None

    def options(
        self, peer: Peer, *, handlers: Sequence[tuple[Any, ...]] = (), **extra: Any
    ) -> dict[str, Any]:
        """``AE.associate()`` keyword arguments for an association to ``peer``.
        ``handlers``: the caller's ``evt_handlers`` for it, bound next to the
        node's own (the stalled-read reaper, the PDU and response bounds)."""
        options: dict[str, Any] = {
            "ae_title": peer.ae_title,
            "max_pdu": self.max_pdu,  # pynetdicom's associate() default is 16 KB
            **extra,
            "evt_handlers": [(evt.EVT_CONN_OPEN, outgoing_connection_opened), *handlers],
        }
        if peer.tls:
            if self.tls is None:
                raise PeerNeedsTls(f"peer {peer.ae_title} needs TLS, which is not configured")
            # the server name checked against the peer's certificate: its host
            options["tls_args"] = (self.tls, peer.host)
        return options

    def associate(
        self, ae: AE, peer: Peer, *, handlers: Sequence[tuple[Any, ...]] = (), **extra: Any
    ) -> Association:
        """Open an association from ``ae`` to ``peer`` (returned whether or not
        it was established)."""
        ae.connection_timeout = self.connect_timeout
        return ae.associate(peer.host, peer.port, **self.options(peer, handlers=handlers, **extra))
