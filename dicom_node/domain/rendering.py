"""A decoded frame made into an 8-bit image for people (PS3.18 8.3.5 rendered
resources; the grayscale pipeline of PS3.3 C.11 and PS3.4 N.2).

Pure: the caller decodes the frame (``domain/transcode.py Transcoder.frame``) and
passes it with its data set (for the pixel module, the modality and VOI
attributes); nothing here touches a database, a file or HTTP.

Grayscale (MONOCHROME1, MONOCHROME2):
1. the modality LUT: Rescale Slope and Intercept, or a Modality LUT Sequence (of
   the frame's functional groups in an enhanced multi-frame instance, else of the
   data set);
2. the VOI transformation to 0..255: the caller's window if given, else the data
   set's first window (Window Center and Width, with its VOI LUT Function), else
   its first VOI LUT (VOI LUT Sequence), else the frame's own range (min to max
   after the modality LUT, linear-exact);
3. MONOCHROME1 inverted (its minimum is white). A Presentation LUT Shape is not
   applied on top: for MONOCHROME1 it is INVERSE by definition, and the same
   inversion must not happen twice.

Colour: RGB as it is; YBR_FULL (native, and lossless compressed: decoders only
convert lossy JPEG's) converted to RGB; PALETTE COLOR through its palette;
samples over 8 bits scaled to 8 (the most significant bits of Bits Stored). A
window is a grayscale transformation and does not apply to colour (PS3.3 C.11.2).

Size: fit within a viewport keeping the aspect ratio (scaled up or down by
Pillow, Lanczos), square pixels (Pixel Aspect Ratio and unequal Pixel Spacing are
not corrected for).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

from dicom_node.domain.errors import DomainError


class RenderError(DomainError):
    """Why a frame cannot be rendered (short; no value of the instance but its
    image pixel module: fit for a log line and an error body)."""


class WindowFunction(StrEnum):
    """VOI LUT Function (PS3.3 C.11.2.1.3), as PS3.18 8.3.5.1.3 spells it."""

    LINEAR = "linear"
    LINEAR_EXACT = "linear-exact"
    SIGMOID = "sigmoid"

    @classmethod
    def from_dicom(cls, value: object) -> WindowFunction:
        """The data set's VOI LUT Function (LINEAR when absent or unknown)."""
        text = str(value or "").strip().upper()
        return {"LINEAR_EXACT": cls.LINEAR_EXACT, "SIGMOID": cls.SIGMOID}.get(text, cls.LINEAR)


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: WindowFunction = WindowFunction.LINEAR

    def __post_init__(self) -> None:
        # PS3.3 C.11.2.1.2: LINEAR needs a width of at least 1, the others above 0
        smallest_ok = self.width >= 1 if self.function is WindowFunction.LINEAR else self.width > 0
        if not (np.isfinite(self.center) and np.isfinite(self.width) and smallest_ok):
            raise ValueError("window width must be >= 1 (linear) or > 0, values finite")


class MediaType(StrEnum):
    JPEG = "image/jpeg"
    PNG = "image/png"
    GIF = "image/gif"


GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Rendering works in float64 (about 30 bytes a pixel at the peak, with the copies
# numpy and pydicom make): a frame over this many pixels is refused, so one
# request cannot take gigabytes. 32 Mpixel is past the largest projection
# detectors and mammography (under 20 Mpixel); whole-slide images come as tiles.
MAX_SOURCE_PIXELS = 32 * 1024 * 1024
DEFAULT_JPEG_QUALITY = 90


def render(
    frame: np.ndarray[Any, Any],
    dataset: Dataset,
    *,
    photometric: str,
    frame_index: int = 0,
    window: Window | None = None,
    viewport: tuple[int, int] | None = None,
) -> Image.Image:
    """``frame`` (as ``Transcoder.frame`` gives it, in the colour space
    ``photometric`` names) as an 8-bit Pillow image ("L" or "RGB"), fitted within
    ``viewport`` (width, height) when given. RenderError for what cannot be shown."""
    if frame.ndim < 2:
        raise RenderError("a frame of one dimension is not an image")
    rows, columns = frame.shape[:2]
    if rows * columns > MAX_SOURCE_PIXELS:
        raise RenderError(
            f"a {columns} x {rows} frame is over the {MAX_SOURCE_PIXELS >> 20} Mpixel rendered"
        )
    try:
        return _render(frame, dataset, photometric, frame_index, window, viewport)
    except RenderError:
        raise
    except Exception as exc:  # a stored file's odd attributes must not become a 500
        # the type only: the message may quote values of the instance
        raise RenderError(f"rendering failed: {type(exc).__name__}") from None


def _render(
    frame: np.ndarray[Any, Any],
    dataset: Dataset,
    photometric: str,
    frame_index: int,
    window: Window | None,
    viewport: tuple[int, int] | None,
) -> Image.Image:
    if photometric in GRAYSCALE:
        if frame.ndim != 2:
            raise RenderError(f"{photometric} frame with more than one sample per pixel")
        pixels = _grayscale(frame, dataset, frame_index, window, photometric == "MONOCHROME1")
    else:
        pixels = _colour(frame, dataset, photometric)
    image = Image.fromarray(pixels)  # uint8: "L" for 2 dimensions, "RGB" for 3 samples
    if viewport is not None:
        size = fit_within(image.width, image.height, viewport)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def fit_within(width: int, height: int, viewport: tuple[int, int]) -> tuple[int, int]:
    """The largest (width, height) of the same aspect ratio within ``viewport``
    (each side at least 1 pixel)."""
    scale = min(viewport[0] / width, viewport[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(image: Image.Image, media_type: MediaType, *, quality: int | None = None) -> bytes:
    """``image`` in ``media_type``; ``quality`` (1-100) for JPEG only."""
    buffer = io.BytesIO()
    if media_type is MediaType.JPEG:
        image.save(buffer, "JPEG", quality=quality or DEFAULT_JPEG_QUALITY)
    elif media_type is MediaType.PNG:
        # speed over the last few percent of size: a viewer waits for it
        image.save(buffer, "PNG", compress_level=3)
    else:
        image.save(buffer, "GIF")
    return buffer.getvalue()


# ------------------------------------------------------------------ grayscale


def _grayscale(
    frame: np.ndarray[Any, Any],
    dataset: Dataset,
    index: int,
    window: Window | None,
    inverted: bool,
) -> np.ndarray[Any, Any]:
    attributes = frame_attributes(dataset, index)
    values = np.asarray(apply_modality_lut(frame, attributes), dtype=np.float64)
    if window is None:
        window = default_window(attributes)
    if window is not None:
        out = apply_window(values, window)
    elif "VOILUTSequence" in attributes:
        out = _voi_lut(frame, values, attributes)
    else:
        low, high = float(values.min()), float(values.max())
        width = high - low
        if width <= 0:  # a flat frame: all black (after inversion, all white)
            out = np.zeros(values.shape, dtype=np.float64)
        else:
            out = apply_window(values, Window(low + width / 2, width, WindowFunction.LINEAR_EXACT))
    pixels: np.ndarray[Any, Any] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return 255 - pixels if inverted else pixels


def default_window(attributes: Dataset) -> Window | None:
    """The data set's first window (Window Center and Width are multi-valued: one
    pair per choice), or None when it has none usable."""
    center = _first(attributes.get("WindowCenter"))
    width = _first(attributes.get("WindowWidth"))
    if center is None or width is None:
        return None
    try:
        return Window(center, width, WindowFunction.from_dicom(attributes.get("VOILUTFunction")))
    except ValueError:  # a width the standard does not allow: the next choice applies
        return None


def apply_window(values: np.ndarray[Any, Any], window: Window) -> np.ndarray[Any, Any]:
    """PS3.3 C.11.2.1.2 with the output range 0..255 (floats; the caller rounds)."""
    c, w = window.center, window.width
    if window.function is WindowFunction.SIGMOID:
        return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function is WindowFunction.LINEAR_EXACT:
        return np.clip(((values - c) / w + 0.5) * 255.0, 0.0, 255.0)
    if w == 1:  # C.11.2.1.2.1: a step at the center
        return np.where(values <= c - 0.5, 0.0, 255.0)
    return np.clip(((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)


def _voi_lut(
    frame: np.ndarray[Any, Any], values: np.ndarray[Any, Any], attributes: Dataset
) -> np.ndarray[Any, Any]:
    """The first VOI LUT, its output (0 to 2^n - 1, n its third descriptor value)
    scaled to 0..255. A VOI LUT is indexed by the modality LUT's output, which
    must then be whole numbers."""
    item = attributes.VOILUTSequence[0]
    try:
        bits = int(item.LUTDescriptor[2])
        source = values if np.array_equal(values, np.rint(values)) else frame
        mapped = apply_voi(source.astype(np.int64), attributes, index=0)
    except Exception as exc:  # a malformed LUT: say what, not its values
        raise RenderError(f"VOI LUT unusable: {type(exc).__name__}") from None
    top = float(2**bits - 1) if 1 <= bits <= 16 else float(np.max(mapped)) or 1.0
    return np.asarray(mapped, dtype=np.float64) * (255.0 / top)


def frame_attributes(dataset: Dataset, index: int) -> Dataset:
    """The modality and VOI attributes that apply to frame ``index``: the data
    set's own, overridden by the enhanced multi-frame functional groups (shared,
    then the frame's own: Pixel Value Transformation, Frame VOI LUT)."""
    groups = [
        sequence[0] for sequence in (dataset.get("SharedFunctionalGroupsSequence"),) if sequence
    ]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 <= index < len(per_frame):
        groups.append(per_frame[index])
    if not groups:
        return dataset
    attributes = Dataset()
    for keyword in (
        "PhotometricInterpretation",
        "BitsStored",
        "BitsAllocated",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
    ):
        if keyword in dataset:
            setattr(attributes, keyword, dataset.get(keyword))
    for group in groups:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            items = group.get(sequence)
            if items:
                for element in items[0]:
                    attributes[element.tag] = element
    return attributes


def _first(value: object) -> float | None:
    """The first of a multi-valued DS, as a finite float, or None."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # DS, str, int
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


# ------------------------------------------------------------------ colour


def _colour(
    frame: np.ndarray[Any, Any], dataset: Dataset, photometric: str
) -> np.ndarray[Any, Any]:
    if photometric == "PALETTE COLOR":
        if frame.ndim != 2:
            raise RenderError("PALETTE COLOR frame with more than one sample per pixel")
        try:
            rgb = apply_color_lut(frame, dataset)
        except Exception as exc:
            raise RenderError(f"palette unusable: {type(exc).__name__}") from None
        return _to_8_bits(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise RenderError(f"{photometric or 'no photometric interpretation'} is not rendered")
    bits = int(dataset.get("BitsStored") or 8)
    if photometric == "RGB":
        return _to_8_bits(frame, bits)
    if photometric == "YBR_FULL":
        rgb8 = _to_8_bits(frame, bits)
        return np.asarray(convert_color_space(rgb8, "YBR_FULL", "RGB"), dtype=np.uint8)
    raise RenderError(f"{photometric or 'no photometric interpretation'} is not rendered")


def _to_8_bits(samples: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    """The most significant 8 of ``bits`` stored bits, as unsigned bytes."""
    if samples.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(samples)
    shift = max(bits - 8, 0)
    wide = samples.astype(np.int64) >> shift
    narrow: np.ndarray[Any, Any] = np.clip(wide, 0, 255).astype(np.uint8)
    return narrow
