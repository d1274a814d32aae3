"""The one walk over a Part 10 file's element headers (domain/part10.py): the
file meta over bytes and over an open file agree, and a cut data set is noticed."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10 import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HEAD_LENGTH,
    IMPLICIT_VR_LITTLE_ENDIAN,
    UNDEFINED_LENGTH,
    ElementHeader,
    dataset_is_complete,
    dataset_offset,
    element_header,
    has_part10_prefix,
    stream_dataset_offset,
)


def _part10(transfer_syntax: str) -> bytes:
    """A small file with nested sequences of undefined length."""
    inner = Dataset()
    inner.CodeMeaning = "meaning"
    item = Dataset()
    item.CodeValue = "X"
    item.ConceptCodeSequence = Sequence([inner])
    item["ConceptCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.RequestAttributesSequence = Sequence([item, item])
    ds["RequestAttributesSequence"].is_undefined_length = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.3"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(
        out,
        implicit_vr=transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
        little_endian=True,
        enforce_file_format=True,
    )
    return out.getvalue()


def _meta(*elements: bytes) -> bytes:
    return b"\0" * 128 + b"DICM" + b"".join(elements)


def _short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _offsets(data: bytes, tmp_path: Path) -> tuple[int | str, int | str]:
    """dataset_offset over bytes and over a file, or their error messages."""
    path = tmp_path / "file.dcm"
    path.write_bytes(data)
    found: list[int | str] = []
    try:
        found.append(dataset_offset(data))
    except InvalidValue as exc:
        found.append(str(exc))
    with path.open("rb") as source:
        try:
            found.append(stream_dataset_offset(source))
        except InvalidValue as exc:
            found.append(str(exc))
    return found[0], found[1]


def test_the_file_meta_ends_where_group_0002_ends(tmp_path: Path) -> None:
    ts = _short(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0")
    body = _short(0x0010, 0x0010, b"PN", b"Doe^Jane")
    data = _meta(ts, body)
    assert _offsets(data, tmp_path) == (HEAD_LENGTH + len(ts), HEAD_LENGTH + len(ts))
    real = _part10(EXPLICIT_VR_LITTLE_ENDIAN)
    offset, streamed = _offsets(real, tmp_path)
    assert offset == streamed
    assert real[offset : offset + 4] == struct.pack("<HH", 0x0010, 0x0010)


def test_a_file_of_file_meta_only_has_an_empty_data_set(tmp_path: Path) -> None:
    data = _meta(_short(0x0002, 0x0010, b"UI", b"1.2\0"))
    assert _offsets(data, tmp_path) == (len(data), len(data))


def test_a_first_data_set_element_shorter_than_a_long_header_is_the_data_set(
    tmp_path: Path,
) -> None:
    """Only the group decides where the file meta ends: 8 bytes of an OB header
    at the very end are the data set's (and dataset_is_complete's business)."""
    meta = _meta(_short(0x0002, 0x0010, b"UI", b"1.2\0"))
    data = meta + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0"
    assert _offsets(data, tmp_path) == (len(meta), len(meta))
    assert not dataset_is_complete(data, len(meta), EXPLICIT_VR_LITTLE_ENDIAN)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no DICM prefix"),
        (b"\0" * 128 + b"DICN", "no DICM prefix"),
        (b"\0" * 131, "no DICM prefix"),
        # a length past the end
        (_meta(_short(0x0002, 0x0010, b"UI", b"1.2\0"))[:-1], "truncated file meta"),
        # a long VR header cut after 8 of its 12 bytes
        (_meta(struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0"), "truncated file meta"),
        # an undefined length in the file meta cannot be skipped
        (
            _meta(struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0" + b"\xff" * 4 + b"\0" * 8),
            "truncated file meta",
        ),
        # fewer than 8 bytes of a last element
        (_meta(_short(0x0002, 0x0010, b"UI", b"1.2\0"), b"\x02\0\x10"), "truncated file meta"),
    ],
)
def test_what_is_not_part10_or_is_cut_is_refused_by_both(
    data: bytes, message: str, tmp_path: Path
) -> None:
    found, streamed = _offsets(data, tmp_path)
    assert isinstance(found, str)
    assert message in found
    assert streamed == found


def test_the_prefix() -> None:
    assert has_part10_prefix(b"\0" * 128 + b"DICM")
    assert has_part10_prefix(b"\xff" * 128 + b"DICM" + b"more")
    assert not has_part10_prefix(b"\0" * 128 + b"DICN")
    assert not has_part10_prefix(b"DICM")
    assert not has_part10_prefix(b"")


def test_element_headers_in_each_encoding() -> None:
    explicit_short = struct.pack("<HH", 0x0010, 0x0010) + b"PN" + struct.pack("<H", 8)
    assert element_header(explicit_short, 0) == ElementHeader(0x0010, 0x0010, b"PN", 8, 8)
    explicit_long = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff" * 4
    assert element_header(explicit_long, 0) == ElementHeader(
        0x0040, 0x0275, b"SQ", UNDEFINED_LENGTH, 12
    )
    implicit = struct.pack("<HHI", 0x0010, 0x0010, 70000)
    assert element_header(implicit, 0, implicit=True) == ElementHeader(
        0x0010, 0x0010, b"", 70000, 8
    )
    big = struct.pack(">HH", 0x0010, 0x0010) + b"PN" + struct.pack(">H", 8)
    assert element_header(big, 0, big_endian=True) == ElementHeader(0x0010, 0x0010, b"PN", 8, 8)
    # an item has no VR, explicit or not
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 12)
    assert element_header(item, 0) == ElementHeader(0xFFFE, 0xE000, b"", 12, 8)
    with pytest.raises(struct.error):
        element_header(explicit_long[:10], 0)


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
def test_a_data_set_cut_anywhere_is_incomplete(transfer_syntax: str) -> None:
    data = _part10(transfer_syntax)
    offset = dataset_offset(data)
    assert struct.pack("<I", UNDEFINED_LENGTH) in data[offset:]  # sequences to close
    assert dataset_is_complete(data, offset, transfer_syntax)
    # PatientName (8 + 8 bytes), then the sequence to its end: a cut between
    # two top-level elements leaves a shorter data set, every other one a cut one
    boundaries = {offset, offset + 16}
    for end in range(offset, len(data)):
        assert dataset_is_complete(data[:end], offset, transfer_syntax) is (end in boundaries)


def test_a_stray_delimiter_or_an_unclosed_item_is_incomplete() -> None:
    name = _short(0x0010, 0x0010, b"PN", b"Doe^Jane")
    assert dataset_is_complete(name, 0, EXPLICIT_VR_LITTLE_ENDIAN)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    assert not dataset_is_complete(name + item_end, 0, EXPLICIT_VR_LITTLE_ENDIAN)
    sequence = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff" * 4
    item = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    closed = sequence + item + name + item_end + sequence_end
    assert dataset_is_complete(closed, 0, EXPLICIT_VR_LITTLE_ENDIAN)
    assert not dataset_is_complete(sequence + item + name + sequence_end, 0, "1.2.840.10008.1.2.1")


def test_a_un_of_undefined_length_holds_implicit_little_endian() -> None:
    """PS3.5 6.2.2: its items are walked as Implicit VR Little Endian, whatever
    the data set's syntax."""
    implicit_name = struct.pack("<HHI", 0x0010, 0x0010, 8) + b"Doe^Jane"
    un = struct.pack(">HH", 0x0009, 0x1010) + b"UN\0\0" + b"\xff" * 4
    item = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = un + item + implicit_name + item_end + sequence_end
    assert dataset_is_complete(data, 0, EXPLICIT_VR_BIG_ENDIAN)
    assert not dataset_is_complete(data[:-1], 0, EXPLICIT_VR_BIG_ENDIAN)


def test_a_deflated_data_set_is_left_to_the_inflater() -> None:
    assert dataset_is_complete(b"\x01\x02", 0, "1.2.840.10008.1.2.1.99")


def test_nesting_beyond_the_limit_is_refused() -> None:
    sequence = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff" * 4
    item = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

    def nested(depth: int) -> bytes:
        inside = b"" if depth == 0 else nested(depth - 1)
        return sequence + item + inside + item_end + sequence_end

    assert dataset_is_complete(nested(63), 0, EXPLICIT_VR_LITTLE_ENDIAN)
    assert not dataset_is_complete(nested(70), 0, EXPLICIT_VR_LITTLE_ENDIAN)
