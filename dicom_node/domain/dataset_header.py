"""Reading the indexed attributes of one instance (docs/domain.md#what-is-indexed-per-instance
"What to index").

On the C-STORE hot path: only the needed tags are parsed, pixel data is never
read, and text is decoded with the dataset's SpecificCharacterSet. The lean walk
(domain/header_walk.py) reads the common files in one pass over their bytes;
pydicom reads the rest, as it read every file before (``read_header_with_pydicom``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from dicom_node.domain.errors import DomainError
from dicom_node.domain.header_walk import Field, Undecided, transfer_syntax, walk
from dicom_node.domain.inflate import (
    DEFAULT_MAX_DATASET_BYTES,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    DatasetTooLarge,
    InvalidDeflate,
    inflated,
)
from dicom_node.domain.part10 import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    dataset_is_complete,
    dataset_offset,
)
from dicom_node.domain.part10_source import Buffer, Part10Source, open_part10
from dicom_node.domain.vr import INTEGER_RANGES, MAX_LENGTH, date_text, is_valid_uid


class InvalidHeader(DomainError):
    """The dataset cannot be indexed. ``reason`` names attributes, never patient data.

    ``mismatch`` marks a dataset that is readable but contradicts its SOP class or
    its file meta (PS3.4 status A900), as opposed to unreadable data (C000).
    """

    def __init__(self, reason: str, *, mismatch: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mismatch = mismatch


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """One item of RequestAttributesSequence (0040,0275)."""

    accession_number: str | None
    accession_issuer: str
    requested_procedure_id: str | None
    scheduled_procedure_step_id: str | None
    study_instance_uid: str | None


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    accession_issuer: str
    modality: str | None
    body_part_examined: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    study_id: str | None
    referring_physician_name: str | None
    series_number: int | None
    series_description: str | None
    series_date: str | None
    series_time: str | None
    station_name: str | None
    instance_number: int | None
    request_attributes: tuple[RequestAttributes, ...]
    # PN, VM 1-n: the values backslash-separated, as ReferringPhysicianName's
    name_of_physicians_reading_study: str | None = None
    performing_physician_name: str | None = None


_KEYWORDS = (
    "SpecificCharacterSet",  # must be read, or names decode as ASCII
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "Modality", "BodyPartExamined",
    "StudyDate", "StudyTime", "StudyDescription", "StudyID", "ReferringPhysicianName",
    "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime", "StationName",
    "InstanceNumber", "RequestAttributesSequence",
    "NameOfPhysiciansReadingStudy", "PerformingPhysicianName",
)  # fmt: skip
_TAGS = [Tag(keyword) for keyword in _KEYWORDS]
_REQUEST_KEYWORDS = (
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "RequestedProcedureID",
    "ScheduledProcedureStepID", "StudyInstanceUID",
)  # fmt: skip
_ISSUER_KEYWORDS = ("LocalNamespaceEntityID", "UniversalEntityID")


def _fields(keywords: tuple[str, ...]) -> dict[int, Field]:
    """What the lean walk reads: these elements, and in the items of the two
    sequences the elements ``_request_items`` and ``_issuer`` read."""
    nested = {
        "RequestAttributesSequence": _REQUEST_KEYWORDS,
        "IssuerOfAccessionNumberSequence": _ISSUER_KEYWORDS,
    }
    return {
        int(Tag(keyword)): Field(
            keyword,
            dictionary_VR(Tag(keyword)),
            _fields(nested[keyword]) if keyword in nested else None,
        )
        for keyword in keywords
    }


_WANTED = _fields(_KEYWORDS)
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def read_header(
    part10: bytes | BinaryIO | str | os.PathLike[str] | Part10Source,
    *,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    scratch_dir: Path | None = None,
) -> InstanceHeader:
    """Read a complete Part 10 file (preamble, DICM, file meta, dataset).

    A file is memory-mapped, not read whole (domain/part10_source.py). A data set
    over ``max_dataset_bytes``, as stored or once a Deflated one is inflated,
    raises DatasetTooLarge before it is parsed; inflation is bounded and spills to
    ``scratch_dir`` past a few MiB (domain/inflate.py).
    """
    return _read_header(
        part10, max_dataset_bytes=max_dataset_bytes, scratch_dir=scratch_dir, lean=True
    )


def read_header_with_pydicom(
    part10: bytes | BinaryIO | str | os.PathLike[str] | Part10Source,
    *,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    scratch_dir: Path | None = None,
) -> InstanceHeader:
    """``read_header`` without the lean walk: pydicom reads every file, as before
    the walk existed. The reference tests/unit/test_header_walk.py compares with."""
    return _read_header(
        part10, max_dataset_bytes=max_dataset_bytes, scratch_dir=scratch_dir, lean=False
    )


def lean_header(data: Buffer, offset: int) -> InstanceHeader | None:
    """The header from the lean walk over the data set at ``offset``, or None
    where pydicom must read the file (header_walk.Undecided)."""
    try:
        syntax = transfer_syntax(data, offset)
        if syntax == _DEFLATED:
            return None
        values = walk(data, offset, syntax, _WANTED)
    except Undecided:
        return None
    except Exception:
        # a case the walk did not foresee: pydicom decides, as it did before the
        # walk, rather than a good instance being refused (the comparison test
        # fails on it: it requires the walk to read the corpus itself)
        return None
    return header_from_dataset(values, transfer_syntax_uid=syntax)


def _read_header(
    part10: bytes | BinaryIO | str | os.PathLike[str] | Part10Source,
    *,
    max_dataset_bytes: int,
    scratch_dir: Path | None,
    lean: bool,
) -> InstanceHeader:
    if isinstance(part10, str | os.PathLike):
        part10 = Path(part10)
    elif not isinstance(part10, bytes | Part10Source):
        part10 = bytes(part10) if isinstance(part10, bytearray) else part10.read()
    with open_part10(part10) as source:
        try:
            offset = dataset_offset(source.buffer)
            if source.size - offset > max_dataset_bytes:
                raise DatasetTooLarge(max_dataset_bytes, source.size - offset)
            if lean and (header := lean_header(source.buffer, offset)) is not None:
                return header
            if _DEFLATED.encode() in source.buffer[:offset]:
                # maybe Deflated: the file meta alone first, as pydicom would inflate
                # the data set whole (without the UID's bytes it cannot be: the
                # common case goes straight to reading the data set)
                meta = pydicom.dcmread(BytesIO(source.buffer[:offset])).file_meta
                transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
            else:
                transfer_syntax = ""
            if transfer_syntax == _DEFLATED:
                with inflated(
                    lambda: source.chunks(offset), limit=max_dataset_bytes, scratch_dir=scratch_dir
                ) as plain:
                    ds = _read_inflated(plain)
                    check_structure(plain, 0, EXPLICIT_VR_LITTLE_ENDIAN)
            else:
                with source.stream() as stream:
                    ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=_TAGS)
                transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
                check_structure(source.buffer, offset, transfer_syntax)
            return header_from_dataset(ds, transfer_syntax_uid=transfer_syntax)
        except (InvalidHeader, DatasetTooLarge):
            raise
        except InvalidDeflate as exc:
            raise InvalidHeader(exc.reason) from None
        except Exception as exc:
            # pydicom signals malformed input with many exception types (InvalidDicomError,
            # EOFError, struct.error, ValueError, KeyError...): all mean "cannot understand".
            raise InvalidHeader(f"unreadable dataset ({type(exc).__name__})") from None


_PIXEL_DATA = {0x7FE00008, 0x7FE00009, 0x7FE00010}


def _read_inflated(plain: Buffer) -> Dataset:
    """The indexed elements of an inflated Deflated data set: Explicit VR Little
    Endian from its first byte (PS3.5 A.5)."""
    stream = BytesIO(plain) if isinstance(plain, bytes) else plain
    stream.seek(0)
    return read_dataset(
        stream,  # type: ignore[arg-type]  # an mmap reads and seeks as a file does
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=lambda tag, vr, length: tag in _PIXEL_DATA,
        specific_tags=list(_TAGS),
    )


_DEFLATED = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN


def check_structure(data: Buffer, offset: int, transfer_syntax: str) -> None:
    """Refuse a data set cut short (domain/part10.py walks its element headers):
    pydicom alone does not notice, it skips unrequested values by seeking and
    stops quietly at the end of the data."""
    if not dataset_is_complete(data, offset, transfer_syntax):
        raise InvalidHeader("dataset is truncated")


# The index keeps each value within its VR's maximum length (PS3.5 6.2), the width
# of its column. Senders exceed them (long accession numbers, multi-valued CS):
# the index then holds the first characters and the file keeps the whole value.
_SH, _LO, _CS, _PN, _TM, _UI = (MAX_LENGTH[vr] for vr in ("SH", "LO", "CS", "PN", "TM", "UI"))


# A pydicom Dataset, or the lean walk's values: keyword -> what Dataset.get gives
# (header_walk.walk), sequence items as such mappings too
_Elements = Dataset | Mapping[str, Any]


def header_from_dataset(ds: _Elements, *, transfer_syntax_uid: str) -> InstanceHeader:
    if not is_valid_uid(transfer_syntax_uid.rstrip("\x00 ")):
        raise InvalidHeader("file meta TransferSyntaxUID is missing or invalid")
    uids = {keyword: _uid(ds, keyword) for keyword in _REQUIRED_UIDS}
    accession_issuer = _issuer(ds)
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        transfer_syntax_uid=transfer_syntax_uid.rstrip("\x00 "),
        patient_id=_text(ds, "PatientID", _LO) or "",
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID", _LO) or "",
        patient_name=_text(ds, "PatientName", _PN),
        patient_birth_date=_date(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex", _CS),
        accession_number=_text(ds, "AccessionNumber", _SH),
        accession_issuer=accession_issuer,
        modality=_text(ds, "Modality", _CS),
        body_part_examined=_text(ds, "BodyPartExamined", _CS),
        study_date=_date(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime", _TM),
        study_description=_text(ds, "StudyDescription", _LO),
        study_id=_text(ds, "StudyID", _SH),
        referring_physician_name=_text(ds, "ReferringPhysicianName", _PN),
        series_number=_integer(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", _LO),
        series_date=_date(ds, "SeriesDate"),
        series_time=_text(ds, "SeriesTime", _TM),
        station_name=_text(ds, "StationName", _SH),
        instance_number=_integer(ds, "InstanceNumber"),
        request_attributes=tuple(_request_items(ds)),
        name_of_physicians_reading_study=_text(ds, "NameOfPhysiciansReadingStudy", _PN),
        performing_physician_name=_text(ds, "PerformingPhysicianName", _PN),
    )


def _uid(ds: _Elements, keyword: str) -> str:
    value = ds.get(keyword)
    text = str(value or "").rstrip("\x00 ")
    if not text:
        raise InvalidHeader(f"{keyword} is missing", mismatch=True)
    if not is_valid_uid(text):
        raise InvalidHeader(f"{keyword} is not a valid UID", mismatch=True)
    return text


def _text(ds: _Elements, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    # A multi-valued element where one value is expected: keep all, DICOM-style
    # (the lean walk gives a list where pydicom gives a MultiValue).
    multi = isinstance(value, MultiValue | list)
    text = "\\".join(str(v) for v in value) if multi else str(value)
    text = text.strip(" \x00")[:limit].rstrip(" ")
    return text or None


def _date(ds: _Elements, keyword: str) -> str | None:
    """DA as YYYYMMDD; the old ACR-NEMA form YYYY.MM.DD is read too; anything
    else is not indexed (the file keeps it)."""
    return date_text(_text(ds, keyword, len("YYYY.MM.DD")) or "")


# IS (PS3.5 6.2) holds -2^31 to 2^31-1, the range of the index's integer columns
# (32-bit INTEGER on PostgreSQL); SQLite's driver refuses beyond 64 bits.
_IS_MIN, _IS_MAX = INTEGER_RANGES["IS"]


def _integer(ds: _Elements, keyword: str) -> int | None:
    """An IS value for the index; None (unknown) when it is not one.

    A malformed IS ("1.5", "abc") or one beyond IS's range (a 20-digit
    SeriesNumber) must not cost the instance: the file keeps the value as sent,
    the index column is left NULL, and the C-STORE succeeds. Before, the value
    reached the INSERT and failed the store (0xC211) with a traceback."""
    try:
        value = ds.get(keyword)
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    if number is None or not _IS_MIN <= number <= _IS_MAX:
        return None
    return number


def _issuer(item: _Elements) -> str:
    issuers = item.get("IssuerOfAccessionNumberSequence")
    if not issuers:
        return ""
    first = issuers[0]
    return (
        _text(first, "LocalNamespaceEntityID", _LO) or _text(first, "UniversalEntityID", _LO) or ""
    )


def _request_items(ds: _Elements) -> list[RequestAttributes]:
    items = ds.get("RequestAttributesSequence") or []
    return [
        RequestAttributes(
            accession_number=_text(item, "AccessionNumber", _SH),
            accession_issuer=_issuer(item),
            requested_procedure_id=_text(item, "RequestedProcedureID", _SH),
            scheduled_procedure_step_id=_text(item, "ScheduledProcedureStepID", _SH),
            study_instance_uid=_text(item, "StudyInstanceUID", _UI),
        )
        for item in items
    ]
