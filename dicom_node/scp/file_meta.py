"""The preamble, DICM and file meta of a received instance (PS3.10 7.1),
encoded directly.

Measured on the receive path (docs/ingest.md, "The receive path"), building
them with pydicom (pynetdicom's ``create_file_meta`` and ``encode_file_meta``,
``scp/store.py``'s ``part10_prefix``) cost 0.5-0.7 ms per instance, as much as
everything pynetdicom does to receive a small instance. The group is eight
fixed elements; this writes them with ``struct``, byte for byte what pydicom
writes (``tests/unit/test_file_meta.py`` compares the two), and answers None
for anything it does not cover (a UID that is not digits and dots, an AE title
pydicom would treat specially), which the caller then builds with pydicom.
"""

from __future__ import annotations

import re
import struct

from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta, encode_file_meta

PREAMBLE = b"\x00" * 128 + b"DICM"
_UID = re.compile(r"[0-9.]{1,64}")
_AE = re.compile(r"[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?")


def _short(tag_element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, tag_element, vr, len(value)) + value


def _ui(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _text(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b" " if len(data) % 2 else data


# Implementation Class UID and Version Name: the same for every instance
_IMPLEMENTATION = _short(0x0012, b"UI", _ui(str(PYNETDICOM_IMPLEMENTATION_UID))) + _short(
    0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)
)
# File Meta Information Version (OB, long form): 00 01
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def encode_prefix(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str
) -> bytes | None:
    """Preamble, DICM and the file meta group as pynetdicom's ``create_file_meta``
    plus a Source Application Entity Title, encoded by pydicom, would write them;
    None when a value is outside what this encodes."""
    if not (
        _UID.fullmatch(sop_class_uid)
        and _UID.fullmatch(sop_instance_uid)
        and _UID.fullmatch(transfer_syntax)
        and _AE.fullmatch(source_ae)
    ):
        return None
    body = b"".join(
        (
            _VERSION,
            _short(0x0002, b"UI", _ui(sop_class_uid)),
            _short(0x0003, b"UI", _ui(sop_instance_uid)),
            _short(0x0010, b"UI", _ui(transfer_syntax)),
            _IMPLEMENTATION,
            _short(0x0016, b"AE", _text(source_ae)),
        )
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + group_length + body


def pydicom_prefix(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """The same, built by pydicom as pynetdicom's ``Event.file_meta`` does: for
    what :func:`encode_prefix` declines, and the reference its test compares with."""
    meta: FileMetaDataset = create_file_meta(
        sop_class_uid=UID(sop_class_uid),
        sop_instance_uid=UID(sop_instance_uid),
        transfer_syntax=UID(transfer_syntax),
    )
    meta.SourceApplicationEntityTitle = source_ae
    return PREAMBLE + encode_file_meta(meta)


def part10_prefix(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """What a received instance's file holds before its data set as sent."""
    return encode_prefix(
        sop_class_uid, sop_instance_uid, transfer_syntax, source_ae
    ) or pydicom_prefix(sop_class_uid, sop_instance_uid, transfer_syntax, source_ae)
