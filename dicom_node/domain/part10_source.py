"""A Part 10 file as the header reader and ingest read it: bytes in memory, or a
file on disk, memory-mapped instead of read.

A C-STORE data set or an imported file may be up to ``max_dataset_bytes`` (1 GiB
by default). Read whole, and copied once or twice on the way, it cost about twice
its size in memory. Mapped, only the pages the parser touches (element headers,
the few indexed values) are read; long sequential passes (hashing, inflating) go
through ``chunks``, which reads the file a piece at a time: pages read through a
map would count in the process's resident memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1_048_576
# what the parsers address: a file's bytes, or its memory map
Buffer = bytes | mmap.mmap


@dataclass(frozen=True)
class Part10Source:
    buffer: Buffer  # the whole file, addressable (never copied whole)
    path: Path | None = None
    _fd: int | None = None

    @property
    def size(self) -> int:
        return len(self.buffer)

    def stream(self) -> BinaryIO:
        """A new file object over the whole file, for pydicom (the caller closes it)."""
        if self.path is None:
            return io.BytesIO(self.buffer)  # shares the bytes, copies nothing
        return open(self.path, "rb")  # the caller's to close

    def chunks(self, start: int) -> Iterator[bytes]:
        """The bytes from ``start`` to the end, a piece at a time."""
        if self._fd is None:
            view = memoryview(self.buffer)
            for position in range(start, len(view), CHUNK):
                yield view[position : position + CHUNK].tobytes()
            return
        position = start
        while piece := os.pread(self._fd, CHUNK, position):
            yield piece
            position += len(piece)

    def sha256(self, start: int) -> str:
        digest = hashlib.sha256()
        if self._fd is None:
            digest.update(memoryview(self.buffer)[start:])
        else:
            for piece in self.chunks(start):
                digest.update(piece)
        return digest.hexdigest()


@contextlib.contextmanager
def open_part10(part10: bytes | Path | Part10Source) -> Iterator[Part10Source]:
    """``part10`` as a Part10Source for the ``with`` block (raises OSError if the
    file cannot be opened)."""
    if isinstance(part10, Part10Source):
        yield part10
        return
    if isinstance(part10, bytes):
        yield Part10Source(part10)
        return
    fd = os.open(part10, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield Part10Source(b"", part10, fd)  # an empty file cannot be mapped
            return
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        try:
            yield Part10Source(mapped, part10, fd)
        finally:
            mapped.close()
    finally:
        os.close(fd)
