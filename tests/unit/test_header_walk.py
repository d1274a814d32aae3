"""The lean header read (domain/header_walk.py) gives what pydicom gave: the same
InstanceHeader, or the same refusal (type, reason, mismatch), on every file of
pydicom's test and charset sets and on hostile and edge data sets; and it is the
walk that reads the common files, not the pydicom fallback."""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom.filereader
import pytest
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from dicom_node.domain.dataset_header import (
    InvalidHeader,
    lean_header,
    read_header,
    read_header_with_pydicom,
)
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.domain.part10 import LONG_VRS, dataset_offset
from tests.dicomfiles import ct_dataset, to_bytes
from tests.large_datasets import MIB, deflated_part10, sized_instance

LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _outcome(read: Callable[..., Any], part10: bytes | Path, **limits: Any) -> object:
    """What a header read gives: the header, or its refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd files
        try:
            return read(part10, **limits)
        except InvalidHeader as exc:
            return ("InvalidHeader", exc.reason, exc.mismatch)
        except DatasetTooLarge as exc:
            return ("DatasetTooLarge", exc.limit, exc.size)
        except Exception as exc:  # read_header may raise nothing else: fail on it
            return ("unexpected", type(exc).__name__)


def _same(part10: bytes | Path, **limits: Any) -> object:
    lean = _outcome(read_header, part10, **limits)
    assert lean == _outcome(read_header_with_pydicom, part10, **limits)
    assert not (isinstance(lean, tuple) and lean[0] == "unexpected"), lean
    return lean


def _decided(data: bytes) -> bool:
    """Whether the walk read the data set itself (a refusal by the index rules
    counts: the walk read the values it refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return lean_header(data, dataset_offset(data)) is not None
        except InvalidHeader:
            return True


def _lean(data: bytes) -> object:
    """Same outcome as pydicom's, and read by the walk."""
    outcome = _same(data)
    assert _decided(data)
    return outcome


# ----------------------------------------------------------- pydicom's test sets

_CORPUS = sorted(
    Path(path) for path in {*get_testdata_files(), *get_charset_files()} if os.path.isfile(path)
)


def test_the_corpus_is_there() -> None:
    # pydicom's own test files and charset files, and pydicom-data's it finds
    assert len(_CORPUS) > 200


@pytest.mark.parametrize("path", _CORPUS, ids=[path.name for path in _CORPUS])
def test_every_file_of_pydicoms_test_sets_reads_the_same(path: Path) -> None:
    _same(path)  # over a memory map, as ingest reads a file
    _same(path.read_bytes())


# the corpus files pydicom must read although they are neither big endian, nor
# Deflated, nor refused as cut or unreadable, and why
_FALLBACKS = {
    "UN_sequence.dcm": "a sequence sent as UN of undefined length",
    "meta_missing_tsyntax.dcm": "a file meta without TransferSyntaxUID",
}


def test_the_walk_reads_the_corpus_itself_but_big_endian_deflated_and_damaged_files() -> None:
    """pydicom reads only what the walk cannot decide: every other file of the
    corpus is read by the walk (so it cannot quietly fall back on everything)."""
    decided, unexpected = 0, []
    for path in _CORPUS:
        data = path.read_bytes()
        try:
            meta = data[: dataset_offset(data)]
        except InvalidValue:
            continue  # not Part 10: refused before either read
        if _decided(data):
            decided += 1
            continue
        other_syntax = any(
            uid.encode() in meta for uid in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
        )
        before = _outcome(read_header_with_pydicom, data)
        damaged = isinstance(before, tuple) and (
            before[1] == "dataset is truncated" or before[1].startswith("unreadable")
        )
        if not (other_syntax or damaged or path.name in _FALLBACKS):
            unexpected.append(path.name)
    assert unexpected == []
    assert decided > 200


def test_a_long_vr_has_the_same_length_field_for_the_walk_and_pydicom() -> None:
    lengths_32 = {vr.encode() for vr in pydicom.filereader.EXPLICIT_VR_LENGTH_32}
    assert lengths_32 == set(LONG_VRS)


# ------------------------------------------------------------------ edge values


def _ct(**changes: Any) -> Dataset:
    ds = ct_dataset(study_uid=generate_uid(), accession="ACC1", request_accessions=("R1",))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _implicit(ds: Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "text",
    ["1", "-5", "+5", " 7", "0007", "2147483647", "2147483648", "-2147483649", "1.0", "1.5",
     "abc", "1e3", "99999999999999999999", "1\\2", "", "  "],
)  # fmt: skip
@pytest.mark.parametrize("encode", [to_bytes, _implicit], ids=["explicit", "implicit"])
def test_integer_strings_as_pydicom_reads_them(text: str, encode: Callable[..., bytes]) -> None:
    ds = _ct()
    ds.add_new("SeriesNumber", "IS", None)
    ds["SeriesNumber"]._value = text  # as sent, unchecked
    _same(encode(ds))


@pytest.mark.parametrize(
    "name",
    ["Doe^Jane", "Doe^Jane==", "==", "=Yamada", "Doe^Jane=\\Roe^Rich", "A^B=C^D=E^F=G",
     "Doe^Jane\\", " Doe^Jane  ", "x" * 400, "Doe^Jane\\Roe^Rich\\Poe^Ed"],
)  # fmt: skip
def test_person_names_as_pydicom_reads_them(name: str) -> None:
    ds = _ct()
    ds.PatientName = name
    ds.ReferringPhysicianName = name
    ds.PerformingPhysicianName = name
    assert isinstance(_lean(to_bytes(ds)), object)
    _lean(_implicit(ds))


@pytest.mark.parametrize(
    ("charset", "value"),
    [
        (None, "Caf\xe9"),
        ("ISO_IR 100", "M\xfcller^J\xfcrgen"),
        ("ISO_IR 192", "\u5c71\u7530^\u592a\u90ce=\u3084\u307e\u3060"),
        (["ISO 2022 IR 6", "ISO 2022 IR 87"], "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"),
        ("GB18030", "Wang^XiaoDong=\u738b^\u5c0f\u6771="),
        ("ISO_IR 144", "\u041b\u044e\u043a\u0441\u0435\u043c\u0431\u0443\u0440\u0433"),
        ("ISO_IR 6", "plain"),
        ("NOT A CHARSET", "plain"),
    ],
)
def test_text_in_each_character_set_as_pydicom_reads_it(
    charset: str | list[str] | None, value: str
) -> None:
    ds = _ct(StudyDescription=value.replace("=", " ").replace("^", " "))
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = to_bytes(ds)
    _lean(data)


def test_bytes_invalid_in_the_character_set_read_as_pydicom_reads_them() -> None:
    ds = _ct(SpecificCharacterSet="ISO_IR 192")
    ds.add_new("PatientName", "PN", b"Bad\xff\xfe^Name")
    ds.add_new("StudyDescription", "LO", b"\xc3(\\ok")
    ds.add_new("PatientID", "LO", b"ID\x1b$B")  # an escape where none may be
    _lean(to_bytes(ds))


def test_values_cut_to_their_vr_length_multi_values_and_dates_as_before() -> None:
    ds = _ct(
        StationName="STATION-NAME-FAR-TOO-LONG",
        StudyDescription="D" * 100,
        PatientBirthDate="1970-01-01",
        StudyDate="2026.01.05",
        SeriesDate="20260105\\20260106",
        BodyPartExamined=["CHEST", "ABDOMEN", "PELVIS"],
        Modality="CT\\PT",
        AccessionNumber="A" * 30,
        StudyID=" 12 ",
        PatientID="ID  \\ X ",
        SeriesTime="101010.123456789",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.2\0",
    )
    assert not isinstance(_lean(to_bytes(ds)), tuple)
    _lean(_implicit(ds))


@pytest.mark.parametrize(
    "changes",
    [
        {"StudyInstanceUID": "../../../../etc"},
        {"SOPInstanceUID": ""},
        {"SeriesInstanceUID": "1.2.3\\4.5.6"},
        {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2 x"},
        {"StudyInstanceUID": "1." + "2" * 70},
    ],
)
def test_uid_refusals_are_worded_as_before(changes: dict[str, str]) -> None:
    outcome = _lean(to_bytes(_ct(**changes)))
    assert isinstance(outcome, tuple) and outcome[0] == "InvalidHeader" and outcome[2]


def test_a_missing_uid_and_an_invalid_transfer_syntax_are_refused_as_before() -> None:
    ds = _ct()
    del ds.SOPInstanceUID
    assert _lean(to_bytes(ds)) == ("InvalidHeader", "SOPInstanceUID is missing", True)
    data = to_bytes(_ct())
    meta = data[: dataset_offset(data)]
    for syntax in (b"1.2.840.10008.1.2.x\0", b"1.2.840.10008.1.2.9\0", b"\0" * 20):
        changed = meta.replace(b"1.2.840.10008.1.2.1\0", syntax) + data[len(meta) :]
        _same(changed)


def _request(accession: str, *, issuer: str = "", universal: str = "") -> Dataset:
    item = Dataset()
    item.AccessionNumber = accession
    if issuer or universal:
        entity = Dataset()
        if issuer:
            entity.LocalNamespaceEntityID = issuer
        if universal:
            entity.UniversalEntityID = universal
            entity.UniversalEntityIDType = "ISO"
        item.IssuerOfAccessionNumberSequence = [entity]
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepID = "SPS1"
    item.StudyInstanceUID = "1.2.3.4"
    return item


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("encode", [to_bytes, _implicit], ids=["explicit", "implicit"])
def test_request_attributes_and_issuers_in_sequences_of_either_length(
    undefined: bool, encode: Callable[..., bytes]
) -> None:
    ds = _ct()
    ds.RequestAttributesSequence = [
        _request("R1", issuer="HOSP\\A"),
        _request("R2", universal="1.2.3.99"),
        _request(""),
        Dataset(),
    ]
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "TOP"
    ds.IssuerOfAccessionNumberSequence = [issuer, Dataset()]
    # a sequence the index does not read, with an icon image's pixel data inside
    icon = Dataset()
    icon.Rows = 4
    icon.BitsAllocated = 8
    icon.add_new("PixelData", "OB", b"\0" * 16)
    ds.IconImageSequence = [icon]
    ds.ProcedureCodeSequence = Sequence([])
    for element in ("RequestAttributesSequence", "IssuerOfAccessionNumberSequence",
                    "IconImageSequence", "ProcedureCodeSequence"):  # fmt: skip
        ds[element].is_undefined_length = undefined
    for item in ds.RequestAttributesSequence:
        item.is_undefined_length_sequence_item = undefined
    header = _lean(encode(ds))
    assert not isinstance(header, tuple)
    assert [item.accession_issuer for item in header.request_attributes] == [  # type: ignore[attr-defined]
        "HOSP\\A",
        "1.2.3.99",
        "",
        "",
    ]


def test_encapsulated_pixel_data_and_elements_after_it() -> None:
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 30 + b"\xff\xd9"] * 3)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8)  # trailing padding
    data = to_bytes(ds)
    _lean(data)
    _same(data[:-4])  # cut in the padding: refused as before


def test_a_sized_instance_and_the_data_set_limit() -> None:
    data = to_bytes(sized_instance(2 * MIB))
    size = len(data) - dataset_offset(data)
    assert not isinstance(_same(data, max_dataset_bytes=size), tuple)
    assert _same(data, max_dataset_bytes=size - 1)[0] == "DatasetTooLarge"  # type: ignore[index]
    assert _decided(data)


def test_deflated_and_big_endian_files_are_read_by_pydicom_as_before(tmp_path: Path) -> None:
    deflated = deflated_part10(1 * MIB)
    assert not _decided(deflated)
    assert not isinstance(_same(deflated, max_dataset_bytes=4 * MIB, scratch_dir=tmp_path), tuple)
    assert _same(deflated, max_dataset_bytes=MIB // 2, scratch_dir=tmp_path)[0] == "DatasetTooLarge"  # type: ignore[index]
    assert _same(deflated[:-40], max_dataset_bytes=4 * MIB)[0] == "InvalidHeader"  # type: ignore[index]
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=False, enforce_file_format=True)
    assert not _decided(out.getvalue())
    assert not isinstance(_same(out.getvalue()), tuple)


# --------------------------------------------------------------- hostile bytes


def _element(tag: int, vr: bytes, value: bytes, *, implicit: bool = False) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, len(value)) + value
    if vr in LONG_VRS:
        return (
            struct.pack("<HH", group, element)
            + vr
            + b"\0\0"
            + struct.pack("<I", len(value))
            + value
        )
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _with_data_set(data_set: bytes, syntax: str = "1.2.840.10008.1.2.1") -> bytes:
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = syntax
    base = to_bytes(ds)
    return base[: dataset_offset(base)] + data_set


def _core(*, implicit: bool = False) -> list[bytes]:
    """The required UIDs and a name, element by element, in tag order."""
    return [
        _element(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0", implicit=implicit),
        _element(0x00080018, b"UI", b"1.2.3.4.5\0", implicit=implicit),
        _element(0x00100010, b"PN", b"Doe^Jane", implicit=implicit),
        _element(0x0020000D, b"UI", b"1.2.3.4.6\0", implicit=implicit),
        _element(0x0020000E, b"UI", b"1.2.3.4.7\0", implicit=implicit),
    ]


_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_UNDEFINED_SQ = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff" * 4
_PIXELS = _element(0x7FE00010, b"OW", b"\0" * 16)


def _hostile() -> dict[str, bytes]:
    a, b, c, d, e = _core()
    name = _element(0x00100010, b"PN", b"Roe^Rich")
    request = _UNDEFINED_SQ + _ITEM + _element(0x00080050, b"SH", b"ACC") + _ITEM_END
    cases = {
        "clean": a + b + c + d + e + _PIXELS,
        "empty": b"",
        "odd length value": a + b + _element(0x00100010, b"PN", b"Doe") + d + e,
        "huge length": a + b + struct.pack("<HH", 0x0010, 0x0020) + b"LO\xf0\xff" + d + e,
        "huge long length": a
        + b
        + struct.pack("<HH", 0x0009, 0x1010)
        + b"OB\0\0"
        + b"\xf0\xff\xff\xff"
        + d
        + e,
        "duplicate tag": a + b + c + name + d + e,
        "tags out of order": a + b + d + c + e,
        "unknown vr": a + b + struct.pack("<HH", 0x0010, 0x0020) + b"XX\x02\x00ID" + d + e,
        "lower case vr": a + b + struct.pack("<HH", 0x0010, 0x0020) + b"lo\x02\x00ID" + d + e,
        "stray item delimiter": a + b + c + _ITEM_END + d + e,
        "stray sequence delimiter": a + b + c + _SEQUENCE_END + d + e,
        "sequence not closed": a + b + c + d + e + request,
        "item not closed": a + b + c + d + e + _UNDEFINED_SQ + _ITEM + name + _SEQUENCE_END,
        "closed sequence": a + b + c + d + e + request + _SEQUENCE_END,
        "item of wrong tag": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + struct.pack("<HHI", 0xFFFE, 0xE001, 0xFFFFFFFF)
        + name
        + _ITEM_END
        + _SEQUENCE_END,
        "defined item shorter than its content": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + struct.pack("<HHI", 0xFFFE, 0xE000, 8)
        + name
        + _SEQUENCE_END,
        "defined item longer than its content": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + struct.pack("<HHI", 0xFFFE, 0xE000, 24)
        + name
        + _SEQUENCE_END,
        "defined sequence with a delimiter": a
        + b
        + c
        + d
        + e
        + _element(0x00400275, b"SQ", _SEQUENCE_END + b"\0" * 8),
        "un of undefined length": a
        + b
        + c
        + d
        + e
        + struct.pack("<HH", 0x0009, 0x1010)
        + b"UN\0\0\xff\xff\xff\xff"
        + _ITEM
        + _element(0x00100010, b"", b"Doe^Jane", implicit=True)
        + _ITEM_END
        + _SEQUENCE_END,
        "ob of undefined length": a
        + b
        + c
        + d
        + e
        + struct.pack("<HH", 0x0009, 0x1010)
        + b"OB\0\0\xff\xff\xff\xff"
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + _SEQUENCE_END,
        "implicit item in explicit": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + _ITEM
        + _element(0x00080050, b"", b"ACC1", implicit=True)
        + _ITEM_END
        + _SEQUENCE_END,
        "charset in an item": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + _ITEM
        + _element(0x00080005, b"CS", b"ISO_IR 192")
        + _element(0x00080050, b"SH", b"\xc3\xa9\0")
        + _ITEM_END
        + _SEQUENCE_END,
        # pydicom decodes an undefined-length sequence with the character set
        # read before it, the rest with the data set's
        "charset after a sequence": a
        + b
        + c
        + d
        + e
        + _UNDEFINED_SQ
        + _ITEM
        + _element(0x00080050, b"SH", b"\xc3\xa9\0")
        + _ITEM_END
        + _SEQUENCE_END
        + _element(0x00080005, b"CS", b"ISO_IR 192"),
        "charset as LO": _element(0x00080005, b"LO", b"ISO_IR 192") + a + b + c + d + e,
        "charset as UN": _element(0x00080005, b"UN", b"ISO_IR 192") + a + b + c + d + e,
        "pixel data first": _PIXELS + a,
        "command set": _element(0x00000000, b"UL", b"\0\0\0\0") + a + b + c + d + e,
        "file meta element in the data set": a + _element(0x00020010, b"UI", b"1.2\0") + b,
        "name as LO": a + b + _element(0x00100010, b"LO", b"Doe^Jane==") + d + e,
        "name as UN": a + b + _element(0x00100010, b"UN", b"Doe^Jane==") + d + e,
        "series number as US": a + b + c + d + e + _element(0x00200011, b"US", b"\x05\0"),
        "series number as US of 3 bytes": a
        + b
        + c
        + d
        + e
        + _element(0x00200011, b"US", b"\x05\0\0"),
        "request attributes as UN": a + b + c + d + e + _element(0x00400275, b"UN", b"\0" * 8),
        "uid as SQ": a + b + c + _element(0x0020000D, b"SQ", b"") + e,
        "junk after": a + b + c + d + e + b"\0\0\0",
        "deep nesting": a
        + b
        + c
        + d
        + e
        + (_UNDEFINED_SQ + _ITEM) * 70
        + (_ITEM_END + _SEQUENCE_END) * 70,
        "wrapped": a
        + b
        + c
        + d
        + e
        + (_UNDEFINED_SQ + _ITEM) * 3
        + (_ITEM_END + _SEQUENCE_END) * 3,
    }
    i_a, i_b, i_c, i_d, i_e = _core(implicit=True)
    cases["implicit clean"] = i_a + i_b + i_c + i_d + i_e
    cases["implicit looking explicit"] = (
        _element(0x00080008, b"", b"X" * 0x4141, implicit=True) + i_a + i_b + i_c + i_d + i_e
    )
    cases["implicit private sequence"] = (
        i_a
        + i_b
        + struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF)
        + _ITEM
        + _ITEM_END
        + _SEQUENCE_END
        + i_c
        + i_d
        + i_e
    )
    cases["implicit private undefined not a sequence"] = (
        i_a
        + i_b
        + struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF)
        + _SEQUENCE_END
        + i_c
        + i_d
        + i_e
    )
    return cases


_HOSTILE = _hostile()


@pytest.mark.parametrize("case", sorted(_HOSTILE))
def test_hostile_data_sets_are_refused_or_read_as_before(case: str) -> None:
    syntax = "1.2.840.10008.1.2" if case.startswith("implicit") else "1.2.840.10008.1.2.1"
    _same(_with_data_set(_HOSTILE[case], syntax))


def test_well_formed_hostile_cases_are_read_by_the_walk() -> None:
    for case in ("clean", "empty", "odd length value", "closed sequence", "wrapped",
                 "name as UN", "series number as US", "implicit clean",
                 "implicit private sequence"):  # fmt: skip
        syntax = "1.2.840.10008.1.2" if case.startswith("implicit") else "1.2.840.10008.1.2.1"
        assert _decided(_with_data_set(_HOSTILE[case], syntax)), case


@pytest.mark.parametrize("encode", [to_bytes, _implicit], ids=["explicit", "implicit"])
def test_a_file_cut_anywhere_is_refused_as_before(encode: Callable[..., bytes]) -> None:
    ds = _ct()
    ds.RequestAttributesSequence = [_request("R1", issuer="HOSP"), _request("R2")]
    ds["RequestAttributesSequence"].is_undefined_length = True
    data = encode(ds)
    start = dataset_offset(data)
    for end in range(start - 20, len(data), 3):
        _same(data[:end])


@pytest.mark.parametrize("seed", range(4))
def test_damaged_bytes_are_refused_or_read_as_before(seed: int) -> None:
    """Bytes changed at random in files with sequences of both lengths: whatever
    the damage, the same outcome as pydicom's."""
    rng = random.Random(seed)
    ds = _ct(SpecificCharacterSet="ISO_IR 100", PatientName="M\xfcller^J")
    ds.RequestAttributesSequence = [_request("R1", issuer="HOSP"), _request("R2")]
    ds["RequestAttributesSequence"].is_undefined_length = seed % 2 == 0
    data = to_bytes(ds) if seed < 2 else _implicit(ds)
    start = dataset_offset(data)
    for _ in range(150):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(start, len(data))] = rng.choice([0, 0xFF, rng.randrange(256)])
        _same(bytes(damaged))
