"""Bounded, streaming inflation of a Deflated Explicit VR Little Endian data set.

PS3.5 A.5 (transfer syntax 1.2.840.10008.1.2.1.99): the data set is encoded as
Explicit VR Little Endian, then compressed as one raw RFC 1951 deflate stream (no
zlib or gzip wrapper), padded to an even length. Deflate shrinks long runs about
1000:1, so a few hundred KiB sent can claim gigabytes once inflated: pydicom and
pynetdicom inflate with one ``zlib.decompress`` call, output unbounded.

Here output comes a chunk at a time (``decompressobj`` with ``max_length``), never
more than the limit plus one byte in all, and inflation stops with
:class:`DatasetTooLarge` past the limit. This is the one place the node inflates:
the header read of C-STORE, ``dicom-node import``, reindex and verify's repair
(``domain/dataset_header.py``), and the check of data sets pynetdicom holds in
memory (``scp/dataset_limit.py``); transcoding should use it too.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from dicom_node.domain.errors import DomainError
from dicom_node.domain.part10_source import Buffer

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
# The node's largest data set unless configured otherwise (settings.max_dataset_bytes;
# tests/unit/test_inflate.py keeps the two equal).
DEFAULT_MAX_DATASET_BYTES = 1_073_741_824
# Input is fed in small pieces: zlib copies the unconsumed rest of the piece after
# every bounded call, and a bomb needs many calls per piece.
INPUT_CHUNK = 65_536
OUTPUT_CHUNK = 1_048_576
# An inflated data set up to this size is kept in memory; a larger one goes to an
# anonymous temp file (gone once closed, even after a crash) and is memory-mapped.
SPILL_BYTES = 8_388_608


class DatasetTooLarge(DomainError):
    """A data set over the limit, as received or once inflated.

    ``size``: the bytes counted, when known (None: inflation stopped past the
    limit, the real size was never computed). ``reason`` is the same for every
    instance refused under one limit (the import summary groups by it).
    """

    def __init__(self, limit: int, size: int | None = None, *, inflated: bool = False) -> None:
        self.limit = limit
        self.size = size
        self.inflated = inflated
        # fits the 64 characters of a C-STORE response's Error Comment (PS3.7 C.4.2.1.4)
        what = "inflated data set" if inflated else "data set"
        self.reason = f"{what} over max_dataset_bytes ({limit} bytes)"
        super().__init__(self.reason)


class InvalidDeflate(DomainError):
    """The deflate stream is corrupt or ends early (cannot be understood)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inflate(
    chunks: Iterable[bytes | memoryview], write: Callable[[bytes], object], *, limit: int
) -> int:
    """Inflate the raw deflate stream given as ``chunks`` into ``write``; returns
    the inflated size. Raises DatasetTooLarge as soon as output passes ``limit``
    (at most ``limit + 1`` bytes are ever produced), InvalidDeflate for a corrupt
    or truncated stream. Bytes after the end of the stream (PS3.5 A.5's padding)
    are ignored, as pydicom does."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        for chunk in chunks:
            pending: bytes | memoryview = chunk
            while not inflater.eof:
                # max_length 0 would mean "unbounded": room is at least 1
                room = min(OUTPUT_CHUNK, limit - total + 1)
                out = inflater.decompress(pending, room)
                total += len(out)
                if total > limit:
                    raise DatasetTooLarge(limit, inflated=True)
                if out:
                    write(out)
                pending = inflater.unconsumed_tail
                if not pending and len(out) < room:
                    break  # this chunk is used up and zlib holds nothing back
            if inflater.eof:
                break
    except zlib.error:
        raise InvalidDeflate("deflated data set is corrupt") from None
    if not inflater.eof:
        raise InvalidDeflate("deflated data set is truncated")
    return total


@contextlib.contextmanager
def inflated(
    chunks: Callable[[], Iterable[bytes | memoryview]],
    *,
    limit: int,
    scratch_dir: Path | None = None,
) -> Iterator[Buffer]:
    """The inflated data set as one buffer, for as long as the ``with`` lasts.

    ``chunks`` gives the deflated bytes afresh on each call: the stream is first
    inflated only to be measured (a bomb costs CPU time, never memory or disk),
    then again to be kept. Up to SPILL_BYTES it is kept in memory; past that in
    an anonymous temp file in ``scratch_dir`` (the store's temp directory: the
    system's /tmp may be a RAM disk), memory-mapped, so a large data set costs
    disk and page cache, not the process's own memory.
    """
    size = inflated_size(chunks(), limit=limit)
    if size <= SPILL_BYTES:
        memory = io.BytesIO()
        inflate(chunks(), memory.write, limit=size)
        yield memory.getvalue()
        return
    with tempfile.TemporaryFile(dir=scratch_dir) as file:
        inflate(chunks(), file.write, limit=size)
        file.flush()
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


def inflated_size(chunks: Iterable[bytes | memoryview], *, limit: int) -> int:
    """What the stream inflates to, keeping none of it (errors as ``inflate``)."""
    return inflate(chunks, _discard, limit=limit)


def _discard(data: bytes) -> None:
    """Where inflating only to measure writes."""
