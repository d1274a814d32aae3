"""The HTTP listening socket makes asyncio switch Nagle off on every connection."""

from __future__ import annotations

import asyncio
import socket

from dicom_node.node import bind_http_socket


def test_accepted_http_connections_get_tcp_nodelay() -> None:
    """Without it a keep-alive response waits ~40 ms on the client's delayed ACK."""
    listener = bind_http_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(accepted.wait(), 10)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
