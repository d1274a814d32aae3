"""DICOM Part 10 file layout (PS3.10 7.1) and the one walk over element headers.

Whatever reads a file's structure without pydicom reads it here, through one
element header reader (``element_header``, PS3.5 7.1):

- where the data set starts, after the preamble and the file meta (group 0002):
  ``dataset_offset`` over bytes or a memory map (ingest hashes the data set from
  there), ``stream_dataset_offset`` over an open file, a value skipped by a seek
  (verify and backup hash stored files that way, whatever their size);
- whether a data set is complete: every element's length fits, every sequence
  and item closes (``dataset_is_complete``: the header reader refuses a cut
  file, which pydicom alone reads quietly up to where it ends);
- whether a file starts like Part 10 (``has_part10_prefix``).

Both offset functions walk the file meta element by element instead of trusting
(0002,0000) Group Length, which some writers get wrong.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.inflate import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from dicom_node.domain.part10_source import Buffer

PREAMBLE_LENGTH = 128
PREFIX = b"DICM"
# the bytes to read to tell whether a file is Part 10: preamble and prefix
HEAD_LENGTH = PREAMBLE_LENGTH + len(PREFIX)

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# Explicit VR (PS3.5 7.1.2): these VRs have two reserved bytes and a 4-byte
# length; every other VR a 2-byte length.
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
UNDEFINED_LENGTH = 0xFFFFFFFF
# (FFFE,xxxx): items and delimiters (PS3.5 7.5), without a VR in every syntax
_DELIMITER_GROUP = 0xFFFE
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD
_FILE_META_GROUP = 0x0002
# nesting deeper than this is refused as damage, not walked (no real object nests so deep)
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ElementHeader:
    group: int
    element: int
    vr: bytes  # b"" in implicit VR and for items and delimiters
    length: int  # of the value; UNDEFINED_LENGTH for an undefined one
    size: int  # of the header itself: 8, or 12 for an explicit VR in LONG_VRS


def element_header(
    data: Buffer, position: int, *, big_endian: bool = False, implicit: bool = False
) -> ElementHeader:
    """The element header at ``position``; struct.error when the data ends inside it."""
    order = ">" if big_endian else "<"
    group, element = struct.unpack_from(f"{order}HH", data, position)
    if implicit or group == _DELIMITER_GROUP:
        return ElementHeader(group, element, b"", _u32(data, position + 4, order), 8)
    vr = bytes(data[position + 4 : position + 6])
    if vr in LONG_VRS:
        return ElementHeader(group, element, vr, _u32(data, position + 8, order), 12)
    length = struct.unpack_from(f"{order}H", data, position + 6)[0]
    return ElementHeader(group, element, vr, length, 8)


def _u32(data: Buffer, position: int, order: str) -> int:
    value: int = struct.unpack_from(f"{order}I", data, position)[0]
    return value


# -------------------------------------------------------------------- file meta


def has_part10_prefix(head: bytes) -> bool:
    """Whether a file's first HEAD_LENGTH bytes are a preamble and ``DICM``."""
    return head[PREAMBLE_LENGTH:HEAD_LENGTH] == PREFIX


def dataset_offset(data: Buffer) -> int:
    """Offset of the first data set byte after the preamble and group 0002;
    InvalidValue when the data is not Part 10 or its file meta is cut short."""
    return _file_meta_end(lambda position, count: data[position : position + count], len(data))


def stream_dataset_offset(source: BinaryIO) -> int:
    """``dataset_offset`` of an open file, read header by header: a value is
    skipped with a seek, never read, so a huge or damaged file meta costs no
    memory. Leaves the file's position anywhere."""
    size = os.fstat(source.fileno()).st_size

    def read_at(position: int, count: int) -> bytes:
        source.seek(position)
        return source.read(count)

    return _file_meta_end(read_at, size)


def _file_meta_end(read_at: Callable[[int, int], bytes], size: int) -> int:
    if not has_part10_prefix(read_at(0, HEAD_LENGTH)):
        raise InvalidValue("not a DICOM Part 10 file (no DICM prefix)")
    offset = HEAD_LENGTH
    while offset + 8 <= size:
        head = read_at(offset, 12)
        if len(head) < 8:
            break  # the file shrank meanwhile
        # the group first: the data set's first element may be shorter than 12 bytes
        if struct.unpack_from("<H", head, 0)[0] != _FILE_META_GROUP:
            return offset
        try:
            header = element_header(head, 0)  # always Explicit VR Little Endian
        except struct.error:
            break
        offset += header.size + header.length
    if offset == size:
        return offset
    raise InvalidValue("truncated file meta information")


# --------------------------------------------------------------------- data set


class _Truncated(Exception):
    pass


def dataset_is_complete(data: Buffer, offset: int, transfer_syntax: str) -> bool:
    """Walk every element header of the data set from ``offset`` to the end of
    ``data`` (values skipped): False when one is cut short (a length that does
    not fit, a sequence or item that does not close).

    A Deflated data set cannot be walked as stored: True here, and the caller
    walks it once inflated (as Explicit VR Little Endian, from offset 0).
    """
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return True
    big_endian = transfer_syntax == EXPLICIT_VR_BIG_ENDIAN
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    try:
        end = _walk(data, offset, big_endian, implicit, depth=0)
    except (_Truncated, struct.error):
        return False
    return end == len(data)


def _walk(data: Buffer, position: int, big_endian: bool, implicit: bool, *, depth: int) -> int:
    """Elements until the end of the data, or past the item delimiter closing them."""
    if depth > _MAX_DEPTH:
        raise _Truncated
    while position < len(data):
        header = element_header(data, position, big_endian=big_endian, implicit=implicit)
        if header.group == _DELIMITER_GROUP:
            if header.element == _ITEM_END and depth > 0:
                return position + 8
            raise _Truncated
        if header.length == UNDEFINED_LENGTH:
            # UN of undefined length holds implicit VR little endian (PS3.5 6.2.2)
            inside = (False, True) if header.vr == b"UN" else (big_endian, implicit)
            position = _walk_items(data, position + header.size, *inside, depth)
        else:
            position += header.size + header.length
    if position > len(data) or depth > 0:
        raise _Truncated
    return position


def _walk_items(data: Buffer, position: int, big_endian: bool, implicit: bool, depth: int) -> int:
    """Items of an undefined-length sequence (or pixel fragments), past its delimiter."""
    while True:
        header = element_header(data, position, big_endian=big_endian, implicit=implicit)
        if header.group != _DELIMITER_GROUP:
            raise _Truncated
        if header.element == _SEQUENCE_END:
            return position + 8
        if header.element != _ITEM:
            raise _Truncated
        if header.length == UNDEFINED_LENGTH:
            position = _walk(data, position + 8, big_endian, implicit, depth=depth + 1)
        else:
            position += 8 + header.length
            if position > len(data):
                raise _Truncated
