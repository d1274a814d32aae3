"""C-FIND answers encoded straight from index rows, without a pydicom Dataset.

Per answer, building a Dataset (a ``DataElement`` per key, each value converted
by pydicom) and then encoding it cost about as much as the query itself: for
100 answers ~7 ms to build and ~8 ms to encode, on the 2-core VM. Every answer
of one query has the same keys in the same order with the same VRs, so the
element headers are laid out once per query and only the values change.

The lean encoder only takes what it encodes exactly as pydicom would: ASCII
text of the text VRs, integers of IS and plain number strings, None (an empty
value), in Implicit or Explicit VR Little Endian. Anything else (a non-ASCII
value, which needs SpecificCharacterSet; a sequence; a VR such as ``US or SS``)
makes :meth:`AnswerEncoder.encode` return None, and the caller builds that
answer with pydicom as before. tests/unit/test_find_answers.py compares the
two byte for byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_node.domain.query import Level

# text VRs whose value is the ASCII string as given, padded with a space to an
# even length (UI with NUL); a multi-value is stored joined with "\" already
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UI"})
_NUMBER_VRS = frozenset({"IS", "DS"})
# a number string pydicom writes back exactly as given (it keeps the original
# string): an optional sign, digits, decimals, exponent; no spaces
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_MAX_LENGTH = 0xFFFE  # an explicit VR text element's length is 16 bits
_LEVEL = "QueryRetrieveLevel"
_LEVEL_TAG = 0x00080052


class AnswerEncoder:
    """The answers of one query, for one Little Endian transfer syntax."""

    def __init__(self, level: Level, keys: list[tuple[int, str, str]], *, implicit_vr: bool):
        # (tag, keyword, VR) in tag order, QueryRetrieveLevel among them
        self._implicit = implicit_vr
        self._level = _padded(level.value.encode("ascii"), "CS")
        self._layout = [
            (keyword, vr, _tag_and_vr(tag, vr, implicit_vr)) for tag, keyword, vr in keys
        ]

    @classmethod
    def for_query(
        cls, level: Level, keys: Mapping[str, Any], *, implicit_vr: bool
    ) -> AnswerEncoder | None:
        """None when some key cannot take the lean path (a sequence, a binary or
        ambiguous VR): every answer of such a query is built with pydicom."""
        elements = [(_LEVEL_TAG, _LEVEL, "CS")]
        for keyword in keys:
            tag = tag_for_keyword(keyword)
            if tag is None or keyword == _LEVEL:
                return None
            vr = dictionary_VR(keyword)
            if vr not in _TEXT_VRS and vr not in _NUMBER_VRS:
                return None
            elements.append((tag, keyword, vr))
        elements.sort()
        return cls(level, elements, implicit_vr=implicit_vr)

    def encode(self, match: Mapping[str, Any]) -> bytes | None:
        """The answer's identifier (the requested keys plus QueryRetrieveLevel),
        or None if a value needs pydicom (see the module doc)."""
        parts: list[bytes] = []
        for keyword, vr, head in self._layout:
            value = self._level if keyword == _LEVEL else _value(match.get(keyword), vr)
            if value is None:
                return None
            if len(value) > _MAX_LENGTH:
                return None
            parts.append(head)
            parts.append(struct.pack("<I" if self._implicit else "<H", len(value)))
            parts.append(value)
        return b"".join(parts)


def _value(value: Any, vr: str) -> bytes | None:
    if value is None:
        return b""
    if type(value) is int and vr == "IS":
        return _padded(str(value).encode("ascii"), vr)
    if type(value) is not str or not value.isascii():
        return None
    if (
        vr in _NUMBER_VRS
        and value
        and not all(_PLAIN_NUMBER.fullmatch(part) for part in value.split("\\"))
    ):
        return None  # pydicom would convert (and may refuse) this one
    return _padded(value.encode("ascii"), vr)


def _padded(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        return value + (b"\x00" if vr == "UI" else b" ")
    return value


def _tag_and_vr(tag: int, vr: str, implicit_vr: bool) -> bytes:
    """The element header up to its length field (every VR here has a 16-bit
    length in Explicit VR, PS3.5 7.1.2; 32-bit in Implicit VR)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return head if implicit_vr else head + vr.encode("ascii")
