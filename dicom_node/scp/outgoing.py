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
        """``AE.associate()`` keyword arguments for an association to ``peer``;
        the C-MOVE handler yields them to pynetdicom, which opens the association
        itself. ``handlers``: the caller's ``evt_handlers`` for it, bound next
        to the node's own."""
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
