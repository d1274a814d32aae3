"""C-FIND matching keys (PS3.4 C.2.2.2), parsed into a form any back-end compiles.

Pure code: attribute values in, match descriptions out; no SQL, no pynetdicom.
The same keys serve the DICOM C-FIND SCP and the HTTP study search.

Implemented here: universal matching (C.2.2.2.3), single value matching
(C.2.2.2.1), wildcard matching (C.2.2.2.4) for the VRs that allow it, list of
UID matching (C.2.2.2.2) and range matching for DA and TM (C.2.2.2.5). TM is
compared at the precision the query gives: ``1015`` means 10:15:00.000000 to
10:15:59.999999, as a single value and as a range end. DT ranges and sequence
matching are not parsed yet: a query using them is refused as unsupported
rather than answered wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.uids import is_valid_uid


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


class InvalidQuery(InvalidValue):
    """A malformed matching key (PS3.4: 0xA900 / 0xC000 class failures)."""


class UnsupportedQuery(InvalidValue):
    """A well-formed key this node cannot match yet (never answered wrongly)."""


@dataclass(frozen=True, slots=True)
class Universal:
    """Empty value: matches everything, and asks for the attribute's value."""


@dataclass(frozen=True, slots=True)
class Single:
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """``*`` any run of characters, ``?`` exactly one."""

    pattern: str


@dataclass(frozen=True, slots=True)
class UidList:
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive; an open end is None."""

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A value with several values (``CT\\MR``): an entity matches if any does."""

    matches: tuple[Single | Wildcard, ...]


Match = Universal | Single | Wildcard | UidList | Range | AnyOf

# PS3.4 C.2.2.2.4: wildcards only for these VRs; elsewhere * and ? are literal.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


def parse_match(vr: str, raw: str | None, *, keyword: str) -> Match:
    """The match a C-FIND identifier's value asks for. Raises InvalidQuery."""
    value = (raw or "").strip(" \x00")
    if not value:
        return Universal()
    if vr == "UI":
        uids = tuple(part.strip(" \x00") for part in value.split("\\"))
        bad = [uid for uid in uids if not is_valid_uid(uid)]
        if bad:
            raise InvalidQuery(f"{keyword}: not a valid UID (list)")
        return Single(uids[0]) if len(uids) == 1 else UidList(uids)
    if vr == "DA":
        return _date_match(value, keyword)
    if vr == "TM":
        return _time_match(value, keyword)
    if vr == "DT":
        if "-" in value:
            raise UnsupportedQuery(f"{keyword}: DT range matching is not supported yet")
        return Single(value)
    if "\\" in value:
        parts = [part for part in value.split("\\") if part.strip(" \x00")]
        if not parts:
            return Universal()
        matches = [_text_match(vr, part.strip(" \x00")) for part in parts]
        if any(isinstance(m, Universal) for m in matches):
            return Universal()
        return AnyOf(tuple(m for m in matches if isinstance(m, Single | Wildcard)))
    return _text_match(vr, value)


def _text_match(vr: str, value: str) -> Universal | Single | Wildcard:
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        if set(value) == {"*"}:
            return Universal()  # C.2.2.2.4: a lone * is universal matching
        return Wildcard(value)
    return Single(value)


def _date_match(value: str, keyword: str) -> Match:
    if value.count("-") > 1:
        raise InvalidQuery(f"{keyword}: malformed date range")
    if "-" not in value:
        return Single(_date(value, keyword))
    low, high = (part.strip() for part in value.split("-"))
    if not low and not high:
        raise InvalidQuery(f"{keyword}: a date range needs at least one end")
    range_ = Range(_date(low, keyword) if low else None, _date(high, keyword) if high else None)
    if range_.low and range_.high and range_.low > range_.high:
        raise InvalidQuery(f"{keyword}: date range ends before it starts")
    return range_


def _date(value: str, keyword: str) -> str:
    # ACR-NEMA YYYY.MM.DD is still sent by old workstations (PS3.5 6.2 note)
    text = value.replace(".", "")
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        datetime.strptime(text, "%Y%m%d")  # a real calendar date: no 31 February
    except ValueError:
        raise InvalidQuery(f"{keyword}: not a DA value (YYYYMMDD)") from None
    return text


def _time_match(value: str, keyword: str) -> Range:
    if value.count("-") > 1:
        raise InvalidQuery(f"{keyword}: malformed time range")
    low_text, separator, high_text = (part.strip() for part in value.partition("-"))
    if not separator:
        high_text = low_text  # a single value: everything within its precision
    if not low_text and not high_text:
        raise InvalidQuery(f"{keyword}: a time range needs at least one end")
    low = normalize_tm(low_text, upper=False) if low_text else None
    high = normalize_tm(high_text, upper=True) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        raise InvalidQuery(f"{keyword}: not a TM value (HHMMSS.FFFFFF)")
    if low is not None and high is not None and low > high:
        raise InvalidQuery(f"{keyword}: time range ends before it starts")
    return Range(low, high)


def normalize_tm(value: str | None, *, upper: bool = False) -> str | None:
    """TM (PS3.5 6.2) as ``HHMMSS.FFFFFF``, comparable as text; None if not TM.

    Missing trailing parts are filled with the lowest value, or with the highest
    for the upper end of a range, so values compare at the precision given. The
    old ``HH:MM:SS`` form is read too.
    """
    text = (value or "").strip(" \x00").replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not whole[4:]):
        return None
    if fraction and (not fraction.isdigit() or len(fraction) > 6):
        return None
    parts = [whole[i : i + 2] for i in range(0, len(whole), 2)]
    limits = ("23", "59", "60")
    if any(part > limit for part, limit in zip(parts, limits, strict=False)):
        return None
    filler = "59" if upper else "00"
    parts += [filler] * (3 - len(parts))
    digits = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{''.join(parts)}.{digits}"


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as SQL LIKE with ``\\`` as the escape character.

    LIKE's own ``%``, ``_`` and ``\\`` in the value are escaped, so they match
    only themselves (PS3.4: they are not DICOM wildcards).
    """
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")
