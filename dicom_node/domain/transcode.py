"""Transcoding a stored instance to another transfer syntax (PS3.5 8.2, A.4), and
decoding one frame of it.

Retrieve (scp/retrieve.py) transcodes where a destination accepts none of the
syntaxes an instance is stored in; DICOMweb will decode single frames for its
frames and rendered resources. Pixels are decoded by pydicom 3 with one plugin per
transfer syntax, always the same one (``decoding_plugin``): pydicom, left to itself,
tries every installed plugin in turn and may switch plugins between the frames of
one instance. Every plugin used has a licence that fits the project's Apache-2.0;
pylibjpeg-libjpeg (GPLv3) is not one of them, and GDCM decodes the JPEG processes it
would have (domain/gdcm_jpeg_extended.py for 12-bit JPEG Extended).

What a transcoded instance changes (the input dataset, and so the stored file, is
never changed; the SOP Instance UID is kept: a change of transfer syntax is not a
new instance):
- Decompressed (PS3.5 8.2): Pixel Data native, OB for Bits Allocated 8, else OW;
  Bits Allocated, Bits Stored and Pixel Representation as stored, the samples in
  them as pydicom's ``pixel_array`` gives them; colour by pixel (Planar
  Configuration 0); Photometric Interpretation RGB where the decoder converted the
  colour space (YBR_FULL and YBR_FULL_422 of lossy JPEG, as libjpeg and DCMTK's
  dcmdjpeg do; YBR_ICT and YBR_RCT of JPEG 2000, undone by the codec itself), any
  other value kept (a lossless YBR_FULL stays YBR_FULL: converting it would round);
  the Extended Offset Table and its lengths removed; an Icon Image Sequence with
  encapsulated pixel data removed (Type 3, PS3.3 C.7.6.1).
- From a lossy syntax: Lossy Image Compression "01", with the method and ratio
  appended to (0028,2114) and (0028,2112) when it was not "01" already (PS3.3
  C.7.6.1.1.5); a lossless original stays unmarked, and no mark is ever removed.
- Compressed to a lossless syntax (RLE, JPEG-LS or JPEG 2000 lossless): decoded,
  then encoded frame by frame, one fragment each, with a Basic Offset Table. Lossy
  syntaxes are never produced.
- Explicit VR Big Endian (retired) is read, never written: OW, OF, OL, OD and OV
  values are byte-swapped, Pixel Data by the size of its samples. Values of VR UN
  are copied as they are (their real VR, and so their byte order, is not known).
- Instances without Pixel Data (SR, KOS, presentation states) move between the
  uncompressed and deflated syntaxes only.

Memory: the decoded size (Rows x Columns x Samples per Pixel x Bits Allocated/8 x
Number of Frames) is computed before anything is decoded and refused past
``max_decoded_bytes``. Frames are decoded one at a time into the one buffer that
becomes the new Pixel Data (an ``io.BytesIO``: pydicom's buffered element, written
and sent like bytes), or encoded one at a time, so a transcoding holds the input,
its output and one frame. At most ``max_concurrent`` run at once per Transcoder.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import ENCODING_PROFILES, get_encoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
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

from dicom_node.domain.errors import DomainError

_T = TypeVar("_T")

PIXEL_DATA = 0x7FE00010
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# (7FE0,0001) Extended Offset Table, (7FE0,0002) its lengths, (7FE0,0003)
# Encapsulated Pixel Data Value Total Length: they describe encapsulated pixel data
_ENCAPSULATION_TAGS = (0x7FE00001, 0x7FE00002, 0x7FE00003)
ICON_IMAGE_SEQUENCE = 0x00880200

NATIVE_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
# Big Endian (retired in 2004) is read, never produced
_NATIVE_SOURCES = NATIVE_SYNTAXES | {ExplicitVRBigEndian}

# The pydicom plugin that decodes each syntax, the first one installed of each
# tuple (every one of them is a dependency: the later ones only matter to an
# installation without the first). Why each (docs/conformance.md, decoders): Pillow
# (libjpeg-turbo) decodes JPEG Baseline as GDCM and DCMTK do, faster; GDCM is the
# only licence-compatible JPEG Lossless decoder; CharLS (pyjpegls) is the JPEG-LS
# reference (GDCM's copy fails on 6- and 7-bit samples); OpenJPEG through pylibjpeg
# handles every sample file, where Pillow refuses multi-sample data over 8 bits.
GDCM_EXTENDED_PLUGIN = "dicom-node-gdcm"
_DECODING_PLUGINS: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: ("pillow", "gdcm"),
    JPEGExtended12Bit: (GDCM_EXTENDED_PLUGIN, "pillow"),
    JPEGLossless: ("gdcm",),
    JPEGLosslessSV1: ("gdcm",),
    JPEGLSLossless: ("pyjpegls", "gdcm"),
    JPEGLSNearLossless: ("pyjpegls", "gdcm"),
    JPEG2000Lossless: ("pylibjpeg", "gdcm"),
    JPEG2000: ("pylibjpeg", "gdcm"),
    HTJ2KLossless: ("pylibjpeg",),
    HTJ2KLosslessRPCL: ("pylibjpeg",),
    HTJ2K: ("pylibjpeg",),
    RLELossless: ("pylibjpeg", "pydicom"),
}
# The lossless compressed syntaxes produced, and their encoder (pydicom 3.0 has none
# for HTJ2K: listed for when it does)
_ENCODING_PLUGINS: dict[str, tuple[str, ...]] = {
    RLELossless: ("pylibjpeg", "pydicom"),
    JPEGLSLossless: ("pyjpegls",),
    JPEG2000Lossless: ("pylibjpeg",),
    HTJ2KLossless: ("pylibjpeg",),
    HTJ2KLosslessRPCL: ("pylibjpeg",),
}
# Decoders that convert YBR_FULL and YBR_FULL_422 to RGB (lossy JPEG: the colour
# transform is part of the codec, PS3.5 8.2.1); elsewhere YCbCr stays YCbCr
_TO_RGB = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_JPEG_2000_FAMILY = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})

# Lossy syntaxes (PS3.5 Table A-1 and Annex A.4) and the Lossy Image Compression
# Method each implies (PS3.3 C.7.6.1.1.5.1, defined terms)
_JPEG_LOSSY = "ISO_10918_1"
_LOSSY_METHODS: dict[str, str] = {
    **{f"1.2.840.10008.1.2.4.{n}": _JPEG_LOSSY for n in (50, 51, 52, 53, 54, 55, 56)},
    **{f"1.2.840.10008.1.2.4.{n}": _JPEG_LOSSY for n in range(58, 65)},
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",  # JPEG 2000 Part 2 multi-component
    **{
        uid: "ISO_13818_2"  # MPEG-2
        for uid in (
            "1.2.840.10008.1.2.4.100",
            "1.2.840.10008.1.2.4.100.1",
            "1.2.840.10008.1.2.4.101",
            "1.2.840.10008.1.2.4.101.1",
        )
    },
    **{
        f"1.2.840.10008.1.2.4.{n}{suffix}": "ISO_14496_10"  # MPEG-4 AVC/H.264
        for n in range(102, 107)
        for suffix in ("", ".1")
    },
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",  # HEVC/H.265
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",
    "1.2.840.10008.1.2.4.111": _JPEG_LOSSY,  # JPEG XL recompression of a JPEG
    "1.2.840.10008.1.2.4.112": "ISO_18181_1",  # JPEG XL
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K
}


class TranscodeError(DomainError):
    """Why an instance cannot be transcoded. ``reason`` (also ``str(exc)``) is short
    and holds no patient data and no value of the instance but its image pixel
    module: fit for a log line, a status's Error Comment and the audit trail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TranscoderBusy(TranscodeError):
    """Every transcoding place stayed taken for the whole wait: nothing is wrong
    with the instance, the request may succeed later (HTTP 503, Retry-After)."""


# ------------------------------------------------------------------ what is installed


def decoding_plugin(transfer_syntax: str) -> str | None:
    """The pydicom plugin that decodes ``transfer_syntax`` here (None: no decoder
    installed, or nothing to decode: a native syntax)."""
    preference = _DECODING_PLUGINS.get(str(transfer_syntax), ())
    if not preference:
        return None
    available = get_decoder(transfer_syntax).available_plugins
    return next((plugin for plugin in preference if plugin in available), None)


def encoding_plugin(transfer_syntax: str) -> str | None:
    """The pydicom plugin that encodes the lossless ``transfer_syntax`` here."""
    preference = _ENCODING_PLUGINS.get(str(transfer_syntax), ())
    if not preference:
        return None
    try:
        available = get_encoder(transfer_syntax).available_plugins
    except NotImplementedError:  # pydicom has no encoder for it at all
        return None
    return next((plugin for plugin in preference if plugin in available), None)


def can_decode(transfer_syntax: str) -> bool:
    """Whether an instance in ``transfer_syntax`` can be read to its pixels here:
    a native or deflated syntax, or a compressed one with a decoder installed."""
    return str(transfer_syntax) in _NATIVE_SOURCES or decoding_plugin(transfer_syntax) is not None


def can_encode(transfer_syntax: str) -> bool:
    """Whether an instance can be transcoded to ``transfer_syntax``: Explicit and
    Implicit VR Little Endian and Deflated always, RLE, JPEG-LS and JPEG 2000
    lossless where an encoder is installed, a lossy syntax never."""
    return str(transfer_syntax) in NATIVE_SYNTAXES or encoding_plugin(transfer_syntax) is not None


def is_lossy(transfer_syntax: str) -> bool:
    """Whether ``transfer_syntax`` is a lossy one (PS3.5 Table A-1)."""
    return str(transfer_syntax) in _LOSSY_METHODS


# ------------------------------------------------------------------ facts of a dataset


def frame_count(dataset: Dataset) -> int:
    """Number of Frames, 1 when absent, empty or 0 (as pydicom reads a single frame).
    Raises TranscodeError for a value that is not a whole number."""
    value = dataset.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise TranscodeError("Number of Frames is not a number") from None
    if count < 0:
        raise TranscodeError("Number of Frames is negative")
    return max(count, 1)


def decoded_photometric_interpretation(dataset: Dataset) -> str:
    """The Photometric Interpretation of the pixels ``frame`` returns, and of a
    compressed instance ``transcode`` decompresses (a native one keeps its own)."""
    source = _source_syntax(dataset)
    value = str(dataset.get("PhotometricInterpretation", "") or "")
    if source in _TO_RGB and value in ("YBR_FULL", "YBR_FULL_422"):
        return "RGB"
    if source in _JPEG_2000_FAMILY and value in ("YBR_ICT", "YBR_RCT"):
        return "RGB"
    if source in _NATIVE_SOURCES and value == "YBR_FULL_422":
        return "YBR_FULL"  # pydicom expands the horizontally subsampled chroma
    return value


@dataclass(frozen=True, slots=True)
class _Image:
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    frames: int

    @property
    def frame_bytes(self) -> int:
        """One native frame (a 1-bit one unpacked: one byte a pixel)."""
        return self.rows * self.columns * self.samples * max(self.bits_allocated // 8, 1)

    @property
    def total_bytes(self) -> int:
        bits = self.rows * self.columns * self.samples * self.bits_allocated * self.frames
        return (bits + 7) // 8

    @property
    def dtype(self) -> np.dtype[Any]:
        """Little-endian samples as stored natively (PS3.5 8.1.1)."""
        return np.dtype(f"<{'i' if self.signed else 'u'}{self.bits_allocated // 8}")


def _image(dataset: Dataset) -> _Image:
    def number(keyword: str, default: int | None = None) -> int:
        value = dataset.get(keyword)
        if value is None or value == "":
            if default is None:
                raise TranscodeError(f"image pixel module incomplete: no {keyword}")
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TranscodeError(f"{keyword} is not a number") from None

    bits_allocated = number("BitsAllocated")
    image = _Image(
        rows=number("Rows"),
        columns=number("Columns"),
        samples=number("SamplesPerPixel", 1),
        bits_allocated=bits_allocated,
        bits_stored=number("BitsStored", bits_allocated),
        signed=number("PixelRepresentation", 0) == 1,
        frames=frame_count(dataset),
    )
    if bits_allocated != 1 and (bits_allocated % 8 or not 8 <= bits_allocated <= 64):
        raise TranscodeError(f"Bits Allocated {bits_allocated} is not 1 or 8 to 64 by 8")
    if min(image.rows, image.columns, image.samples) < 1:
        raise TranscodeError("image pixel module has an empty dimension")
    return image


def _source_syntax(dataset: Dataset) -> UID:
    meta = getattr(dataset, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if not value:
        raise TranscodeError("no Transfer Syntax UID in the file meta information")
    return UID(str(value))


def _syntax_name(uid: str) -> str:
    """A syntax's name for a reason: its name if pydicom knows it, else the UID if it
    looks like one (a peer may have chosen it), else nothing of it."""
    name = UID(uid).name
    if name != uid:
        return name
    if _UID_FORM.fullmatch(uid):
        return f"transfer syntax {uid}"
    return "an unknown transfer syntax"


_UID_FORM = re.compile(r"[0-9.]{1,64}")


# ------------------------------------------------------------------ the transcoder


class Transcoder:
    """Transcoding and frame decoding under two limits: the decoded size of one
    instance (settings.max_transcode_bytes) and how many run at once in the process
    (settings.max_concurrent_transcodes; one Transcoder per process, shared)."""

    def __init__(
        self, *, max_decoded_bytes: int, max_concurrent: int, max_wait_seconds: float = 60.0
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_decoded_bytes = max_decoded_bytes
        self.max_concurrent = max_concurrent
        # a caller (a sub-operation, its peer waiting on the association) gives up
        # after this long rather than queue behind every other transcoding for ever
        self.max_wait_seconds = max_wait_seconds
        self._condition = threading.Condition()
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        """Transcodings and frame decodings under way."""
        with self._condition:
            return self._running

    @property
    def waiting(self) -> int:
        """Callers waiting for one of the ``max_concurrent`` places."""
        with self._condition:
            return self._waiting

    def transcode(self, dataset: Dataset, target: str) -> Dataset:
        """A new dataset in ``target`` (its file meta Transfer Syntax UID set to it),
        ``dataset`` left untouched. Waits while ``max_concurrent`` others run.
        Raises TranscodeError."""
        source = _source_syntax(dataset)
        target = UID(str(target))
        if target != source:
            if is_lossy(target):
                raise TranscodeError(f"lossy {_syntax_name(target)} is never produced")
            if not can_encode(target):
                raise TranscodeError(f"no encoder for {_syntax_name(target)}")
            _check_decoded_size(dataset, source, target, self.max_decoded_bytes)
        with self.place():
            return _guarded(lambda: _transcode(dataset, source, target, self.max_decoded_bytes))

    def frame(self, dataset: Dataset, index: int) -> np.ndarray[Any, Any]:
        """``decode_frame`` in a place of its own (waiting while ``max_concurrent``
        others run). What refuses a frame is checked before the place is taken:
        a frame that will be refused does not wait for one."""
        self._frame_plugin(dataset, index)
        with self.place():
            return self.decode_frame(dataset, index)

    def decode_frame(self, dataset: Dataset, index: int) -> np.ndarray[Any, Any]:
        """Frame ``index`` (0-based) decoded, alone where the syntax allows (pydicom
        finds the frame's fragments without decoding the others): shaped (rows,
        columns) or (rows, columns, samples), samples in native byte order, in the
        colour space ``decoded_photometric_interpretation`` names. IndexError for a
        frame the instance does not have; TranscodeError otherwise.

        Takes no place: the caller holds one (``place``), for the decoding and
        whatever it does around it (reading the file, rendering), so that the
        whole of one request counts once against ``max_concurrent``. Taking a
        second place inside the first would deadlock at ``max_concurrent`` 1."""
        source, plugin = self._frame_plugin(dataset, index)
        array = _guarded(lambda: _decode_one(dataset, source, plugin, index))
        if array.dtype.byteorder not in ("=", "|"):
            array = array.astype(array.dtype.newbyteorder("="))
        return array

    def _frame_plugin(self, dataset: Dataset, index: int) -> tuple[UID, str]:
        """The source syntax and decoder of frame ``index``, or why it is refused."""
        source = _source_syntax(dataset)
        if _pixel_keyword(dataset) is None:
            raise TranscodeError("no pixel data")
        image = _image(dataset)
        if not 0 <= index < image.frames:
            raise IndexError(f"frame {index} of {image.frames}")
        if image.frame_bytes > self.max_decoded_bytes:
            raise TranscodeError(_over_limit("decoded frame", image.frame_bytes))
        return source, _decoder_for(source)

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        """One of the ``max_concurrent`` places, waiting for one to be free
        (TranscoderBusy after ``max_wait_seconds``). Taken by ``transcode`` and
        ``frame`` themselves; public for work that must share their limit."""
        with self._condition:
            self._waiting += 1
            try:
                free = self._condition.wait_for(
                    lambda: self._running < self.max_concurrent, timeout=self.max_wait_seconds
                )
            finally:
                self._waiting -= 1
            if not free:
                raise TranscoderBusy(
                    f"transcoding capacity busy ({self.max_concurrent} running) "
                    f"for {self.max_wait_seconds:g} s"
                )
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify()


def _check_decoded_size(dataset: Dataset, source: UID, target: UID, limit: int) -> None:
    """The size limit, checked before a place is taken (an instance over it must
    not wait for a slot only to be refused). Only where pixels will be decoded;
    ``_transcode`` checks again (it is also the one place that decides whether
    to decode)."""
    if _pixel_keyword(dataset) != "PixelData":
        return
    if source in _NATIVE_SOURCES and target in NATIVE_SYNTAXES:
        return
    image = _guarded(lambda: _image(dataset))
    if image.total_bytes > limit:
        raise TranscodeError(_over_limit("decoded pixel data", image.total_bytes))


def _guarded(work: Callable[[], _T]) -> _T:
    """``work()``, with any failure but a TranscodeError turned into one that names
    the exception's type only (its message may quote values of the instance)."""
    try:
        return work()
    except TranscodeError:
        raise
    except MemoryError:
        raise TranscodeError("out of memory while transcoding") from None
    except Exception as exc:
        raise TranscodeError(f"transcoding failed: {type(exc).__name__}") from None


def _over_limit(what: str, size: int) -> str:
    return f"{what} {_size(size)} over max_transcode_bytes"


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _decoder_for(source: UID) -> str:
    """The plugin for ``source`` ("" for a native syntax); TranscodeError if none."""
    if source in _NATIVE_SOURCES:
        return ""
    plugin = decoding_plugin(source)
    if plugin is None:
        raise TranscodeError(f"no decoder for {_syntax_name(source)}")
    return plugin


def _pixel_keyword(dataset: Dataset) -> str | None:
    return next((keyword for keyword in _PIXEL_KEYWORDS if keyword in dataset), None)


# ------------------------------------------------------------------ transcoding


def _transcode(dataset: Dataset, source: UID, target: UID, limit: int) -> Dataset:
    keyword = _pixel_keyword(dataset)
    if target == source:
        return _copy(dataset)
    if keyword != "PixelData":
        if target not in NATIVE_SYNTAXES:
            # PS3.5 A.4 would allow it (the data set is Explicit VR Little Endian),
            # but a peer that took a compressed syntax expects pixels in it
            what = "no pixel data" if keyword is None else "float pixel data"
            raise TranscodeError(f"{what} to compress: send it uncompressed")
        result = _copy(dataset)
        if source not in _NATIVE_SOURCES:
            _drop_encapsulated_icons(result)
        if source == ExplicitVRBigEndian:
            _to_little_endian(result, None, limit)
        _set_syntax(result, target)
        return result
    if source in _NATIVE_SOURCES and target in NATIVE_SYNTAXES:
        result = _copy(dataset)
        if source == ExplicitVRBigEndian:
            _to_little_endian(result, _image(dataset), limit)
        _set_syntax(result, target)
        return result
    image = _image(dataset)

    # pixels decoded: from a compressed syntax, to one, or both
    plugin = _decoder_for(source)
    if image.bits_allocated == 1:
        raise TranscodeError("1-bit pixel data cannot be compressed")
    if image.total_bytes > limit:
        raise TranscodeError(_over_limit("decoded pixel data", image.total_bytes))
    frames = _decoded_frames(dataset, source, plugin, image)
    result = _copy(dataset)
    compressed_bytes = _value_length(dataset.get_item(PIXEL_DATA).value)
    del result[PIXEL_DATA]
    for tag in _ENCAPSULATION_TAGS:
        if tag in result:
            del result[tag]
    if source not in _NATIVE_SOURCES:
        _drop_encapsulated_icons(result)
    if source == ExplicitVRBigEndian:
        _to_little_endian(result, None, limit)
    if target in NATIVE_SYNTAXES:
        _store_native(result, frames, image)
    else:
        _store_encoded(result, frames, image, target)
    if is_lossy(source):
        _mark_lossy(result, source, image.total_bytes / max(compressed_bytes, 1))
    _set_syntax(result, target)
    return result


def _copy(dataset: Dataset) -> Dataset:
    """A deep copy sharing the (immutable or never written) pixel data value, and
    not copying the file object a FileDataset was read from."""
    memo: dict[int, Any] = {}
    for keyword in _PIXEL_KEYWORDS:
        if keyword in dataset:
            value = dataset.get_item(keyword).value
            memo[id(value)] = value
    source_buffer = getattr(dataset, "buffer", None)
    if source_buffer is not None:
        memo[id(source_buffer)] = None
    return copy.deepcopy(dataset, memo)


def _set_syntax(result: Dataset, target: UID) -> None:
    meta = getattr(result, "file_meta", None)
    if meta is None:
        meta = result.file_meta = FileMetaDataset()
    meta.TransferSyntaxUID = target
    # The data set is now in the target's encoding (every compressed syntax is
    # Explicit VR Little Endian, PS3.5 A.4). pynetdicom picks the context from
    # this encoding as much as from the file meta: an Implicit VR source re-encoded
    # to JPEG 2000, or a Big Endian one decoded, would otherwise be looked for in
    # an Implicit VR or Big Endian context. Top-level elements still raw from the
    # source are converted first (iterating does it), so none is written in the
    # source's encoding; sequence items keep theirs and pydicom converts them.
    for _element in result:
        pass
    result.set_original_encoding(target.is_implicit_VR, target.is_little_endian)
    # PS3.10 7.1: required in a Part 10 file; a stored file has them, a dataset
    # made in memory may not
    for meta_keyword, keyword in _MEDIA_STORAGE:
        if not meta.get(meta_keyword) and result.get(keyword):
            setattr(meta, meta_keyword, result.get(keyword))


_MEDIA_STORAGE = (
    ("MediaStorageSOPClassUID", "SOPClassUID"),
    ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
)


def _value_length(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, io.BufferedIOBase | io.BytesIO):
        position = value.tell()
        try:
            return value.seek(0, io.SEEK_END)
        finally:
            value.seek(position)
    return 0


def _drop_encapsulated_icons(result: Dataset) -> None:
    """Remove an Icon Image Sequence whose pixel data is encapsulated: it cannot
    stay so in a native syntax, and the sequence is Type 3 (PS3.3 C.7.6.1)."""
    if ICON_IMAGE_SEQUENCE not in result:
        return
    for item in result[ICON_IMAGE_SEQUENCE].value:
        if "PixelData" in item and item["PixelData"].is_undefined_length:
            del result[ICON_IMAGE_SEQUENCE]
            return


def _decoded_frames(
    dataset: Dataset, source: UID, plugin: str, image: _Image
) -> Iterator[tuple[np.ndarray[Any, Any], dict[str, Any]]]:
    """The frames, decoded one at a time, as pydicom's ``pixel_array`` has them."""
    options: dict[str, Any] = {"as_rgb": source in _TO_RGB}
    arrays = get_decoder(source).iter_array(dataset, decoding_plugin=plugin, **options)
    what = f"decoder failed ({plugin})" if plugin else "pixel data unreadable"
    for _ in range(image.frames):
        try:
            array, properties = next(arrays)
        except StopIteration:
            raise TranscodeError("fewer frames in the pixel data than Number of Frames") from None
        except TranscodeError:
            raise
        except Exception as exc:
            raise TranscodeError(f"{what}: {type(exc).__name__}") from None
        yield _conform(array, image), properties


def _decode_one(dataset: Dataset, source: UID, plugin: str, index: int) -> np.ndarray[Any, Any]:
    try:
        options: dict[str, Any] = {"as_rgb": source in _TO_RGB}
        array, _ = get_decoder(source).as_array(
            dataset, index=index, decoding_plugin=plugin, **options
        )
    except Exception as exc:
        what = f"decoder failed ({plugin})" if plugin else "pixel data unreadable"
        raise TranscodeError(f"{what}: {type(exc).__name__}") from None
    return array


def _conform(array: np.ndarray[Any, Any], image: _Image) -> np.ndarray[Any, Any]:
    """A decoded frame in the stored sample type (a plugin may return 8-bit
    samples for an 8-bit codestream in 16 bits allocated, as pixel_array does not)."""
    if array.size != image.rows * image.columns * image.samples:
        raise TranscodeError("decoded frame does not match Rows, Columns and Samples per Pixel")
    dtype = image.dtype
    if array.dtype.itemsize > dtype.itemsize:
        raise TranscodeError("decoded samples wider than Bits Allocated")
    return np.ascontiguousarray(array, dtype=dtype)


def _store_native(
    result: Dataset,
    frames: Iterator[tuple[np.ndarray[Any, Any], dict[str, Any]]],
    image: _Image,
) -> None:
    """The frames as native Pixel Data (PS3.5 8.1.1), written once into their place."""
    length = image.total_bytes + image.total_bytes % 2
    buffer = io.BytesIO()
    buffer.seek(length - 1)
    buffer.write(b"\x00")  # one allocation of the whole value, padding included
    buffer.seek(0)
    last: dict[str, Any] = {}
    for array, properties in frames:
        buffer.write(array.data)
        last = properties
    buffer.seek(0)
    vr = "OB" if image.bits_allocated <= 8 else "OW"
    result[PIXEL_DATA] = DataElement(PIXEL_DATA, vr, buffer)
    _set_decoded_pixel_module(result, image, last)


def _store_encoded(
    result: Dataset,
    frames: Iterator[tuple[np.ndarray[Any, Any], dict[str, Any]]],
    image: _Image,
    target: UID,
) -> None:
    """The frames encoded in ``target``, one fragment each (PS3.5 A.4)."""
    plugin = encoding_plugin(target)
    if plugin is None:
        raise TranscodeError(f"no encoder for {_syntax_name(target)}")
    encoder = get_encoder(target)
    first = next(frames, None)
    if first is None:
        raise TranscodeError("no frame in the pixel data")
    photometric = str(first[1]["photometric_interpretation"])
    options: dict[str, Any] = {
        "rows": image.rows,
        "columns": image.columns,
        "samples_per_pixel": image.samples,
        "bits_allocated": image.bits_allocated,
        "bits_stored": image.bits_stored,
        "pixel_representation": int(image.signed),
        "photometric_interpretation": photometric,
        "number_of_frames": 1,
    }
    if image.samples > 1:
        options["planar_configuration"] = 0
    if not _fits_profile(target, options):
        raise TranscodeError(
            f"{_syntax_name(target)} cannot hold {photometric} with {image.samples} "
            f"sample(s) of {image.bits_stored} bits in {image.bits_allocated}"
        )
    encoded: list[bytes] = []
    last = first[1]
    for array, properties in itertools.chain([first], frames):
        try:
            encoded.append(encoder.encode(array, encoding_plugin=plugin, **options))
        except Exception as exc:
            raise TranscodeError(f"encoder failed ({plugin}): {type(exc).__name__}") from None
        last = properties
    # PS3.5 A.4: a Basic Offset Table, unless the offsets do not fit its 32 bits
    if sum(8 + len(frame) + len(frame) % 2 for frame in encoded[:-1]) > 0xFFFFFFFF:
        value, offsets, lengths = encapsulate_extended(encoded)
        result.ExtendedOffsetTable = offsets
        result.ExtendedOffsetTableLengths = lengths
    else:
        value = encapsulate(encoded)
    del encoded
    element = DataElement(PIXEL_DATA, "OB", value, is_undefined_length=True)
    result[PIXEL_DATA] = element
    _set_decoded_pixel_module(result, image, last)


def _fits_profile(target: UID, options: dict[str, Any]) -> bool:
    """Whether PS3.5 8.2 allows the image in ``target`` (pydicom's table of it)."""
    profiles = ENCODING_PROFILES.get(target)
    if profiles is None:
        return True
    return any(
        options["photometric_interpretation"] == photometric
        and options["samples_per_pixel"] == samples
        and options["pixel_representation"] in representations
        and options["bits_allocated"] in allocated
        and options["bits_stored"] in stored
        for photometric, samples, representations, allocated, stored in profiles
    )


def _set_decoded_pixel_module(result: Dataset, image: _Image, properties: dict[str, Any]) -> None:
    """The Image Pixel module of decoded pixels (PS3.3 C.7.6.3.1.2, PS3.5 8.2)."""
    if "photometric_interpretation" in properties:
        result.PhotometricInterpretation = str(properties["photometric_interpretation"])
    if image.samples > 1:
        result.PlanarConfiguration = 0  # pydicom returns colour by pixel


def _mark_lossy(result: Dataset, source: UID, ratio: float) -> None:
    """PS3.3 C.7.6.1.1.5: once lossy, always marked lossy; the method and ratio of
    the compression are appended when the instance did not say so already."""
    if str(result.get("LossyImageCompression", "") or "") == "01":
        return
    result.LossyImageCompression = "01"
    result.LossyImageCompressionMethod = [
        *_values(result, "LossyImageCompressionMethod"),
        _LOSSY_METHODS[source],
    ]
    result.LossyImageCompressionRatio = [
        *_values(result, "LossyImageCompressionRatio"),
        f"{ratio:.2f}"[:16],
    ]


def _values(dataset: Dataset, keyword: str) -> list[Any]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list):
        return list(value)
    return [value]


# ------------------------------------------------------------------ big endian


_SWAP_WIDTHS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_SWAP_CHUNK = 1_048_576


def _to_little_endian(dataset: Dataset, image: _Image | None, limit: int) -> None:
    """Convert a dataset read as Explicit VR Big Endian for a little-endian syntax:
    pydicom re-encodes the values it parses (US, FL, AT...) but writes OB-like
    values as they are, so OW, OF, OL, OD and OV are byte-swapped here (PS3.5 7.3).
    Pixel Data in OW is swapped by its samples (words for 1- and 8-bit ones), in
    chunks into a new buffer; ``image`` None: Pixel Data is handled elsewhere."""
    for tag in list(dataset.keys()):
        element = dataset[tag]
        if element.VR == "SQ":
            for item in element.value:
                _to_little_endian(item, None, limit)
            continue
        width = _SWAP_WIDTHS.get(str(element.VR))
        if width is None or element.value is None:
            continue
        if tag == PIXEL_DATA and image is not None:
            if image.bits_allocated > 16:
                width = image.bits_allocated // 8
            size = _value_length(element.value)
            if size > limit:
                raise TranscodeError(_over_limit("pixel data", size))
            element.value = _swapped_buffer(element.value, width)
        elif tag == PIXEL_DATA:
            continue
        elif isinstance(element.value, bytes):
            element.value = _swapped(element.value, width)
    dataset.set_original_encoding(False, True)


def _swapped(data: bytes, width: int) -> bytes:
    usable = len(data) - len(data) % width
    swapped = np.frombuffer(data, dtype=f">u{width}", count=usable // width).astype(f"<u{width}")
    return swapped.tobytes() + data[usable:]


def _swapped_buffer(value: Any, width: int) -> io.BytesIO:
    data = value if isinstance(value, bytes) else value.read()
    buffer = io.BytesIO()
    step = _SWAP_CHUNK - _SWAP_CHUNK % width
    for start in range(0, len(data), step):
        buffer.write(_swapped(data[start : start + step], width))
    buffer.seek(0)
    return buffer


# ------------------------------------------------------------------ pydicom set-up


class _PluginFailureRecords(logging.Filter):
    """Drops pydicom's record of a codec plugin's exception: it logs each with its
    traceback and message (which may quote the instance's values) at ERROR; the
    failure reaches the caller as one TranscodeError instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _set_up_pydicom() -> None:
    for name in ("pydicom.pixels.decoders.base", "pydicom.pixels.encoders.base"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PluginFailureRecords) for f in logger.filters):
            logger.addFilter(_PluginFailureRecords())
    # GDCM's 12-bit JPEG Extended decoding, as a plugin of pydicom's decoder
    with contextlib.suppress(ValueError):  # added already (a module reload)
        get_decoder(JPEGExtended12Bit).add_plugin(
            GDCM_EXTENDED_PLUGIN, ("dicom_node.domain.gdcm_jpeg_extended", "decode_frame")
        )


_set_up_pydicom()
