"""DICOM value rules (PS3.5 6.2): what a value of each VR may be, in one place.

The header reader (domain/dataset_header.py), the query parser
(domain/query.py), the services that take values from people (orders, study
corrections, facilities), the index's column widths (db/models.py) and the
answers the node builds all use these rules; none keeps a copy.

- lengths: ``MAX_LENGTH`` per VR, in characters; the index's columns are as wide;
- text (SH, LO): ``short_string``, ``long_string``: within the length, no
  backslash (the value delimiter, PS3.5 6.4) and no control characters;
  CS: ``is_code_string``;
- PN (PS3.5 6.2.1): ``person_name``, what a PN value may be, and its
  delimiters. How PN values compare (case folding, component groups,
  wildcards) is another question with its own module, domain/names.py, the PN
  matching rule that C-FIND, the Modality Worklist, search and the index's
  folded copies share: it is about what matches what, not what may be stored;
- DA, TM, DT: ``date_text`` (DA's shape, as the index reads a header),
  ``is_calendar_date``, ``dicom_date`` (a date a person gives),
  ``normalize_tm`` and ``normalize_dt`` (comparable forms, for range matching);
- UI: ``is_valid_uid``, ``validate_uid`` (making a new UID: domain/uids.py);
- AE: ``validate_ae_title`` (peers, AE@host:port: domain/aetitle.py);
- IS and the binary integer VRs: ``INTEGER_RANGES``;
- the defined terms the node checks: ``MODALITY_CODES`` (``modality_code``) and
  ``PATIENT_SEXES``.

The HTTP API states the same rules once more as JSON Schema (api/schemas/:
lengths from ``MAX_LENGTH``, patterns), so that they are in the OpenAPI
document; the services check them here for every caller.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

from dicom_node.domain.errors import InvalidValue

# ------------------------------------------------------------------- lengths

# PS3.5 table 6.2-1, in characters (the default repertoire's bytes). Two are the
# node's own: PN, as five components of 64 characters each with their four
# "^" (PS3.5 gives 64 per component group; the node never cuts a name a sender
# may write component by component); TM, 16 as before the 2008 edition (14 now),
# so that the older HH:MM:SS.FFFFFF form is still read whole.
MAX_LENGTH = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "PN": 5 * 64 + 4,
    "SH": 16,
    "ST": 1024,
    "TM": 16,
    "UI": 64,
}

# PS3.5 6.2: the values the integer VRs hold. The index's integer columns
# (SeriesNumber, InstanceNumber) are 32-bit, IS's own range.
INTEGER_RANGES = {
    "IS": (-(2**31), 2**31 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "US": (0, 2**16 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UL": (0, 2**32 - 1),
    "SV": (-(2**63), 2**63 - 1),
    "UV": (0, 2**64 - 1),
}

# ---------------------------------------------------------------------- text

VALUE_DELIMITER = "\\"  # PS3.5 6.4: between the values of a multi-valued element
# control characters and the value delimiter: in no single string value
_NOT_IN_TEXT = re.compile(r"[\x00-\x1f\x7f\\]")
_CODE_STRING = re.compile(r"[A-Z0-9 _]*")  # PS3.5 6.2: CS


def short_string(value: str | None, *, field: str, required: bool = False) -> str | None:
    """A DICOM SH value (16 characters), stripped; None when empty."""
    return _text(value, "SH", field=field, required=required)


def long_string(value: str | None, *, field: str, required: bool = False) -> str | None:
    """A DICOM LO value (64 characters), stripped; None when empty."""
    return _text(value, "LO", field=field, required=required)


def _text(value: str | None, vr: str, *, field: str, required: bool) -> str | None:
    text_value = (value or "").strip()
    if not text_value:
        if required:
            raise InvalidValue(f"{field} must not be empty", field=field)
        return None
    limit = MAX_LENGTH[vr]
    if len(text_value) > limit or _NOT_IN_TEXT.search(text_value):
        raise InvalidValue(
            f"{field} must be at most {limit} characters (DICOM {vr}) without backslash "
            "or control characters",
            field=field,
        )
    return text_value


def is_code_string(value: str) -> bool:
    """Upper case letters, digits, space and underscore (CS), at most 16."""
    return len(value) <= MAX_LENGTH["CS"] and _CODE_STRING.fullmatch(value) is not None


# ------------------------------------------------------------------------ PN

PN_GROUP_DELIMITER = "="  # PS3.5 6.2.1: alphabetic=ideographic=phonetic
PN_COMPONENT_DELIMITER = "^"  # family^given^middle^prefix^suffix
_PN_GROUPS, _PN_COMPONENTS, _PN_COMPONENT_LENGTH = 3, 5, 64


def person_name(value: str | None, *, field: str, required: bool = False) -> str | None:
    """A DICOM PN value (PS3.5 6.2.1), stripped, None when empty: at most three
    component groups separated by ``=``, each of at most five ``^``-separated
    components of at most 64 characters. ``required``: not empty, and its
    alphabetic group (the first) names someone."""
    text_value = (value or "").strip()
    if not text_value:
        if required:
            raise InvalidValue(f"{field} must not be empty", field=field)
        return None
    groups = text_value.split(PN_GROUP_DELIMITER)
    if (
        len(groups) > _PN_GROUPS
        or _NOT_IN_TEXT.search(text_value)
        or any(
            len(components) > _PN_COMPONENTS
            or any(len(part) > _PN_COMPONENT_LENGTH for part in components)
            for components in (group.split(PN_COMPONENT_DELIMITER) for group in groups)
        )
    ):
        raise InvalidValue(
            f"{field} is not a DICOM person name (Family^Given^Middle^Prefix^Suffix)",
            field=field,
        )
    if required and not groups[0].strip(PN_COMPONENT_DELIMITER + " "):
        raise InvalidValue(f"{field} needs its alphabetic form (before any '=')", field=field)
    return text_value


# ---------------------------------------------------------------- DA, TM, DT


def date_text(value: str) -> str | None:
    """A DA value as ``YYYYMMDD`` when it has DA's shape, else None. The old
    ACR-NEMA form ``YYYY.MM.DD`` is read too (PS3.5 6.2 note: old workstations
    still send it). Not checked against the calendar (``is_calendar_date``)."""
    text = value.replace(".", "")
    return text if len(text) == 8 and text.isdigit() else None


def is_calendar_date(text: str) -> bool:
    """``YYYYMMDD`` naming a day that exists (no 31 February, no year 0)."""
    if len(text) != 8 or not text.isdigit():
        return False
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def dicom_date(value: str | None, *, field: str) -> str | None:
    """A DA value a person gives: ``YYYYMMDD``, a real calendar date; None when empty."""
    text_value = (value or "").strip()
    if not text_value:
        return None
    if not is_calendar_date(text_value):
        raise InvalidValue(f"{field} must be a date YYYYMMDD", field=field)
    return text_value


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


# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]] then an optional UTC offset &HHMM (PS3.5 6.2)
DT_PATTERN = r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?"
_DT = re.compile(DT_PATTERN)


def normalize_dt(
    value: str | None, *, upper: bool = False, local: tzinfo | None = None
) -> str | None:
    """DT as ``YYYYMMDDHHMMSS.FFFFFF`` in UTC, comparable as text; None if not DT.

    Missing trailing parts are the earliest instant of the precision given, or
    the latest one for the upper end (``2026`` ends at 20261231235959.999999).
    The offset (``+0100``) is applied; without one, ``local`` time is assumed
    (default: the node's time zone).
    """
    text = (value or "").strip(" \x00")
    if not _DT.fullmatch(text):
        return None
    offset: tzinfo | None = None
    if len(text) >= 9 and text[-5] in "+-" and text[-4:].isdigit():
        sign = -1 if text[-5] == "-" else 1
        hours, minutes = int(text[-4:-2]), int(text[-2:])
        if hours > 14 or minutes > 59:  # PS3.5: -1200 to +1400
            return None
        offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
        text = text[:-5]
    whole, _, fraction = text.partition(".")
    if fraction and len(whole) != 14:
        return None  # a fraction only after whole seconds
    try:
        year = int(whole[0:4])
        month = int(whole[4:6]) if len(whole) >= 6 else (12 if upper else 1)
        last_day = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 0
        day = int(whole[6:8]) if len(whole) >= 8 else (last_day if upper else 1)
        hour = int(whole[8:10]) if len(whole) >= 10 else (23 if upper else 0)
        minute = int(whole[10:12]) if len(whole) >= 12 else (59 if upper else 0)
        second = int(whole[12:14]) if len(whole) >= 14 else (59 if upper else 0)
        micro = int((fraction + ("9" if upper else "0") * 6)[:6])
        # a leap second (60) is kept at 59.999999: still after every other instant
        if second == 60:
            second, micro = 59, 999999
        instant = datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None
    zone = offset or local
    # naive astimezone(): the instant read in the node's own time zone
    aware = instant.replace(tzinfo=zone) if zone else instant.astimezone()
    return aware.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f")


# ------------------------------------------------------------------------ UI

# Components are digits without leading zeros (a lone "0" is fine), joined by dots.
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """A UID (PS3.5 9.1) as it is, without padding: at most 64 characters."""
    return len(value) <= MAX_LENGTH["UI"] and _UID_PATTERN.fullmatch(value) is not None


def validate_uid(value: str, *, name: str = "UID") -> str:
    """Return the UID with DICOM's trailing NUL/space padding removed, or raise.

    Only a validated UID may ever become part of a file path.
    """
    stripped = value.rstrip("\x00 ")
    if not is_valid_uid(stripped):
        raise InvalidValue(f"{name} is not a valid DICOM UID")
    return stripped


# ------------------------------------------------------------------------ AE


def validate_ae_title(value: str) -> str:
    """Return the AE title without padding, or raise InvalidValue.

    PS3.5 table 6.2-1: at most 16 characters of the default repertoire, no
    backslash, no control characters; leading/trailing spaces are not significant,
    and an all-space value is not allowed.
    """
    stripped = value.strip(" ")
    limit = MAX_LENGTH["AE"]
    if not stripped:
        raise InvalidValue("an AE title must not be empty")
    if len(stripped) > limit:
        raise InvalidValue(f"AE title {stripped!r} is longer than {limit} characters")
    for char in stripped:
        if char == "\\" or not (0x20 <= ord(char) < 0x7F):
            raise InvalidValue(f"AE title {stripped!r} contains a character not allowed: {char!r}")
    return stripped


# ------------------------------------------------------- defined terms (CS)

# PS3.3 C.7.3.1.1.1 Modality defined terms (current, not retired)
MODALITY_CODES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DMS", "DG",
    "DOC", "DX", "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL",
    "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP",
    "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PLAN", "POS", "PR", "PT", "PX",
    "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD",
    "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG",
    "US", "VA", "XA", "XAPROTOCOL", "XC",
})  # fmt: skip
# PS3.3 C.7.1.1: PatientSex enumerated values
PATIENT_SEXES = ("M", "F", "O")


def modality_code(value: str, *, field: str) -> str:
    """A Modality defined term, upper-cased; InvalidValue for anything else."""
    code = value.strip().upper()
    if code not in MODALITY_CODES:
        raise InvalidValue(f"{value!r} is not a DICOM modality code (e.g. CT, MR, US)", field=field)
    return code


def check_text(field: str, value: str | None, *, allow_newlines: bool = False) -> None:
    """No control characters (a NUL cannot even be stored on PostgreSQL) and no
    lone surrogates (not encodable as UTF-8; JSON can carry them)."""
    allowed = "\t\n\r" if allow_newlines else ""
    if value and any(
        unicodedata.category(char) in ("Cc", "Cs") and char not in allowed for char in value
    ):
        raise InvalidValue(f"{field}: control characters are not allowed", field=field)
