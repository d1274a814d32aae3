"""The DICOM value rules of an order's fields, checked where an order is
created or edited over HTTP (and a modality's type): a modality code among
PS3.3's defined terms, LO, PN (PS3.5 6.2.1) and DA values. Pure: each returns
the value to store or raises InvalidValue naming the field."""

from __future__ import annotations

import re
from datetime import date

from dicom_node.domain.errors import InvalidValue

# PS3.3 C.7.3.1.1.1 Modality defined terms (current, not retired)
MODALITY_CODES = frozenset(
    (
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CFM",
        "CR",
        "CT",
        "CTPROTOCOL",
        "DMS",
        "DG",
        "DOC",
        "DX",
        "ECG",
        "EEG",
        "EMG",
        "EOG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PLAN",
        "POS",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTINTENT",
        "RTPLAN",
        "RTRAD",
        "RTRECORD",
        "RTSEGANN",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XAPROTOCOL",
        "XC",
    )
)
PATIENT_SEXES = ("M", "F", "O")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def modality_code(value: str, *, field: str) -> str:
    code = value.strip().upper()
    if code not in MODALITY_CODES:
        raise InvalidValue(f"{value!r} is not a DICOM modality code (e.g. CT, MR, US)", field=field)
    return code


def long_string(value: str | None, *, field: str, required: bool = False) -> str | None:
    """A DICOM LO value: at most 64 characters, no backslash or control characters."""
    text_value = (value or "").strip()
    if not text_value:
        if required:
            raise InvalidValue(f"{field} must not be empty", field=field)
        return None
    if len(text_value) > 64 or _CONTROL.search(text_value):
        raise InvalidValue(
            f"{field} must be at most 64 characters without backslash or control characters",
            field=field,
        )
    return text_value


def person_name(value: str | None, *, field: str, required: bool = False) -> str | None:
    """A DICOM PN value (PS3.5 6.2.1): at most three component groups separated by
    ``=``, each of at most five ``^``-separated components of at most 64 characters."""
    text_value = (value or "").strip()
    if not text_value:
        if required:
            raise InvalidValue(f"{field} must not be empty", field=field)
        return None
    groups = text_value.split("=")
    if (
        len(groups) > 3
        or _CONTROL.search(text_value)
        or any(
            len(group.split("^")) > 5 or any(len(part) > 64 for part in group.split("^"))
            for group in groups
        )
    ):
        raise InvalidValue(
            f"{field} is not a DICOM person name (Family^Given^Middle^Prefix^Suffix)",
            field=field,
        )
    if required and not groups[0].strip("^ "):
        raise InvalidValue(f"{field} needs its alphabetic form (before any '=')", field=field)
    return text_value


def dicom_date(value: str | None, *, field: str) -> str | None:
    """A DICOM DA value YYYYMMDD that is a real calendar date."""
    text_value = (value or "").strip()
    if not text_value:
        return None
    try:
        if len(text_value) != 8 or not text_value.isdigit():
            raise ValueError
        date(int(text_value[:4]), int(text_value[4:6]), int(text_value[6:]))
    except ValueError:
        raise InvalidValue(f"{field} must be a date YYYYMMDD", field=field) from None
    return text_value
