"""The one bounded inflater (PS3.5 A.5 Deflated Explicit VR Little Endian)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.domain.dataset_header import InvalidHeader, read_header
from dicom_node.domain.inflate import (
    DEFAULT_MAX_DATASET_BYTES,
    OUTPUT_CHUNK,
    DatasetTooLarge,
    InvalidDeflate,
    inflate,
    inflated,
)
from dicom_node.domain.part10 import dataset_offset
from dicom_node.settings import Settings
from tests.dicomfiles import ct_dataset, to_bytes
from tests.large_datasets import MIB, deflate, deflated_part10


def _chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_default_limit_is_the_settings_default() -> None:
    assert Settings.model_fields["max_dataset_bytes"].default == DEFAULT_MAX_DATASET_BYTES


def test_a_bomb_stops_at_the_limit_having_produced_at_most_one_byte_more() -> None:
    bomb = deflate(zeros=200 * MIB)
    assert len(bomb) < 300_000  # ~1000:1
    produced: list[int] = []
    with pytest.raises(DatasetTooLarge) as refused:
        inflate(_chunks(bomb), lambda out: produced.append(len(out)), limit=8 * MIB)
    assert sum(produced) <= 8 * MIB and max(produced) <= OUTPUT_CHUNK
    assert refused.value.inflated and refused.value.limit == 8 * MIB
    assert "max_dataset_bytes" in refused.value.reason
    # whole in a C-STORE response's Error Comment (64 characters) for any sane limit
    assert len(DatasetTooLarge(10**11 - 1, inflated=True).reason) <= 64


def test_exactly_the_limit_inflates_one_byte_more_does_not() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    sink: list[bytes] = []
    assert inflate(_chunks(deflate(data)), sink.append, limit=len(data)) == len(data)
    assert b"".join(sink) == data
    with pytest.raises(DatasetTooLarge):
        inflate(_chunks(deflate(data)), lambda _: None, limit=len(data) - 1)


def test_a_cut_or_corrupt_stream_is_refused_and_padding_is_not() -> None:
    whole = deflate(b"x" * 10_000, bytes(range(256)) * 50)
    with pytest.raises(InvalidDeflate, match="truncated"):
        inflate([whole[: len(whole) // 2]], lambda _: None, limit=MIB)
    with pytest.raises(InvalidDeflate, match="corrupt"):
        inflate([b"\xff" * 64], lambda _: None, limit=MIB)
    # PS3.5 A.5 pads the stream to an even length with a trailing zero byte
    assert inflate([whole + b"\x00"], lambda _: None, limit=MIB) == 10_000 + 256 * 50


def test_a_large_inflated_data_set_spills_to_an_anonymous_file(tmp_path: Path) -> None:
    large = deflate(b"abc", zeros=20 * MIB)
    with inflated(lambda: _chunks(large), limit=64 * MIB, scratch_dir=tmp_path) as plain:
        assert len(plain) == 20 * MIB + 3 and plain[:3] == b"abc"
        assert not isinstance(plain, bytes)  # mapped, not in memory
        assert list(tmp_path.iterdir()) == []  # unlinked already: a crash leaves nothing
    small = deflate(b"small")
    with inflated(lambda: [small], limit=MIB, scratch_dir=tmp_path) as plain:
        assert plain == b"small"


def test_a_bomb_is_measured_before_anything_is_kept() -> None:
    """Refused in the counting pass: the second pass, which keeps, never starts."""
    bomb = deflate(zeros=100 * MIB)
    passes: list[int] = []

    def chunks() -> list[bytes]:
        passes.append(1)
        return _chunks(bomb)

    with pytest.raises(DatasetTooLarge), inflated(chunks, limit=8 * MIB):
        pass
    assert passes == [1]


def test_read_header_refuses_a_deflate_bomb_and_reads_one_within_the_limit(
    tmp_path: Path,
) -> None:
    bomb = deflated_part10(zeros=200 * MIB)
    with pytest.raises(DatasetTooLarge):
        read_header(bomb, max_dataset_bytes=16 * MIB, scratch_dir=tmp_path)
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    with pytest.raises(DatasetTooLarge):
        read_header(path, max_dataset_bytes=16 * MIB, scratch_dir=tmp_path)
    fine = deflated_part10(zeros=1000)
    header = read_header(fine, max_dataset_bytes=16 * MIB)
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1.99" and header.modality == "CT"
    with pytest.raises(InvalidHeader, match="deflated data set is truncated"):
        read_header(fine[:-40], max_dataset_bytes=16 * MIB)


def test_read_header_refuses_a_data_set_over_the_limit_before_parsing_it() -> None:
    data = to_bytes(ct_dataset(study_uid=generate_uid()))
    size = len(data) - dataset_offset(data)
    assert read_header(data, max_dataset_bytes=size).modality == "CT"
    with pytest.raises(DatasetTooLarge) as refused:
        read_header(data, max_dataset_bytes=size - 1)
    assert refused.value.size == size and not refused.value.inflated
