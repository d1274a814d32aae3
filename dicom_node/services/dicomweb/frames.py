"""Frames of a stored instance for WADO-RS ``frames/{list}`` and the pixel data
bulk data, as multipart parts.

- Native stored (Implicit or Explicit VR Little Endian) and asked uncompressed:
  each frame's bytes are read from the file at their offset, nothing decoded.
- Compressed stored and asked as stored: each frame's fragments, read from the
  file at the pixel data's offset (pydicom's ``get_frame`` through the Basic or
  Extended Offset Table, reading only the fragments it needs).
- Otherwise (compressed, Big Endian or Deflated stored, asked uncompressed):
  the instance is read and each frame decoded by the process's Transcoder
  (its size limit and concurrency places), one frame at a time as the
  response is written; the file is read and the first frame decoded in one
  place before the answer starts, so an instance that cannot be decoded is a
  406, not a cut stream. Decoded samples are little endian, colour by pixel, in the colour
  space ``decoded_photometric_interpretation`` names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from dicom_node.domain.errors import InvalidValue, NotFound
from dicom_node.domain.part10_source import read_stored_instance
from dicom_node.domain.transcode import TranscodeError, Transcoder, TranscoderBusy, frame_count
from dicom_node.services.dicomweb.metadata import (
    PIXEL_DATA,
    UNDEFINED_LENGTH,
    PixelLocation,
    StoredHeader,
)
from dicom_node.services.dicomweb.multipart import (
    Part,
    PartUnavailable,
    bytes_chunks,
    file_chunks,
)
from dicom_node.services.dicomweb.negotiation import FrameForm, NotAcceptable

log = logging.getLogger(__name__)

MAX_FRAMES_LISTED = 10_000
_RAW_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5] (1-based, in the order written); InvalidValue. A
    repeated number is sent once, where it first appears (``3,1,3`` -> [3, 1]):
    one URL cannot ask for the same decoding thousands of times."""
    pieces = text.split(",")
    if len(pieces) > MAX_FRAMES_LISTED:
        raise InvalidValue(f"more than {MAX_FRAMES_LISTED} frames listed")
    numbers = []
    for piece in pieces:
        piece = piece.strip()
        if not piece.isdigit() or not piece.isascii() or len(piece) > 9 or int(piece) < 1:
            raise InvalidValue("a frame list is 1-based frame numbers separated by commas")
        numbers.append(int(piece))
    return list(dict.fromkeys(numbers))


def frame_parts(
    header: StoredHeader,
    path: Path,
    numbers: list[int],
    form: FrameForm,
    transcoder: Transcoder,
    *,
    max_dataset_bytes: int,
) -> list[Part]:
    """The parts for frames ``numbers`` (1-based). NotFound for an instance
    without pixel data or a frame it does not have; NotAcceptable."""
    pixel = header.pixel
    if pixel is None:
        raise NotFound("the instance has no pixel data")
    try:
        count = frame_count(header.dataset)
    except TranscodeError as exc:
        raise NotAcceptable(exc.reason) from None
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"frame {missing[0]} of an instance of {count} frame(s)")
    if not form.native:
        if pixel.length != UNDEFINED_LENGTH or pixel.value_offset < 0:
            raise NotAcceptable("the pixel data is not encapsulated")
        return [
            Part(form.content_type, _stored_frame(path, pixel, header.dataset, n - 1, count))
            for n in numbers
        ]
    raw = _raw_frame_bytes(header, pixel)
    if raw is not None:
        if count * raw > pixel.length:
            raise NotAcceptable("the pixel data is shorter than its frames")
        return [
            Part(
                form.content_type,
                _file_part(path, pixel.value_offset + (n - 1) * raw, raw),
            )
            for n in numbers
        ]
    return _decoded_parts(path, numbers, form, transcoder, max_dataset_bytes)


def _raw_frame_bytes(header: StoredHeader, pixel: PixelLocation) -> int | None:
    """The size of one native frame where it can be read from the file as it
    is, else None (to be decoded)."""
    if header.transfer_syntax not in _RAW_SYNTAXES or pixel.value_offset < 0:
        return None
    if pixel.tag != PIXEL_DATA or pixel.length == UNDEFINED_LENGTH:
        return None
    dataset = header.dataset
    try:
        bits = int(dataset.BitsAllocated)
        size = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return None
    if bits % 8 or size < 1:
        return None  # 1-bit frames are not byte aligned: decoded (unpacked)
    if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        return None  # subsampled: decoded to full YBR, as pydicom does
    return size * bits // 8


def _file_part(path: Path, offset: int, length: int) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            yield from file_chunks(path, offset=offset, length=length)
        except OSError as exc:
            log.error("stored instance unreadable for a frame: %s", type(exc).__name__)
            raise PartUnavailable from None

    return chunks


def _stored_frame(
    path: Path, pixel: PixelLocation, dataset: Dataset, index: int, count: int
) -> Callable[[], Iterator[bytes]]:
    """A compressed frame as stored: its fragments, found through the offset tables."""
    extended = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        extended = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)

    def chunks() -> Iterator[bytes]:
        try:
            with path.open("rb") as source:
                source.seek(pixel.value_offset)
                frame = get_frame(source, index, extended_offsets=extended, number_of_frames=count)
        except Exception as exc:  # missing file, damaged encapsulation: pydicom raises many kinds
            log.error("stored frame unreadable: %s", type(exc).__name__)
            raise PartUnavailable from None
        yield from bytes_chunks(frame)

    return chunks


def _decoded_parts(
    path: Path,
    numbers: list[int],
    form: FrameForm,
    transcoder: Transcoder,
    max_dataset_bytes: int,
) -> list[Part]:
    """Frames decoded by the Transcoder, the first before the answer starts: the
    file's read and that decoding in one transcoding place (the read holds the
    whole data set: it counts against max_concurrent_transcodes too); each later
    frame in a place of its own, taken when its turn comes (a place is not held
    while a slow client reads)."""
    with transcoder.place():
        try:
            dataset = read_stored_instance(path, max_dataset_bytes=max_dataset_bytes)
        except Exception as exc:  # missing, too large, garbage: pydicom raises many kinds
            log.error("stored instance unreadable for frames: %s", type(exc).__name__)
            raise NotAcceptable("the stored instance cannot be read") from None
        first = {numbers[0]: _decode(transcoder.decode_frame, dataset, numbers[0])}

    def part(number: int) -> Callable[[], Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            data = first.pop(number, None)
            if data is None:
                try:
                    data = _decode(transcoder.frame, dataset, number)
                except NotAcceptable as exc:
                    log.error("frame decoding failed mid-answer: %s", exc)
                    raise PartUnavailable from None
            yield from bytes_chunks(data)

        return chunks

    return [Part(form.content_type, part(number)) for number in numbers]


def _decode(
    decoder: Callable[[Dataset, int], np.ndarray[Any, Any]], dataset: Dataset, number: int
) -> bytes:
    """Frame ``number`` (1-based) by ``decoder`` (Transcoder.frame, or decode_frame
    within a place held), as little-endian bytes."""
    try:
        array = decoder(dataset, number - 1)
    except TranscoderBusy:
        raise  # not the frame's fault: 503, try again
    except (TranscodeError, IndexError) as exc:
        raise NotAcceptable(str(exc) or "the frame cannot be decoded") from None
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(array).tobytes()
