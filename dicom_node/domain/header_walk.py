"""The lean header read (docs/ingest.md#the-lean-header-read): one pass over a
data set's bytes that takes the values of the indexed elements and checks the
structure.

pydicom's ``dcmread(stop_before_pixels=True, specific_tags=...)`` followed by
``part10.dataset_is_complete`` costs two walks and a Dataset per instance on
the C-STORE hot path. This module walks the element headers once, for Explicit
and Implicit VR Little Endian (every syntax but big endian and Deflated encodes
its data set as one of them up to the pixel data), keeps the raw bytes of the
wanted elements (the values of ``Field``s, items of wanted sequences included),
skips every other value by its length and never reads pixel data.

It gives the values pydicom's ``Dataset.get`` would give: text decoded as
pydicom decodes it (the common character sets directly, anything else through
pydicom's own converters), multi-valued text as a list. Wherever pydicom might
read the bytes differently from this walk (a VR it does not know or an
encoding switch, an undefined length that is not a sequence, tags out of
order, an item that does not end where its length says, a data set cut short)
it raises ``Undecided`` and the caller reads the file with pydicom as before:
the walk only answers where the answer is certainly the same
(tests/unit/test_header_walk.py compares both on every file of pydicom's test
sets and on the hostile builders of the test suite).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import PrivateTransferSyntaxes
from pydicom.valuerep import VR

from dicom_node.domain.inflate import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from dicom_node.domain.part10 import (
    EXPLICIT_VR_BIG_ENDIAN,
    HEAD_LENGTH,
    IMPLICIT_VR_LITTLE_ENDIAN,
    LONG_VRS,
    UNDEFINED_LENGTH,
    dataset_is_complete,
)
from dicom_node.domain.part10_source import Buffer


class Undecided(Exception):
    """The walk cannot be sure to read the data set as pydicom does: read it
    with pydicom (a refusal is then worded exactly as before)."""


class Field(NamedTuple):
    keyword: str
    vr: str  # the dictionary VR: an explicit VR must say the same
    items: Mapping[int, Field] | None = None  # the wanted elements of a sequence's items


Values = dict[str, Any]  # keyword -> the value Dataset.get would give; items as Values

# the VRs pydicom reads as such in explicit VR (filereader.ENCODED_VR); any other
# two bytes make it guess (implicit VR, or a 2-byte length)
_KNOWN_VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)
_SHORT_VRS = _KNOWN_VRS - LONG_VRS  # with a 2-byte length
_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHI")
_U32 = struct.Struct("<I")
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHARSET = 0x00080005
# pydicom's stop_before_pixels: the top-level data set ends for it at these
_PIXEL_DATA = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_MAX_DEPTH = 64  # as part10.dataset_is_complete
_SQ = "SQ"


def transfer_syntax(data: Buffer, offset: int) -> str:
    """The file meta's TransferSyntaxUID as pydicom reads it (``offset`` from
    ``part10.dataset_offset``); Undecided when the file meta is anything but
    well-formed Explicit VR Little Endian with one such UID."""
    found = ""
    position, previous = HEAD_LENGTH, -1
    while position < offset:
        if position + 8 > offset:
            raise Undecided
        group, element, vr, length = _EXPLICIT.unpack_from(data, position)
        tag = group << 16 | element
        if vr not in _KNOWN_VRS or tag <= previous:
            raise Undecided
        header = 8
        if vr in LONG_VRS:
            length = _U32.unpack_from(data, position + 8)[0]
            header = 12
        if length == UNDEFINED_LENGTH or (tag == 0x00020000 and (vr != b"UL" or length != 4)):
            raise Undecided  # pydicom reads the group length's value: it must be one
        if previous < 0 and tag != 0x00020000:
            # pydicom converts the first element to tell whether the file meta is
            # explicit VR: an error there is its refusal to word (a group length
            # of 4 bytes, checked above, converts)
            _convert(tag, vr.decode(), bytes(data[position + header : position + header + length]))
        if tag == 0x00020010:
            if vr != b"UI":
                raise Undecided
            found = _string(bytes(data[position + header : position + header + length]))
            if "\\" in found:
                raise Undecided
        position += header + length
        previous = tag
    if position != offset or not found or found in PrivateTransferSyntaxes:
        raise Undecided
    return found


def walk(data: Buffer, offset: int, syntax: str, wanted: Mapping[int, Field]) -> Values:
    """The values of the ``wanted`` elements of the data set from ``offset`` to
    the end of ``data`` in transfer syntax ``syntax``; Undecided where pydicom
    must decide, including a data set cut short."""
    if syntax in (EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN):
        raise Undecided
    walker = _Walker(data, syntax == IMPLICIT_VR_LITTLE_ENDIAN)
    raw: dict[int, Any] = {}
    stop = walker.dataset(offset, len(data), wanted, raw, depth=0)
    if stop is not None and not dataset_is_complete(data, stop, syntax):
        raise Undecided  # the rest, from the pixel data, as the structure check walks it
    return _decode(raw, wanted, walker.implicit)


class _Walker:
    def __init__(self, data: Buffer, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit

    def dataset(
        self,
        position: int,
        end: int | None,
        wanted: Mapping[int, Field] | None,
        raw: dict[int, Any],
        *,
        depth: int,
    ) -> int | None:
        """Elements from ``position``: of the top-level data set (``depth`` 0, to
        the end of the data), of a defined-length item (to ``end`` exactly) or of
        an undefined-length item (``end`` None, past its delimiter). Returns where
        the top level reached pixel data (None at its end), or where an item ends.
        """
        data, implicit = self.data, self.implicit
        limit = len(data) if end is None else end
        unpack = _IMPLICIT.unpack_from if implicit else _EXPLICIT.unpack_from
        u32 = _U32.unpack_from
        get = wanted.get if wanted is not None else None
        previous = -1
        if implicit and depth == 0 and position + 8 <= limit and _looks_explicit(data, position):
            raise Undecided  # pydicom would switch to explicit VR here
        while True:
            if position == end:
                return None if depth == 0 else position
            if position + 8 > limit:
                raise Undecided
            # the common case first: an explicit VR with a 2-byte length
            if implicit:
                group, element, length = unpack(data, position)
                vr = b""
                header = 8
            else:
                group, element, vr, length = unpack(data, position)
                header = 8
                if vr in _SHORT_VRS:
                    pass
                elif vr in LONG_VRS:
                    if position + 12 > limit:
                        raise Undecided
                    length = u32(data, position + 8)[0]
                    header = 12
                elif group == 0xFFFE:
                    length = u32(data, position + 4)[0]
                else:
                    raise Undecided  # pydicom would guess (implicit VR, 2-byte length)
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == _ITEM_END and end is None and depth > 0:
                    return position + 8
                raise Undecided
            if depth == 0:
                if tag in _PIXEL_DATA:
                    return position
                if group in (0x0000, 0x0002):
                    raise Undecided  # a command set or file meta inside the data set
            field = None
            if get is not None:
                if tag <= previous or (depth > 0 and tag == _CHARSET):
                    raise Undecided  # a duplicate, or an item's own character set
                previous = tag
                field = get(tag)
            value = position + header
            if length == UNDEFINED_LENGTH:
                if not self._is_sequence(tag, vr, value):
                    raise Undecided
                if field is not None and field.vr != _SQ:
                    raise Undecided
                items: list[dict[int, Any]] | None = [] if field is not None else None
                position = self.sequence(value, None, field, items, depth)
                if field is not None:
                    raw[tag] = items
                continue
            position = value + length
            if position > limit:
                raise Undecided
            if field is not None:
                raw[tag] = self._value(field, vr, value, position, depth)

    def _value(self, field: Field, vr: bytes, value: int, end: int, depth: int) -> Any:
        """A wanted element's raw value: its bytes, (VR, bytes) when sent with
        another VR than the dictionary's, its items' for a sequence."""
        given = vr.decode() if vr else field.vr
        if given == "UN" and end - value < 0xFFFF and field.vr != _SQ:
            given = field.vr  # pydicom reads a standard element sent as UN by its own VR
        if given != field.vr and _SQ in (given, field.vr):
            raise Undecided
        if field.vr == _SQ:
            items: list[dict[int, Any]] = []
            if self.sequence(value, end, field, items, depth) != end:
                raise Undecided
            return items
        if given != field.vr:
            # pydicom converts by the VR given
            return (given, bytes(self.data[value:end]))
        return bytes(self.data[value:end])

    def sequence(
        self,
        position: int,
        end: int | None,
        field: Field | None,
        items: list[dict[int, Any]] | None,
        depth: int,
    ) -> int:
        """The items of a sequence from ``position`` (to ``end``, or past its
        delimiter when undefined); returns where the sequence ends."""
        if depth >= _MAX_DEPTH:
            raise Undecided
        data = self.data
        limit = len(data) if end is None else end
        while end is None or position < end:
            if position + 8 > limit:
                raise Undecided
            group, element, length = _IMPLICIT.unpack_from(data, position)
            tag = group << 16 | element
            if tag == _SEQUENCE_END and end is None:
                return position + 8
            if tag != _ITEM:
                raise Undecided
            item: dict[int, Any] = {}
            wanted = field.items if field is not None else None
            if length == UNDEFINED_LENGTH:
                position = self._item(position + 8, None, wanted, item, depth)
            else:
                item_end = position + 8 + length
                if item_end > limit:
                    raise Undecided
                position = self._item(position + 8, item_end, wanted, item, depth)
            if items is not None:
                items.append(item)
        return position

    def _item(
        self,
        position: int,
        end: int | None,
        wanted: Mapping[int, Field] | None,
        item: dict[int, Any],
        depth: int,
    ) -> int:
        # items of a sequence pydicom parses are read element by element, also
        # where nothing is wanted from them (``wanted`` None): pydicom reads them whole
        ended = self.dataset(position, end, wanted, item, depth=depth + 1)
        if ended is None:
            raise Undecided
        return ended

    def _is_sequence(self, tag: int, vr: bytes, value: int) -> bool:
        """An undefined length the walk can follow: a sequence (pydicom reads
        anything else by searching for a delimiter)."""
        if not self.implicit:
            return vr == b"SQ"
        try:
            return _dictionary_vr(tag) == _SQ
        except KeyError:
            # a private tag: pydicom takes it as a sequence if an item follows
            if not (tag >> 16) & 1 or value + 4 > len(self.data):
                return False
            group, element = struct.unpack_from("<HH", self.data, value)
            return bool((group << 16 | element) == _ITEM)


_VR_CACHE: dict[int, str] = {}


def _dictionary_vr(tag: int) -> str:
    vr = _VR_CACHE.get(tag)
    if vr is None:
        vr = _VR_CACHE[tag] = dictionary_VR(tag)
    return vr


def _looks_explicit(data: Buffer, position: int) -> bool:
    """pydicom's test at the start of a data set said to be implicit VR: two
    capital letters where an explicit VR would be (filereader._is_implicit_vr)."""
    return 0x40 < data[position + 4] < 0x5B and 0x40 < data[position + 5] < 0x5B


# ------------------------------------------------------------------ values

# Python codecs (after pydicom's convert_encodings) that decode byte by byte or
# as UTF-8: the delimiters \ = ^ are never part of a character, so decoding a
# whole value and splitting it equals pydicom's order of operations
_FAST_CODECS = frozenset({"iso8859", "latin_1", "UTF8"})
_ESC = 0x1B
_PLAIN_INTEGER = re.compile(r" *[+-]?[0-9]{1,15}")
_TEXT_VRS = frozenset({"SH", "LO", "UC"})


def _decode(raw: dict[int, Any], wanted: Mapping[int, Field], implicit: bool) -> Values:
    charset = raw.get(_CHARSET)
    if isinstance(charset, tuple):
        raise Undecided  # sent with another VR than CS: pydicom reads it its way
    encodings = convert_encodings(_multi(_string(charset)) if charset else "")
    codec = encodings[0] if len(encodings) == 1 and encodings[0] in _FAST_CODECS else None
    return _values(raw, wanted, encodings, codec, implicit)


def _values(
    raw: dict[int, Any],
    wanted: Mapping[int, Field],
    encodings: list[str],
    codec: str | None,
    implicit: bool,
) -> Values:
    values: Values = {}
    for tag, value in raw.items():
        field = wanted[tag]
        if field.items is not None:
            values[field.keyword] = [
                _values(item, field.items, encodings, codec, implicit) for item in value
            ]
        elif isinstance(value, tuple):
            if value[1]:
                values[field.keyword] = _convert(tag, value[0], value[1], encodings)
        elif value:
            values[field.keyword] = _value(tag, field.vr, value, encodings, codec, implicit)
    return values


def _value(
    tag: int, vr: str, raw: bytes, encodings: list[str], codec: str | None, implicit: bool
) -> Any:
    """What pydicom's converters make of ``raw`` (values.convert_value), with the
    common cases done here and the rest handed to pydicom."""
    if vr in ("UI", "CS", "DA", "TM"):
        # decoded as Latin-1 whatever the character set (values.convert_string)
        return _multi(_string(raw))
    if vr == "IS":
        text = _string(raw)
        if _PLAIN_INTEGER.fullmatch(text):
            return int(text)
    elif codec is not None and _ESC not in raw:
        try:
            if vr in _TEXT_VRS:
                parts = [part.rstrip("\0 ") for part in raw.decode(codec).split("\\")]
                return parts[0] if len(parts) == 1 else parts
            if vr == "UT":
                return raw.decode(codec).rstrip("\0 ")
            if vr == "PN":
                names = [_name(name) for name in raw.rstrip(b"\x00 ").decode(codec).split("\\")]
                return names[0] if len(names) == 1 else names
        except UnicodeDecodeError:
            pass  # pydicom decodes with replacement characters (and warns)
    return _convert(tag, None if implicit else vr, raw, encodings)


def _convert(tag: int, vr: str | None, raw: bytes, encodings: list[str] | None = None) -> Any:
    """pydicom's own value for the element; Undecided where it raises (pydicom
    then reads the file and words the refusal)."""
    element = RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, vr is None, True)
    try:
        return convert_raw_data_element(element, encoding=encodings).value
    except Exception:
        raise Undecided from None


def _string(raw: bytes) -> str:
    """A value of a VR read without the character set, padding removed."""
    return raw.decode("latin_1").rstrip(" \x00")


def _multi(text: str) -> str | list[str]:
    parts = text.split("\\")
    return parts[0] if len(parts) == 1 else parts


def _name(name: str) -> str:
    """A PN value as pydicom's PersonName prints it: empty trailing component
    groups dropped (valuerep._decode_personname)."""
    groups = name.split("=")
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)
