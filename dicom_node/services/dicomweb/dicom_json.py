"""Index values as the DICOM JSON model (PS3.18 Annex F.2).

QIDO-RS answers from the index, not from the stored files: each result is a
mapping keyword -> indexed value (text as DICOM encodes it, backslash between
values; integers for the counts and IS columns). This turns one into a DICOM
JSON object: ``{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}``, tags as eight
upper-case hex digits in ascending order, the VR from pydicom's data
dictionary (never from what a peer once sent), numbers as JSON numbers, PN as
``{"Alphabetic", "Ideographic", "Phonetic"}`` objects. An attribute the index
does not know for an entity is present without a ``Value`` (F.2.5: an empty
value), so a required return key is always there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

# VRs whose JSON value is a number (F.2.3); IS and DS are numbers in JSON too
_INTEGER_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
# VRs whose text is one value even if it holds a backslash (PS3.5 6.2)
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@functools.cache  # a search answers the same few keywords for every result
def _dictionary_entry(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}", dictionary_VR(keyword)


def tag_key(keyword: str) -> str:
    """The JSON object key of a keyword: its tag as eight upper-case hex digits."""
    return _dictionary_entry(keyword)[0]


def element(keyword: str, value: Any) -> dict[str, Any]:
    """One attribute's JSON object: ``{"vr": ..., "Value": [...]}`` (no
    ``Value`` when the value is unknown or empty)."""
    vr = _dictionary_entry(keyword)[1]
    values = _values(vr, value)
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def dataset(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A DICOM JSON object of ``values`` (keyword -> indexed value), by tag."""
    elements = {tag_key(keyword): element(keyword, value) for keyword, value in values.items()}
    return dict(sorted(elements.items()))


def _values(vr: str, value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        if isinstance(value, int | float):
            return [value]
        parts = [part.strip() for part in str(value).split("\\")]
        convert = int if vr in _INTEGER_VRS else float
        return [convert(part) if part else None for part in parts]
    text = str(value)
    parts = [text] if vr in _SINGLE_TEXT_VRS else text.split("\\")
    if vr == "PN":
        return [_person_name(part) if part else None for part in parts]
    return [part if part else None for part in parts]


def _person_name(text: str) -> dict[str, str]:
    """One PN value as its component groups (F.2.2); empty groups left out."""
    groups = text.split("=")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}
