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

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

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


def read_stored_instance(path: Path, *, max_dataset_bytes: int) -> Dataset:
    """The whole data set of a stored Part 10 file, with its file meta, for
    retrieve and transcoding (domain/transcode.py).

    A Deflated one (PS3.5 A.5) is inflated through the bounded inflater
    (domain/inflate.py), not by pydicom in one unbounded call. A data set over
    ``max_dataset_bytes``, as stored or inflated, raises DatasetTooLarge; a corrupt
    deflate stream InvalidDeflate; anything else as pydicom.dcmread does (OSError,
    InvalidDicomError...). The dataset of a Deflated file reads as Explicit VR Little
    Endian; its file meta still names the Deflated syntax.
    """
    # imported here: inflate.py and part10.py import Buffer from this module
    from dicom_node.domain.inflate import (
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        DatasetTooLarge,
        inflated,
    )
    from dicom_node.domain.part10 import dataset_offset

    with open_part10(path) as source:
        offset = dataset_offset(source.buffer)
        if source.size - offset > max_dataset_bytes:
            raise DatasetTooLarge(max_dataset_bytes, source.size - offset)
        meta = pydicom.dcmread(io.BytesIO(source.buffer[:offset])).file_meta
        if str(meta.get("TransferSyntaxUID", "") or "") != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            with source.stream() as stream:
                return pydicom.dcmread(stream)
        with inflated(lambda: source.chunks(offset), limit=max_dataset_bytes) as plain:
            inflated_stream = io.BytesIO(plain) if isinstance(plain, bytes) else plain
            inflated_stream.seek(0)
            dataset = read_dataset(
                inflated_stream,  # type: ignore[arg-type]  # an mmap reads and seeks as a file does
                is_implicit_VR=False,
                is_little_endian=True,
            )
        dataset.file_meta = meta
        return dataset


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
