"""C-FIND matching keys (PS3.4 C.2.2.2), parsed into a form any back-end compiles.

Pure code: attribute values in, match descriptions out; no SQL, no pynetdicom.
The same keys serve the DICOM C-FIND SCP and the HTTP study search.

Implemented here: universal matching (C.2.2.2.3), single value matching
(C.2.2.2.1), wildcard matching (C.2.2.2.4) for the VRs that allow it, list of
UID matching (C.2.2.2.2), range matching for DA, TM and DT (C.2.2.2.5) and
sequence matching (C.2.2.2.6, see ``SequenceMatch``). Wildcards are matched in
linear-time code only (``wildcard_matches``, SQL LIKE), never by a backtracking
regular expression a hostile pattern could stall. TM is compared at the
precision the query gives: ``1015`` means 10:15:00.000000 to 10:15:59.999999, as
a single value and as a range end. DT is compared the same way, after applying
its UTC offset: every DT match is a ``Range`` of ``YYYYMMDDHHMMSS.FFFFFF`` UTC
texts (``normalize_dt``). A DA key and its TM partner (StudyDate + StudyTime)
given together are one combined date-time range (C.2.2.2.5.1): the compiler
sees both matches and builds it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from enum import StrEnum

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.vr import (
    DT_PATTERN,
    INTEGER_RANGES,
    date_text,
    is_calendar_date,
    is_valid_uid,
    normalize_dt,
    normalize_tm,
)


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


class UnprocessableQuery(InvalidQuery):
    """A key this node will not process: an integer beyond the range its VR
    allows (and the index holds), a list of more values than the node accepts,
    a value longer than any it indexes. C-FIND, C-MOVE and C-GET answer 0xC000
    Unable to process (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4), not 0xA900: the
    identifier may fit the SOP class, the node declines its size; HTTP answers 422."""


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

# Longest single value a matching key may carry. Far above any value the index
# holds (a PN is at most 3 x 64 characters, PS3.5 6.2), and far below the
# 50,000-byte LIKE pattern SQLite accepts: a longer value could only make the
# database fail, never match.
MAX_VALUE_CHARS = 1024


def parse_match(vr: str, raw: str | None, *, keyword: str, max_values: int | None = None) -> Match:
    """The match a C-FIND identifier's value asks for. Raises InvalidQuery
    (UnprocessableQuery for a value beyond what the node will process, or a list
    of more than ``max_values`` values; None: no limit)."""
    value = (raw or "").strip(" \x00")
    if not value:
        return Universal()
    if max_values is not None:
        check_value_count(keyword, value, max_values)
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
        return datetime_match(value, keyword=keyword)
    if "\\" in value:
        parts = [part for part in value.split("\\") if part.strip(" \x00")]
        if not parts:
            return Universal()
        matches = [_text_match(vr, part.strip(" \x00"), keyword) for part in parts]
        if any(isinstance(m, Universal) for m in matches):
            return Universal()
        return AnyOf(tuple(m for m in matches if isinstance(m, Single | Wildcard)))
    return _text_match(vr, value, keyword)


def check_value_count(keyword: str, raw: str | None, max_values: int) -> None:
    """Refuse a key listing more than ``max_values`` backslash-separated values
    (the operator's ``max_query_list_values``) before anything is parsed."""
    if raw and raw.count("\\") >= max_values:
        raise UnprocessableQuery(f"{keyword}: more than {max_values} values")


def _text_match(vr: str, value: str, keyword: str) -> Universal | Single | Wildcard:
    if len(value) > MAX_VALUE_CHARS:
        raise UnprocessableQuery(f"{keyword}: a value longer than {MAX_VALUE_CHARS} characters")
    # PS3.5 6.2: no control characters in the text VRs keys use (ESC sequences are
    # gone once decoded); a NUL or a lone surrogate would make the database
    # driver fail (PostgreSQL stores no NUL), not answer "no match"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidQuery(f"{keyword}: control characters are not allowed")
    if vr in INTEGER_RANGES:
        return Single(str(integer_value(vr, value, keyword=keyword)))
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        if set(value) == {"*"}:
            return Universal()  # C.2.2.2.4: a lone * is universal matching
        # ** matches what * does: one star per run keeps patterns short
        return Wildcard(_STARS.sub("*", value))
    return Single(value)


_STARS = re.compile(r"\*{2,}")


def integer_value(vr: str, value: str, *, keyword: str) -> int:
    """An integer VR's value (IS: PS3.5 6.2, optional sign, at most 12 characters).

    Not an integer: InvalidQuery (0xA900). An integer outside the VR's range:
    UnprocessableQuery (0xC000); it could match nothing the node holds."""
    text = value.strip(" ")
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        raise InvalidQuery(f"{keyword}: not an integer string")
    # a value outside the VR's range (domain/vr.py) can match nothing: refused
    # before it reaches the database, whose driver would fail on it
    low, high = INTEGER_RANGES[vr]
    significant = digits.lstrip("0") or "0"
    # length first: int() of a peer's thousands of digits is slow, or refused
    number = int(significant) if len(significant) <= 20 else None
    if number is not None and text.startswith("-"):
        number = -number
    if number is None or not low <= number <= high:
        raise UnprocessableQuery(f"{keyword}: out of range for {vr} ({low} to {high})")
    return number


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
    text = date_text(value)  # ACR-NEMA YYYY.MM.DD read too
    if text is None or not is_calendar_date(text):
        raise InvalidQuery(f"{keyword}: not a DA value (YYYYMMDD)")
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


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as SQL LIKE with ``\\`` as the escape character.

    LIKE's own ``%``, ``_`` and ``\\`` in the value are escaped, so they match
    only themselves (PS3.4: they are not DICOM wildcards). A run of ``*`` is one
    ``%``. Both databases match LIKE without exponential backtracking (SQLite
    gives up a ``%`` that found no match, PostgreSQL's like_match.c aborts the
    same way), so a hostile pattern costs at most pattern x value steps.
    """
    escaped = like_literal(_STARS.sub("*", pattern))
    return escaped.replace("*", "%").replace("?", "_")


def like_literal(value: str) -> str:
    """``value`` as a LIKE pattern (escape ``\\``) that matches only itself."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------------ DT

_DT_SINGLE = re.compile(f"({DT_PATTERN})")
_DT_RANGE = re.compile(f"({DT_PATTERN})?-({DT_PATTERN})?")


def datetime_match(value: str, *, keyword: str, local: tzinfo | None = None) -> Range:
    """A DT single value or range (PS3.4 C.2.2.2.5) as a Range of UTC texts.

    The ``-`` of a UTC offset is not the range separator: a value that reads as
    one DT with an offset is one (``20260105-0500`` is 5 January at UTC-5, not a
    range up to the year 500). A value without an offset is in ``local`` time
    (default: the node's time zone, as PS3.4 C.2.2.2.5 leaves it to the SCP
    unless the query carries Timezone Offset From UTC). A single value matches
    everything within its precision, like TM.
    """
    text = value.strip(" \x00")
    # ``2026-2027`` reads as a year with offset -2027 too: an impossible offset
    # means it is a range after all
    if _DT_SINGLE.fullmatch(text) and normalize_dt(text, local=local) is not None:
        low_text = high_text = text
    else:
        ranged = _DT_RANGE.fullmatch(text)
        if ranged is None or not (ranged.group(1) or ranged.group(2)):
            raise InvalidQuery(f"{keyword}: not a DT value or range")
        low_text, high_text = ranged.group(1), ranged.group(2)
    low = normalize_dt(low_text, upper=False, local=local) if low_text else None
    high = normalize_dt(high_text, upper=True, local=local) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        raise InvalidQuery(f"{keyword}: not a DT value (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    if low is not None and high is not None and low > high:
        raise InvalidQuery(f"{keyword}: date-time range ends before it starts")
    return Range(low, high)


# ---------------------------------------------------------------- sequences


@dataclass(frozen=True, slots=True)
class SequenceMatch:
    """A sequence key (PS3.4 C.2.2.2.6): its one item's keys, parsed.

    ``items`` is keyword -> Match for every key of the query's item; an empty
    mapping (empty item or zero-length sequence) is universal matching. An
    entity matches when ONE stored item matches all the item's keys.
    """

    items: Mapping[str, Match]

    @property
    def is_universal(self) -> bool:
        return all(isinstance(m, Universal) for m in self.items.values())


def value_matches(match: Match, value: str | None) -> bool:
    """The same rules as the SQL compiler, on one stored text value (used for
    sequence items, whose values are checked after the SQL prefilter)."""
    if isinstance(match, Universal):
        return True
    if value is None:
        return False
    if isinstance(match, Single):
        return value == match.value
    if isinstance(match, Wildcard):
        return wildcard_matches(match.pattern, value)
    if isinstance(match, UidList):
        return value in match.values
    if isinstance(match, AnyOf):
        return any(value_matches(part, value) for part in match.matches)
    if isinstance(match, Range):
        return (match.low is None or value >= match.low) and (
            match.high is None or value <= match.high
        )
    raise AssertionError(match)


def wildcard_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the DICOM wildcard ``pattern`` as a whole
    (PS3.4 C.2.2.2.4: ``*`` any run of characters, ``?`` exactly one; every other
    character only itself, case-sensitively).

    Greedy two-pointer matching: on a mismatch only the LAST ``*`` seen is
    stretched by one character, never an earlier one. That is enough, because
    whatever an earlier ``*`` could absorb the later one can too; so the work is
    at most len(pattern) x len(value) steps, with no recursion, whatever the
    pattern (a regular expression of ``.*`` runs backtracks exponentially on
    ``**...*Z`` against a value without Z).
    """
    p = v = 0
    star = -1  # index of the last * in the pattern, -1 before the first
    resume = 0  # where in the value that * stopped absorbing
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == value[v]):
            p += 1
            v += 1
        elif star >= 0:
            resume += 1  # the last * takes one more character; retry after it
            p, v = star + 1, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])
