"""Transcoding (domain/transcode.py, PS3.5 8.2 and A.4) on pydicom's test files.

Inputs come from pydicom's wheel and the pydicom-data package, both installed
locally; ``sample_path`` asks pydicom with ``download=False`` and fails when a file is
not there, so no test ever downloads. The reference for decoded pixels is pydicom's
own ``pixel_array`` of the original, through the same plugin; where an uncompressed
original of a lossless file exists, or DCMTK decodes the syntax, those are second,
independent references.
"""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_node.domain.inflate import DatasetTooLarge
from dicom_node.domain.part10_source import read_stored_instance
from dicom_node.domain.transcode import (
    TranscodeError,
    Transcoder,
    TranscoderBusy,
    can_decode,
    can_encode,
    decoded_photometric_interpretation,
    decoding_plugin,
    frame_count,
    is_lossy,
)
from tests.large_datasets import MIB, deflated_part10
from tests.support import dcmtk_tool

GIB = 1 << 30
_LOSSY_JPEG = (JPEGBaseline8Bit, JPEGExtended12Bit)


def sample_path(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"{name} is not installed (pydicom or pydicom-data); tests never download")
    return Path(path)


def read(name: str) -> Dataset:
    return dcmread(sample_path(name))


def transcoder(max_decoded_bytes: int = GIB, max_concurrent: int = 2) -> Transcoder:
    return Transcoder(max_decoded_bytes=max_decoded_bytes, max_concurrent=max_concurrent)


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset)
    return buffer.getvalue()


def part10(dataset: Dataset) -> bytes:
    """As a Part 10 file (pydicom refuses to write one without the required meta)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def round_trip(dataset: Dataset) -> Dataset:
    return dcmread(io.BytesIO(part10(dataset)))


def native(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return array.astype(array.dtype.newbyteorder("="))


def reference(name: str) -> np.ndarray[Any, Any]:
    """pydicom's pixel_array of the original, decoded by the plugin transcode uses."""
    dataset = read(name)
    syntax = dataset.file_meta.TransferSyntaxUID
    dataset.pixel_array_options(
        decoding_plugin=decoding_plugin(syntax) or "", as_rgb=syntax in _LOSSY_JPEG
    )
    return native(dataset.pixel_array)


def assert_same_pixels(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.array_equal(actual, expected)


# Every compressed test file a decoder here handles, and its Photometric
# Interpretation once decompressed. Left out, for time alone: color3d_jpeg_baseline
# (120 frames, 110 MB decoded) and RG1_J2KR/RG1_J2KI (7 MB each; RG3 covers them).
DECOMPRESSED = [
    # JPEG Baseline: YBR_FULL(_422) converted by the codec (PS3.5 8.2.1)
    ("SC_jpeg_no_color_transform.dcm", "RGB"),
    ("SC_jpeg_no_color_transform_2.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cr.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "RGB"),
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", "RGB"),
    ("SC_rgb_jpeg_app14_dcmd.dcm", "RGB"),
    ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", "RGB"),
    ("SC_rgb_small_odd_jpeg.dcm", "RGB"),
    ("examples_ybr_color.dcm", "RGB"),  # 30 frames of YBR_FULL_422
    # JPEG Extended, 12-bit (GDCM, domain/gdcm_jpeg_extended.py)
    ("JPEG-lossy.dcm", "MONOCHROME2"),
    ("JPGExtended.dcm", "MONOCHROME2"),
    # JPEG Lossless SV1
    ("JPEG-LL.dcm", "MONOCHROME2"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "MONOCHROME2"),
    ("SC_rgb_jpeg_gdcm.dcm", "RGB"),
    ("bad_sequence.dcm", "MONOCHROME2"),
    # JPEG-LS lossless and near-lossless
    ("MR_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
    ("emri_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
    ("JPEGLSNearLossless_08.dcm", "MONOCHROME2"),
    ("JPEGLSNearLossless_16.dcm", "MONOCHROME2"),
    ("SC_rgb_jls_lossy_line.dcm", "RGB"),
    ("SC_rgb_jls_lossy_sample.dcm", "RGB"),
    # JPEG 2000 lossless: YBR_RCT undone by the codec
    ("693_J2KR.dcm", "MONOCHROME2"),
    ("GDCMJ2K_TextGBR.dcm", "RGB"),
    ("J2K_pixelrep_mismatch.dcm", "MONOCHROME2"),
    ("MR2_J2KR.dcm", "MONOCHROME2"),
    ("MR_small_jp2klossless.dcm", "MONOCHROME2"),
    ("RG3_J2KR.dcm", "MONOCHROME1"),
    ("US1_J2KR.dcm", "RGB"),
    ("emri_small_jpeg_2k_lossless.dcm", "MONOCHROME2"),
    ("examples_jpeg2k.dcm", "RGB"),
    ("explicit_VR-UN.dcm", "MONOCHROME2"),
    # JPEG 2000: YBR_ICT undone by the codec
    ("693_J2KI.dcm", "MONOCHROME2"),
    ("JPEG2000.dcm", "MONOCHROME2"),
    ("MR2_J2KI.dcm", "MONOCHROME2"),
    ("RG3_J2KI.dcm", "MONOCHROME1"),
    ("SC_rgb_gdcm_KY.dcm", "RGB"),
    ("US1_J2KI.dcm", "RGB"),
    # RLE Lossless
    ("MR_small_RLE.dcm", "MONOCHROME2"),
    ("OBXXXX1A_rle.dcm", "PALETTE COLOR"),
    ("OBXXXX1A_rle_2frame.dcm", "PALETTE COLOR"),
    ("SC_rgb_rle.dcm", "RGB"),
    ("SC_rgb_rle_16bit.dcm", "RGB"),
    ("SC_rgb_rle_16bit_2frame.dcm", "RGB"),
    ("SC_rgb_rle_2frame.dcm", "RGB"),
    ("SC_rgb_rle_32bit.dcm", "RGB"),
    ("SC_rgb_rle_32bit_2frame.dcm", "RGB"),
    ("emri_small_RLE.dcm", "MONOCHROME2"),
    ("rtdose_rle.dcm", "MONOCHROME2"),
    ("rtdose_rle_1frame.dcm", "MONOCHROME2"),
]


@pytest.mark.parametrize(("name", "photometric"), DECOMPRESSED)
def test_a_compressed_file_decompresses_to_pydicoms_pixels_with_the_pixel_module_updated(
    name: str, photometric: str
) -> None:
    original = read(name)
    before = encoded(original)
    source = original.file_meta.TransferSyntaxUID

    result = transcoder().transcode(original, ExplicitVRLittleEndian)

    assert encoded(original) == before  # the input is untouched
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.SOPInstanceUID == original.SOPInstanceUID
    assert result.PhotometricInterpretation == photometric
    assert decoded_photometric_interpretation(original) == photometric
    if result.SamplesPerPixel > 1:
        assert result.PlanarConfiguration == 0
    for keyword in ("BitsAllocated", "BitsStored", "PixelRepresentation", "NumberOfFrames"):
        assert result.get(keyword) == original.get(keyword)
    element = result["PixelData"]
    assert not element.is_undefined_length
    assert ("OB" if result.BitsAllocated <= 8 else "OW") == element.VR
    assert "ExtendedOffsetTable" not in result
    # lossy originals stay (or become) marked; lossless ones are not marked
    if is_lossy(source):
        assert result.LossyImageCompression == "01"
        if original.get("LossyImageCompression") == "01":
            for keyword in ("LossyImageCompressionMethod", "LossyImageCompressionRatio"):
                assert result.get(keyword) == original.get(keyword)
        else:
            assert result.LossyImageCompressionMethod in ("ISO_10918_1", "ISO_14495_1")
            assert float(result.LossyImageCompressionRatio) > 1
    else:
        assert result.get("LossyImageCompression") == original.get("LossyImageCompression")

    expected = reference(name)
    assert_same_pixels(native(result.pixel_array), expected)
    written = round_trip(result)
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert_same_pixels(written.pixel_array, expected)


# A lossless file and the uncompressed original it was made from: both pixel sets
# must be equal, a reference independent of the decoder
LOSSLESS_PAIRS = [
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("SC_rgb_rle_2frame.dcm", "SC_rgb_2frame.dcm"),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm"),
]


@pytest.mark.parametrize(("name", "uncompressed"), LOSSLESS_PAIRS)
def test_a_lossless_file_decompresses_to_its_uncompressed_original(
    name: str, uncompressed: str
) -> None:
    result = transcoder().transcode(read(name), ExplicitVRLittleEndian)
    assert_same_pixels(
        native(round_trip(result).pixel_array), native(read(uncompressed).pixel_array)
    )


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_bigendian.dcm",
        "ExplVR_BigEnd.dcm",
        "OBXXXX1A_expb_2frame.dcm",  # 8-bit samples in OW, palette LUTs in OW
        "SC_rgb_expb_16bit_2frame.dcm",
        "SC_rgb_expb_32bit_2frame.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
        "emri_small_big_endian.dcm",
        "gdcm-US-ALOKA-16_big.dcm",  # 16-bit palette LUTs in OW
        "liver_expb.dcm",  # 1-bit samples, 3 frames
        "rtdose_expb.dcm",
    ],
)
def test_big_endian_becomes_little_endian_with_the_same_pixels_and_values(name: str) -> None:
    original = read(name)
    before = encoded(original)
    result = transcoder().transcode(original, ExplicitVRLittleEndian)
    assert encoded(original) == before
    written = round_trip(result)
    assert_same_pixels(native(written.pixel_array), native(read(name).pixel_array))
    assert_same_values(written, read(name))


def assert_same_values(little: Dataset, big: Dataset) -> None:
    """Every element but Pixel Data: OW-like values as numbers, the rest as values."""
    widths = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
    for element in big:
        if element.tag == 0x7FE00010 or element.tag.element == 0:
            continue  # pixels compared apart; group lengths are not written (PS3.5 7.2)
        other = little[element.tag]
        if element.VR == "SQ":
            assert len(other.value) == len(element.value)
            for mine, theirs in zip(other.value, element.value, strict=True):
                assert_same_values(mine, theirs)
        elif element.VR in widths and element.value is not None:
            width = widths[element.VR]
            assert np.array_equal(
                np.frombuffer(other.value, f"<u{width}"), np.frombuffer(element.value, f">u{width}")
            ), element.tag
        else:
            assert other.value == element.value, element.tag


def test_big_endian_without_pixel_data_keeps_every_value() -> None:
    original = read("DICOMDIR-bigEnd")
    result = transcoder().transcode(original, ExplicitVRLittleEndian)
    assert_same_values(round_trip(result), read("DICOMDIR-bigEnd"))


@pytest.mark.parametrize("target", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
@pytest.mark.parametrize("name", ["US1_J2KI.dcm", "emri_small_RLE.dcm", "JPGExtended.dcm"])
def test_decompression_to_the_other_native_syntaxes(name: str, target: UID) -> None:
    result = transcoder().transcode(read(name), target)
    written = round_trip(result)
    assert written.file_meta.TransferSyntaxUID == target
    assert_same_pixels(native(written.pixel_array), reference(name))


def test_a_stored_deflated_file_is_read_through_the_bounded_inflater_and_left_unchanged(
    tmp_path: Path,
) -> None:
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(sample_path("image_dfl.dcm").read_bytes())
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()

    dataset = read_stored_instance(stored, max_dataset_bytes=MIB)
    assert dataset.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    result = transcoder().transcode(dataset, ExplicitVRLittleEndian)
    assert_same_pixels(round_trip(result).pixel_array, read("image_dfl.dcm").pixel_array)
    # and to the deflated syntax again, from the little-endian copy
    again = transcoder().transcode(result, DeflatedExplicitVRLittleEndian)
    assert_same_pixels(round_trip(again).pixel_array, read("image_dfl.dcm").pixel_array)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest

    with pytest.raises(DatasetTooLarge) as refused:
        read_stored_instance(stored, max_dataset_bytes=100_000)  # 262,144 bytes inflated
    assert refused.value.inflated


def test_a_deflate_bomb_in_the_store_stops_at_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(deflated_part10(64 * MIB))  # ~64 KB on disk
    with pytest.raises(DatasetTooLarge):
        read_stored_instance(bomb, max_dataset_bytes=8 * MIB)


def test_a_stored_file_of_another_syntax_is_read_whole(tmp_path: Path) -> None:
    dataset = read_stored_instance(sample_path("US1_J2KR.dcm"), max_dataset_bytes=MIB)
    assert dataset.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert dataset.PixelData == read("US1_J2KR.dcm").PixelData
    with pytest.raises(DatasetTooLarge):
        read_stored_instance(sample_path("US1_J2KR.dcm"), max_dataset_bytes=100_000)


# ------------------------------------------------------------------ lossless targets

REENCODED = [
    ("MR_small.dcm", RLELossless),  # signed 16-bit
    ("MR_small.dcm", JPEGLSLossless),
    ("MR_small.dcm", JPEG2000Lossless),
    ("emri_small.dcm", JPEG2000Lossless),  # 10 frames of 12 bits
    ("emri_small.dcm", JPEGLSLossless),
    ("SC_rgb_2frame.dcm", RLELossless),
    ("SC_rgb_2frame.dcm", JPEGLSLossless),
    ("SC_rgb_2frame.dcm", JPEG2000Lossless),
    ("OBXXXX1A.dcm", JPEGLSLossless),  # palette colour
    ("SC_ybr_full_uncompressed.dcm", RLELossless),  # YBR_FULL stays YBR_FULL
    ("SC_ybr_full_uncompressed.dcm", JPEG2000Lossless),
    ("SC_ybr_full_422_uncompressed.dcm", RLELossless),  # expanded to YBR_FULL
    ("US1_J2KR.dcm", JPEGLSLossless),  # compressed to compressed
    ("JPEG-LL.dcm", JPEG2000Lossless),
    ("MR_small_jpeg_ls_lossless.dcm", RLELossless),
    ("emri_small_RLE.dcm", JPEGLSLossless),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", RLELossless),  # a lossy source stays marked
    ("JPGExtended.dcm", JPEGLSLossless),
]


@pytest.mark.parametrize(("name", "target"), REENCODED)
def test_lossless_reencoding_round_trips_pixel_equal(name: str, target: UID) -> None:
    original = read(name)
    before = encoded(original)
    result = transcoder().transcode(original, target)
    assert encoded(original) == before

    assert result.file_meta.TransferSyntaxUID == target
    assert result["PixelData"].is_undefined_length and result["PixelData"].VR == "OB"
    frames = frame_count(original)
    assert len(list(generate_frames(result.PixelData, number_of_frames=frames))) == frames
    written = round_trip(result)
    assert written.file_meta.TransferSyntaxUID == target
    expected = reference(name)
    if original.PhotometricInterpretation == "YBR_FULL_422":
        assert written.PhotometricInterpretation == (
            "RGB" if is_lossy(original.file_meta.TransferSyntaxUID) else "YBR_FULL"
        )
    written.pixel_array_options(as_rgb=False)
    assert_same_pixels(native(written.pixel_array), expected)
    if is_lossy(original.file_meta.TransferSyntaxUID):
        assert written.LossyImageCompression == "01"
    else:
        assert written.get("LossyImageCompression") == original.get("LossyImageCompression")


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("MR_small_implicit.dcm", JPEG2000Lossless),
        ("MR_small_implicit.dcm", ExplicitVRLittleEndian),
        ("MR_small.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRLittleEndian),
    ],
)
def test_the_result_reads_as_encoded_in_its_target_syntax(name: str, target: UID) -> None:
    """pynetdicom picks the context for a data set from its encoding as much as
    from its file meta: an Implicit VR source re-encoded to JPEG 2000 must say
    Explicit VR (PS3.5 A.4), or a destination taking only JPEG 2000 gets nothing."""
    result = transcoder().transcode(read(name), target)
    assert result.original_encoding[:2] == (target.is_implicit_VR, target.is_little_endian)
    assert round_trip(result).file_meta.TransferSyntaxUID == target


def test_an_image_a_lossless_syntax_cannot_hold_is_refused_with_the_reason() -> None:
    with pytest.raises(
        TranscodeError, match=r"JPEG-LS .* cannot hold RGB with 3 sample\(s\) of 32 bits"
    ):
        transcoder().transcode(read("SC_rgb_rle_32bit.dcm"), JPEGLSLossless)


@pytest.mark.parametrize(
    "target", [JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000]
)
def test_a_lossy_target_is_never_produced(target: UID) -> None:
    assert not can_encode(target)
    with pytest.raises(TranscodeError, match=r"lossy .* is never produced"):
        transcoder().transcode(read("MR_small.dcm"), target)


def test_what_can_be_decoded_and_encoded_here() -> None:
    for syntax in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
                   JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
                   HTJ2KLossless, RLELossless, DeflatedExplicitVRLittleEndian,
                   ExplicitVRBigEndian, ImplicitVRLittleEndian):  # fmt: skip
        assert can_decode(syntax), syntax.name
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                   DeflatedExplicitVRLittleEndian, RLELossless, JPEGLSLossless,
                   JPEG2000Lossless):  # fmt: skip
        assert can_encode(syntax), syntax.name
    assert not can_encode(ExplicitVRBigEndian)  # retired: read, never written
    assert not can_decode("1.2.840.10008.1.2.4.100")  # MPEG-2: no decoder
    assert is_lossy(JPEG2000) and not is_lossy(JPEG2000Lossless) and not is_lossy(RLELossless)
    # one plugin per syntax, always the same (notes/transcode.md says why each)
    assert {syntax.name: decoding_plugin(syntax) for syntax in DECODING} == DECODING_NAMES


DECODING = [JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
            JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
            RLELossless]  # fmt: skip
DECODING_NAMES = {
    JPEGBaseline8Bit.name: "pillow",
    JPEGExtended12Bit.name: "dicom-node-gdcm",
    JPEGLossless.name: "gdcm",
    JPEGLosslessSV1.name: "gdcm",
    JPEGLSLossless.name: "pyjpegls",
    JPEGLSNearLossless.name: "pyjpegls",
    JPEG2000Lossless.name: "pylibjpeg",
    JPEG2000.name: "pylibjpeg",
    RLELossless.name: "pylibjpeg",
}


# ------------------------------------------------------------------ no pixel data


@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_an_instance_without_pixel_data_moves_between_native_syntaxes(target: UID) -> None:
    original = read("rtplan.dcm")  # Implicit VR Little Endian
    result = transcoder().transcode(original, target)
    written = round_trip(result)
    assert written.file_meta.TransferSyntaxUID == target
    assert written.BeamSequence[0].BeamName == original.BeamSequence[0].BeamName
    assert len(written) == len(original)


def test_an_instance_without_pixel_data_is_not_compressed() -> None:
    with pytest.raises(TranscodeError, match="no pixel data to compress"):
        transcoder().transcode(read("rtplan.dcm"), RLELossless)


# ------------------------------------------------------------------ limits and errors


def test_a_decoded_size_over_the_limit_is_refused_before_decoding() -> None:
    original = read("emri_small_jpeg_2k_lossless.dcm")  # 64 x 64 x 2 bytes x 10 frames
    small = transcoder(max_decoded_bytes=81_919)
    with pytest.raises(TranscodeError) as refused:
        small.transcode(original, ExplicitVRLittleEndian)
    assert str(refused.value) == "decoded pixel data 81.9 kB over max_transcode_bytes"
    assert transcoder(max_decoded_bytes=81_920).transcode(original, ExplicitVRLittleEndian)
    # one frame fits where the whole does not
    assert small.frame(original, 9).shape == (64, 64)
    with pytest.raises(TranscodeError, match=r"decoded frame 8\.2 kB over max_transcode_bytes"):
        transcoder(max_decoded_bytes=8191).frame(original, 0)


def test_a_decoder_failure_is_one_short_reason_and_no_traceback_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    original = read("JPEG2000-embedded-sequence-delimiter.dcm")  # a broken codestream
    with pytest.raises(TranscodeError) as refused:
        transcoder().transcode(original, ExplicitVRLittleEndian)
    assert str(refused.value) == "decoder failed (pylibjpeg): RuntimeError"
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert not [record for record in caplog.records if record.exc_info]


def test_a_missing_decoder_and_a_missing_syntax_are_refused() -> None:
    original = read("MR_small.dcm")
    original.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2
    with pytest.raises(TranscodeError, match="no decoder for MPEG2"):
        transcoder().transcode(original, ExplicitVRLittleEndian)
    del original.file_meta.TransferSyntaxUID
    with pytest.raises(TranscodeError, match="no Transfer Syntax UID"):
        transcoder().transcode(original, ExplicitVRLittleEndian)


def test_peak_memory_is_the_decoded_pixels_and_a_few_frames_not_twice_the_pixels() -> None:
    original = read("examples_ybr_color.dcm")  # 30 frames, 6.9 MB decoded
    decoded = original.Rows * original.Columns * 3 * 30
    work = transcoder()
    work.transcode(original, ExplicitVRLittleEndian)  # imports and caches, not measured
    tracemalloc.start()
    try:
        result = work.transcode(original, ExplicitVRLittleEndian)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * decoded  # decoded whole then copied would be over 2
    assert result.Rows == original.Rows


# ------------------------------------------------------------------ frames


@pytest.mark.parametrize(
    "name",
    [
        "emri_small_jpeg_2k_lossless.dcm",
        "examples_ybr_color.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "SC_rgb_expb_2frame.dcm",  # big endian
        "emri_small.dcm",
    ],
)
def test_a_frame_alone_is_that_frame_of_the_pixel_array(name: str) -> None:
    original = read(name)
    expected = reference(name)
    work = transcoder()
    for index in range(frame_count(original)):
        frame = work.frame(original, index)
        assert frame.dtype.isnative
        assert_same_pixels(frame, expected[index])
    with pytest.raises(IndexError):
        work.frame(original, frame_count(original))


def test_decode_frame_takes_no_place_its_caller_holds_one() -> None:
    """Rendering reads, decodes and renders within one place: ``decode_frame``
    must work inside it (a second place would deadlock at max_concurrent 1)."""
    original = read("emri_small_jpeg_2k_lossless.dcm")
    expected = reference("emri_small_jpeg_2k_lossless.dcm")
    work = Transcoder(max_decoded_bytes=1 << 30, max_concurrent=1, max_wait_seconds=0.05)
    with work.place():
        assert work.running == 1
        assert_same_pixels(work.decode_frame(original, 1), expected[1])
        assert work.running == 1
        with pytest.raises(TranscoderBusy):  # frame takes a place of its own
            work.frame(original, 1)


def test_frame_count_reads_number_of_frames_as_pydicom_does() -> None:
    dataset = Dataset()
    assert frame_count(dataset) == 1
    dataset.NumberOfFrames = 0
    assert frame_count(dataset) == 1
    dataset.NumberOfFrames = 12
    assert frame_count(dataset) == 12


# ------------------------------------------------------------------ one place at a time


class GatedPixels(io.BufferedIOBase):
    """Pixel Data read only once ``gate`` is set; ``reading`` set at the first read."""

    def __init__(self, data: bytes, on_read: Callable[[], None] = lambda: None) -> None:
        self._data = io.BytesIO(data)
        self.reading = threading.Event()
        self.gate = threading.Event()
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self.reading.is_set():
            self._on_read()
            self.reading.set()
        assert self.gate.wait(30)
        return self._data.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()


def gated(name: str, on_read: Callable[[], None] = lambda: None) -> tuple[Dataset, GatedPixels]:
    dataset = read(name)
    pixels = GatedPixels(dataset.PixelData, on_read)
    dataset.PixelData = pixels
    return dataset, pixels


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in 30 s"
        threading.Event().wait(0.01)


def run(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()
    return thread, results


def test_with_one_place_a_second_transcoding_waits_for_the_first() -> None:
    work = transcoder(max_concurrent=1)
    first_done = threading.Event()
    second_saw_first_done: list[bool] = []
    first, first_pixels = gated("MR_small_RLE.dcm")
    second, second_pixels = gated(
        "MR_small_RLE.dcm", on_read=lambda: second_saw_first_done.append(first_done.is_set())
    )

    def first_work() -> Dataset:
        try:
            return work.transcode(first, ExplicitVRLittleEndian)
        finally:
            first_done.set()

    thread_1, results_1 = run(first_work)
    assert first_pixels.reading.wait(30)  # the first decodes, holding the place
    thread_2, results_2 = run(lambda: work.transcode(second, ExplicitVRLittleEndian))
    wait_until(lambda: work.waiting == 1)
    assert work.running == 1 and not second_pixels.reading.is_set()

    second_pixels.gate.set()
    first_pixels.gate.set()
    thread_1.join(30)
    thread_2.join(30)
    assert second_saw_first_done == [True]
    assert len(results_1) == len(results_2) == 1
    assert work.running == work.waiting == 0


def test_a_transcoding_waiting_past_its_limit_gives_up_with_the_reason() -> None:
    """A sub-operation does not queue for ever behind other transcodings (its
    peer waits on the association meanwhile): past max_wait_seconds it fails."""
    work = Transcoder(max_decoded_bytes=GIB, max_concurrent=1, max_wait_seconds=0.2)
    first, first_pixels = gated("MR_small_RLE.dcm")
    thread, results = run(lambda: work.transcode(first, ExplicitVRLittleEndian))
    assert first_pixels.reading.wait(30)  # the first holds the one place
    with pytest.raises(TranscodeError, match="capacity busy"):
        work.transcode(read("MR_small_RLE.dcm"), ExplicitVRLittleEndian)
    first_pixels.gate.set()
    thread.join(30)
    assert len(results) == 1 and work.running == work.waiting == 0


def test_an_instance_over_the_size_limit_is_refused_without_waiting_for_a_place() -> None:
    work = Transcoder(max_decoded_bytes=GIB, max_concurrent=1, max_wait_seconds=30)
    first, first_pixels = gated("MR_small_RLE.dcm")
    thread, _ = run(lambda: work.transcode(first, ExplicitVRLittleEndian))
    assert first_pixels.reading.wait(30)  # the one place is taken
    work.max_decoded_bytes = 1000
    # checked before the wait: refused for its size, not "capacity busy" 30 s later
    with pytest.raises(TranscodeError, match="over max_transcode_bytes"):
        work.transcode(read("MR_small_RLE.dcm"), ExplicitVRLittleEndian)
    first_pixels.gate.set()
    thread.join(30)


def test_with_two_places_two_transcodings_run_together() -> None:
    work = transcoder(max_concurrent=2)
    first, first_pixels = gated("MR_small_RLE.dcm")
    second, second_pixels = gated("MR_small_RLE.dcm")
    thread_1, _ = run(lambda: work.transcode(first, ExplicitVRLittleEndian))
    thread_2, _ = run(lambda: work.frame(second, 0))
    assert first_pixels.reading.wait(30) and second_pixels.reading.wait(30)
    assert work.running == 2
    first_pixels.gate.set()
    second_pixels.gate.set()
    thread_1.join(30)
    thread_2.join(30)
    assert work.running == 0


# ------------------------------------------------------------------ DCMTK as a second opinion


def dcmtk(tool: str, *arguments: str | Path) -> str:
    done = subprocess.run(
        [dcmtk_tool(tool), *map(str, arguments)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_twelve_bit_jpeg_extended_decodes_as_dcmtk_does(tmp_path: Path) -> None:
    dcmtk("dcmdjpeg", sample_path("JPGExtended.dcm"), tmp_path / "dcmtk.dcm")
    result = transcoder().transcode(read("JPGExtended.dcm"), ExplicitVRLittleEndian)
    assert_same_pixels(round_trip(result).pixel_array, dcmread(tmp_path / "dcmtk.dcm").pixel_array)


@pytest.mark.parametrize(
    ("options", "syntax", "signed"),
    [
        (["+ee", "+bt"], JPEGExtended12Bit, True),  # 12-bit signed samples
        (["+ee", "+be"], JPEGExtended12Bit, False),  # 8-bit JPEG Extended
        (["+el", "+sv", "6"], JPEGLossless, True),  # Process 14, no sample file has it
    ],
)
def test_dcmtk_encoded_jpeg_decodes_as_dcmtk_decodes_it(
    tmp_path: Path, options: list[str], syntax: UID, signed: bool
) -> None:
    rng = np.random.default_rng(14)
    source = read("MR_small.dcm")  # 64 x 64, signed 16-bit
    if signed:
        samples = rng.integers(-2048, 2048, (64, 64), dtype=np.int16)
        source.BitsStored, source.HighBit, source.PixelRepresentation = 12, 11, 1
    else:
        samples = rng.integers(0, 256, (64, 64), dtype=np.uint8)
        source.BitsAllocated, source.BitsStored, source.HighBit = 8, 8, 7
        source.PixelRepresentation = 0
    source.PixelData = samples.tobytes()
    (tmp_path / "in.dcm").write_bytes(part10(source))
    dcmtk("dcmcjpeg", *options, tmp_path / "in.dcm", tmp_path / "jpeg.dcm")
    dcmtk("dcmdjpeg", tmp_path / "jpeg.dcm", tmp_path / "dcmtk.dcm")
    compressed = dcmread(tmp_path / "jpeg.dcm")
    assert compressed.file_meta.TransferSyntaxUID == syntax

    result = round_trip(transcoder().transcode(compressed, ExplicitVRLittleEndian))
    by_dcmtk = dcmread(tmp_path / "dcmtk.dcm").pixel_array
    assert_same_pixels(result.pixel_array, by_dcmtk)
    if syntax == JPEGLossless:
        assert_same_pixels(result.pixel_array, samples)


@pytest.mark.parametrize(
    ("name", "target", "decompressor"),
    [
        ("emri_small.dcm", JPEGLSLossless, "dcmdjpls"),
        ("SC_rgb_2frame.dcm", JPEGLSLossless, "dcmdjpls"),
        ("MR_small.dcm", RLELossless, "dcmdrle"),
        ("SC_rgb_16bit_2frame.dcm", RLELossless, "dcmdrle"),
        ("US1_J2KR.dcm", RLELossless, "dcmdrle"),
    ],
)
def test_results_are_valid_part10_files_dcmtk_reads_and_decodes(
    tmp_path: Path, name: str, target: UID, decompressor: str
) -> None:
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, target):
        path = tmp_path / f"{syntax}.dcm"
        path.write_bytes(part10(transcoder().transcode(read(name), syntax)))
        dump = dcmtk("dcmdump", "-E", path)
        assert "E:" not in dump and "W:" not in dump, dump[:2000]
    dcmtk(decompressor, tmp_path / f"{target}.dcm", tmp_path / "decoded.dcm")
    decoded = dcmread(tmp_path / "decoded.dcm")
    assert decoded.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert_same_pixels(native(decoded.pixel_array), reference(name))
