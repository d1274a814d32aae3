"""Socket options for every association, accepted or opened by the node."""

from __future__ import annotations

import socket

from pynetdicom.events import Event


def set_nodelay(event: Event) -> None:
    """No Nagle (EVT_CONN_OPEN): DIMSE is request/response, and a small PDU held
    back for a delayed ACK stalls both ends. pynetdicom leaves Nagle on."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
