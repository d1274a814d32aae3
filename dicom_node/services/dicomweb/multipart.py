"""multipart/related bodies (RFC 2387, PS3.18 8.7.3.3.2) written as a stream.

A WADO-RS answer is a sequence of parts, each a Part 10 file, a frame or a bulk
data value. Parts are given lazily (``Part.chunks`` is called only when the
part's turn comes) and their bytes go out a chunk at a time, so what a response
holds in memory is one chunk (or one transcoded instance), never the study.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its Content-Type and a callable giving its bytes in chunks."""

    content_type: str
    chunks: Callable[[], Iterable[bytes]]
    location: str | None = None  # Content-Location, where the part has a URL of its own


def new_boundary() -> str:
    """A boundary no part can contain by chance (128 random bits)."""
    return f"dicomnode-{secrets.token_hex(16)}"


def content_type(part_type: str, boundary: str) -> str:
    """The response's Content-Type: ``multipart/related; type="..."; boundary=...``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


class PartUnavailable(Exception):
    """Raised by a part's chunks before its first byte: the part is left out (its
    file vanished, its transcoding failed once the answer had started; the
    producer logged why). After the first byte it cuts the answer short."""


def stream_parts(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body: each part's headers and chunks, then the closing delimiter.
    A part's first chunk is produced before its headers are written, so a part
    that turns out unavailable is left out whole."""
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for part in parts:
        chunks = iter(part.chunks())
        try:
            first = next(chunks, b"")
        except PartUnavailable:
            continue
        head = f"Content-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        yield delimiter + head.encode("ascii") + b"\r\n" + first
        for chunk in chunks:
            if chunk:
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def file_chunks(
    path: Path, *, offset: int = 0, length: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset`` (to its end when None), a chunk
    at a time. A file shorter than promised ends the part early (the file changed
    under us: the caller's log says so, the reader sees a short part)."""
    with path.open("rb") as source:
        source.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            size = chunk_bytes if remaining is None else min(chunk_bytes, remaining)
            chunk = source.read(size)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def bytes_chunks(data: bytes, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``data`` in chunks (a transcoded instance: one copy, sliced by views)."""
    view = memoryview(data)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])
