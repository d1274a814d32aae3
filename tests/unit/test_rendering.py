"""dicom_node/domain/rendering.py on pydicom's test files: the modality LUT, the
window (given, the data set's, its VOI LUT, or the frame's range), MONOCHROME1,
colour, palette, multi-frame and the viewport."""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from dicom_node.domain.rendering import (
    MAX_SOURCE_PIXELS,
    MediaType,
    RenderError,
    Window,
    WindowFunction,
    apply_window,
    encode,
    fit_within,
    frame_attributes,
    render,
)
from dicom_node.domain.transcode import Transcoder, decoded_photometric_interpretation


def _load(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return pydicom.dcmread(path)


def _frame(dataset: Dataset, index: int = 0) -> np.ndarray[Any, Any]:
    return Transcoder(max_decoded_bytes=1 << 30, max_concurrent=1).frame(dataset, index)


def _render(
    dataset: Dataset, index: int = 0, *, photometric: str | None = None, **options: Any
) -> np.ndarray[Any, Any]:
    photometric = photometric or decoded_photometric_interpretation(dataset)
    image = render(
        _frame(dataset, index), dataset, photometric=photometric, frame_index=index, **options
    )
    return np.asarray(image)


def test_ct_is_rescaled_before_the_window() -> None:
    ct = _load("CT_small.dcm")  # slope 1, intercept -1024, no window of its own
    stored = _frame(ct)
    hounsfield = stored.astype(np.float64) - 1024
    out = _render(ct, window=Window(40, 400, WindowFunction.LINEAR_EXACT))
    # linear-exact: center -> 127.5, center -/+ width/2 -> 0 / 255
    assert np.all(out[hounsfield <= 40 - 200] == 0)
    assert np.all(out[hounsfield >= 40 + 200] == 255)
    middle = np.abs(hounsfield - 40) < 2
    assert middle.any() and np.all(np.abs(out[middle].astype(int) - 128) <= 2)
    # the same window on the stored values (no rescale) would differ
    unscaled = apply_window(stored.astype(np.float64), Window(40, 400, WindowFunction.LINEAR_EXACT))
    assert not np.array_equal(out, np.clip(np.rint(unscaled), 0, 255).astype(np.uint8))


def test_without_a_window_the_frame_range_fills_0_to_255() -> None:
    ct = _load("CT_small.dcm")
    out = _render(ct)
    assert out.min() == 0 and out.max() == 255
    hounsfield = apply_modality_lut(_frame(ct), ct)
    assert out[np.unravel_index(np.argmin(hounsfield), hounsfield.shape)] == 0


def test_the_data_sets_first_window_is_the_default() -> None:
    mr = _load("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600 (linear)
    stored = _frame(mr).astype(np.float64)
    out = _render(mr)
    assert np.array_equal(out, _render(mr, window=Window(600, 1600)))
    near_center = np.abs(stored - 600) < 3
    assert near_center.any() and np.all(np.abs(out[near_center].astype(int) - 128) <= 2)
    assert np.all(out[stored <= 600 - 0.5 - 1599 / 2] == 0)
    # a multi-valued window: the first pair
    two = _load("MR-SIEMENS-DICOM-WithOverlays.dcm")  # [450, 200], [790, 443]
    assert np.array_equal(_render(two), _render(two, window=Window(450, 790)))


def test_a_given_window_overrides_the_data_sets() -> None:
    mr = _load("MR_small.dcm")
    assert not np.array_equal(_render(mr), _render(mr, window=Window(300, 200)))


def test_window_functions_follow_ps3_3() -> None:
    values = np.array([-100.0, 0.0, 49.5, 50.0, 100.0, 200.0])
    linear = apply_window(values, Window(50, 100, WindowFunction.LINEAR))
    exact = apply_window(values, Window(50, 100, WindowFunction.LINEAR_EXACT))
    sigmoid = apply_window(values, Window(50, 100, WindowFunction.SIGMOID))
    assert linear[0] == 0 and linear[-1] == 255 and linear[2] == pytest.approx(127.5)
    assert exact[1] == 0 and exact[4] == 255 and exact[3] == pytest.approx(127.5)
    assert sigmoid[3] == pytest.approx(127.5) and 0 < sigmoid[0] < sigmoid[1] < sigmoid[3]
    assert np.all(np.diff(sigmoid) > 0)
    step = apply_window(values, Window(50, 1))  # linear width 1: a step at the center
    assert list(step) == [0, 0, 0, 255, 255, 255]


def test_invalid_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="window width"):
        Window(50, 0.5, WindowFunction.LINEAR)
    with pytest.raises(ValueError, match="window width"):
        Window(50, 0, WindowFunction.SIGMOID)
    with pytest.raises(ValueError, match="window width"):
        Window(float("nan"), 10)
    Window(50, 0.5, WindowFunction.LINEAR_EXACT)  # above 0 is enough for the others


def test_the_data_sets_voi_lut_function_is_used() -> None:
    mr = _load("MR_small.dcm")
    mr.VOILUTFunction = "SIGMOID"
    assert np.array_equal(
        _render(mr), _render(mr, window=Window(600, 1600, WindowFunction.SIGMOID))
    )


def test_a_voi_lut_applies_when_there_is_no_window() -> None:
    ds = _load("vlut_04.dcm")  # VOI LUT Sequence (16-bit output), no window
    item = ds.VOILUTSequence[0]
    # the file's LUT is the identity scaled to 16 bits; a reversed one shows it is used
    item.LUTData = list(reversed(item.LUTData))
    frame = _frame(ds)
    bits = int(item.LUTDescriptor[2])
    expected = np.clip(np.rint(apply_voi(frame, ds) * 255.0 / (2**bits - 1)), 0, 255)
    out = _render(ds)
    assert np.array_equal(out, expected.astype(np.uint8))
    assert out[np.unravel_index(np.argmax(frame), frame.shape)] == 0
    # a window of the data set comes first
    ds.WindowCenter, ds.WindowWidth = 128, 256
    assert np.array_equal(_render(ds), _render(ds, window=Window(128, 256)))


def test_a_modality_lut_sequence_applies() -> None:
    ds = _load("mlut_18.dcm")  # Modality LUT Sequence
    out = _render(ds, window=Window(2000, 1000, WindowFunction.LINEAR_EXACT))
    mapped = apply_modality_lut(_frame(ds), ds).astype(np.float64)
    expected = np.clip(
        np.rint(apply_window(mapped, Window(2000, 1000, WindowFunction.LINEAR_EXACT))), 0, 255
    )
    assert np.array_equal(out, expected.astype(np.uint8))


def test_monochrome1_is_inverted() -> None:
    mr = _load("MR_small.dcm")
    inverse = copy.deepcopy(mr)
    inverse.PhotometricInterpretation = "MONOCHROME1"
    normal, inverted = _render(mr), _render(inverse)
    assert np.array_equal(inverted.astype(int), 255 - normal.astype(int))
    # a real MONOCHROME1 radiograph: its lowest stored values show white
    rg = _load("RG1_UNCR.dcm")
    frame = _frame(rg)
    out = _render(rg)
    assert out[np.unravel_index(np.argmin(frame), frame.shape)] == out.max()
    assert out[np.unravel_index(np.argmax(frame), frame.shape)] == out.min()
    assert np.array_equal(out.astype(int), 255 - _render(rg, photometric="MONOCHROME2").astype(int))


def test_rgb_and_ybr_full_are_rendered_in_colour() -> None:
    rgb = _load("SC_rgb.dcm")
    out = _render(rgb)
    assert out.shape == (100, 100, 3) and np.array_equal(out, _frame(rgb))
    ybr = _load("SC_ybr_full_uncompressed.dcm")  # the same picture in YBR_FULL
    converted = _render(ybr)
    assert converted.shape == (100, 100, 3)
    # pydicom's YBR copy was rounded when it was made: close, not equal
    difference = np.abs(converted.astype(int) - out.astype(int))
    assert difference.max() <= 8 and difference.mean() < 1
    # a window is a grayscale transformation: colour ignores it
    assert np.array_equal(_render(rgb, window=Window(10, 20)), out)


def test_sixteen_bit_colour_keeps_its_high_bits() -> None:
    ds = _load("SC_rgb_rle_16bit_2frame.dcm")
    out = _render(ds)
    assert out.dtype == np.uint8
    assert np.array_equal(out, (_frame(ds) >> 8).astype(np.uint8))


def test_palette_colour_goes_through_its_palette() -> None:
    ds = _load("OBXXXX1A.dcm")  # PALETTE COLOR, 8-bit entries
    out = _render(ds)
    assert out.shape == (600, 800, 3)
    lut = apply_color_lut(_frame(ds), ds)
    expected = lut if lut.dtype == np.uint8 else (lut >> 8).astype(np.uint8)
    assert np.array_equal(out, expected)


def test_multi_frame_renders_the_frame_asked_for() -> None:
    ds = _load("emri_small.dcm")  # 10 frames
    first, fifth = _render(ds, 0), _render(ds, 4)
    assert first.shape == (64, 64) and not np.array_equal(first, fifth)


def test_functional_groups_give_the_frames_window_and_rescale() -> None:
    ds = _load("MR_small.dcm")
    shared = Dataset()
    voi = Dataset()
    voi.WindowCenter = 300
    voi.WindowWidth = 200
    shared.FrameVOILUTSequence = [voi]
    transform = Dataset()
    transform.RescaleSlope = 2
    transform.RescaleIntercept = 0
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    attributes = frame_attributes(ds, 0)
    assert (attributes.WindowCenter, attributes.WindowWidth, attributes.RescaleSlope) == (
        300,
        200,
        2,
    )
    stored = _frame(ds).astype(np.float64)
    expected = np.clip(np.rint(apply_window(stored * 2, Window(300, 200))), 0, 255)
    assert np.array_equal(_render(ds), expected.astype(np.uint8))


def test_viewport_fits_within_keeping_the_aspect_ratio() -> None:
    assert fit_within(256, 1024, (100, 100)) == (25, 100)
    assert fit_within(640, 480, (128, 128)) == (128, 96)
    assert fit_within(64, 64, (200, 100)) == (100, 100)
    assert fit_within(4000, 1, (128, 128)) == (128, 1)
    us = _load("US1_UNCR.dcm")  # 640 x 480 RGB
    out = _render(us, viewport=(128, 128))
    assert out.shape == (96, 128, 3)


def test_a_frame_that_is_not_an_image_is_refused() -> None:
    mr = _load("MR_small.dcm")
    with pytest.raises(RenderError):
        render(np.zeros((4, 4, 3), np.uint8), mr, photometric="MONOCHROME2")
    with pytest.raises(RenderError):
        render(np.zeros((4, 4, 3), np.uint8), mr, photometric="YBR_PARTIAL_420")


@pytest.mark.parametrize("media_type", list(MediaType))
def test_encoded_images_decode_to_the_same_size(media_type: MediaType) -> None:
    image = Image.fromarray(_render(_load("CT_small.dcm")), mode="L")
    decoded = Image.open(io.BytesIO(encode(image, media_type, quality=80)))
    assert decoded.format == media_type.value.split("/")[1].upper()
    assert decoded.size == (128, 128)
    if media_type is MediaType.PNG:  # lossless
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_odd_attributes_are_a_render_error_not_a_crash() -> None:
    mr = _load("MR_small.dcm")
    mr.ModalityLUTSequence = [Dataset()]  # an item without its LUT
    with pytest.raises(RenderError, match="rendering failed"):
        _render(mr)


def test_a_frame_too_large_to_render_is_refused_before_any_work() -> None:
    mr = _load("MR_small.dcm")
    huge = np.broadcast_to(
        np.uint16(0), (MAX_SOURCE_PIXELS // 4096 + 1, 4096)
    )  # no memory of its own
    with pytest.raises(RenderError, match="Mpixel"):
        render(huge, mr, photometric="MONOCHROME2")
