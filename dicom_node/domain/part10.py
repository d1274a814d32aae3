"""DICOM Part 10 file layout (PS3.10 7.1): where the dataset starts."""

from __future__ import annotations

import struct

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10_source import Buffer

PREAMBLE_LENGTH = 128
PREFIX = b"DICM"
# Explicit VR little endian (the file meta's encoding): these VRs have a 4-byte length.
LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def dataset_offset(data: Buffer) -> int:
    """Offset of the first dataset byte after the preamble and group 0002.

    Walked element by element instead of trusting (0002,0000) Group Length,
    which some writers get wrong.
    """
    if len(data) < PREAMBLE_LENGTH + 4 or data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != PREFIX:
        raise InvalidValue("not a DICOM Part 10 file (no DICM prefix)")
    offset = PREAMBLE_LENGTH + 4
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            return offset
        vr = data[offset + 4 : offset + 6]
        if vr in LONG_VRS:
            if offset + 12 > len(data):
                break
            length = struct.unpack_from("<I", data, offset + 8)[0]
            offset += 12 + length
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            offset += 8 + length
    if offset == len(data):
        return offset
    raise InvalidValue("truncated file meta information")
