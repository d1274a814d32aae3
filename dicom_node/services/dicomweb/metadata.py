"""A stored instance's header, and its DICOM JSON model (PS3.18 F.2) for WADO-RS
metadata, with large values replaced by BulkDataURIs.

The header is read up to the pixel data and never past it (pydicom's
``stop_before_pixels``): the file is left positioned at the pixel data
element, whose header (tag, VR, length) is read from there, so where the pixel
data starts in the file is known without reading it. Frames and the pixel data
bulk data are then served from that offset (services/dicomweb/frames.py). A
Deflated file (PS3.5 A.5) has no such offset: it is read whole through the
bounded inflater (``read_stored_instance``) and its pixel data dropped.

In the JSON, Pixel Data is always a BulkDataURI, and so is any other value of a
binary VR (OB, OD, OF, OL, OV, OW, UN) longer than ``BULK_DATA_THRESHOLD``
bytes; the URI is ``<instance URL>/bulkdata/<tag path>``, the path being the
element's tag, within sequences ``<sequence tag>/<item index>/<tag>``
(``element_at`` reads it back). Elements after the pixel data (rare: trailing
padding, digital signatures) are not part of the metadata.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10_source import read_stored_instance

BULK_DATA_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {0x7FE00008: "OF", 0x7FE00009: "OD", PIXEL_DATA: "OW"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW"})
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
AVAILABLE_TRANSFER_SYNTAX = "00083002"

_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,8}")


@dataclass(frozen=True, slots=True)
class PixelLocation:
    """The pixel data element of a stored file."""

    tag: int
    vr: str
    value_offset: int  # in the file; -1: not a plain offset (a Deflated file)
    length: int  # UNDEFINED_LENGTH: encapsulated


@dataclass(frozen=True, slots=True)
class StoredHeader:
    dataset: Dataset  # with its file meta, without pixel data
    transfer_syntax: str
    pixel: PixelLocation | None


def read_header(path: Path, *, max_dataset_bytes: int) -> StoredHeader:
    """The header of a stored instance and where its pixel data lies. Raises what
    pydicom raises for an unreadable file, and DatasetTooLarge."""
    with path.open("rb") as source:
        dataset = pydicom.dcmread(source, stop_before_pixels=True)
        syntax = str(dataset.file_meta.get("TransferSyntaxUID", "") or "")
        if syntax != DEFLATED:
            return StoredHeader(dataset, syntax, _pixel_location(source, syntax))
    whole = read_stored_instance(path, max_dataset_bytes=max_dataset_bytes)
    pixel = None
    for tag in _PIXEL_TAGS:
        if tag in whole:
            element = whole[tag]
            pixel = PixelLocation(tag, str(element.VR), -1, len(element.value or b""))
            del whole[tag]
            break
    return StoredHeader(whole, syntax, pixel)


def _pixel_location(source: Any, syntax: str) -> PixelLocation | None:
    """The element header where ``dcmread`` stopped, if it is pixel data."""
    start = source.tell()
    head = source.read(12)
    if len(head) < 8:
        return None
    order = ">" if syntax == BIG_ENDIAN else "<"
    group, number = struct.unpack(f"{order}HH", head[:4])
    tag = group << 16 | number
    if tag not in _PIXEL_TAGS:
        return None
    if syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        (length,) = struct.unpack("<I", head[4:8])
        return PixelLocation(tag, _PIXEL_TAGS[tag], start + 8, length)
    vr = head[4:6].decode("ascii", "replace")
    if vr in _LONG_VRS:
        if len(head) < 12:
            return None
        (length,) = struct.unpack(f"{order}I", head[8:12])
        return PixelLocation(tag, vr, start + 12, length)
    (length,) = struct.unpack(f"{order}H", head[6:8])
    return PixelLocation(tag, vr, start + 8, length)


def instance_json(header: StoredHeader, instance_url: str) -> dict[str, Any]:
    """The DICOM JSON model of the instance, bulk values as BulkDataURIs under
    ``instance_url`` (the instance's WADO-RS URL)."""
    paths = dict(_element_paths(header.dataset, ""))

    def bulk_uri(element: DataElement) -> str:
        return f"{instance_url}/bulkdata/{paths.get(id(element), f'{element.tag:08X}')}"

    model: dict[str, Any] = header.dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_uri,
        suppress_invalid_tags=True,
    )
    if header.pixel is not None:
        model[f"{header.pixel.tag:08X}"] = {
            "vr": header.pixel.vr,
            "BulkDataURI": f"{instance_url}/bulkdata/{header.pixel.tag:08X}",
        }
    if header.transfer_syntax:
        model[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [header.transfer_syntax]}
    return dict(sorted(model.items()))


def _element_paths(dataset: Dataset, prefix: str) -> Iterator[tuple[int, str]]:
    """(id of element, its tag path) for every element, within sequences too."""
    for element in dataset:
        path = f"{prefix}{element.tag:08X}"
        yield id(element), path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from _element_paths(item, f"{path}/{index}/")


def check_tag_path(path: str) -> str:
    """A bulk data tag path from the URL, or InvalidValue."""
    if not _TAG_PATH.fullmatch(path):
        raise InvalidValue("not a bulk data tag path (TTTTTTTT, or TTTTTTTT/index/TTTTTTTT)")
    return path.upper()


def is_pixel_path(path: str) -> bool:
    return "/" not in path and int(path, 16) in _PIXEL_TAGS


def element_at(dataset: Dataset, path: str) -> DataElement | None:
    """The binary element at a checked tag path, or None."""
    parts = path.split("/")
    current = dataset
    for position in range(0, len(parts) - 1, 2):
        tag, index = int(parts[position], 16), int(parts[position + 1])
        if tag not in current or current[tag].VR != "SQ":
            return None
        items = current[tag].value
        if index >= len(items):
            return None
        current = items[index]
    tag = int(parts[-1], 16)
    if tag not in current:
        return None
    element = current[tag]
    if str(element.VR) not in _BINARY_VRS or element.value is None:
        return None
    return element


def little_endian_value(element: DataElement, header: StoredHeader) -> bytes:
    """The value's bytes as Explicit VR Little Endian has them (PS3.18 bulk data
    is little endian): a Big Endian file's OW, OF, OL, OD and OV swapped."""
    value = bytes(element.value)
    width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(str(element.VR))
    if header.transfer_syntax != BIG_ENDIAN or width is None:
        return value
    usable = len(value) - len(value) % width
    swapped = np.frombuffer(value, dtype=f">u{width}", count=usable // width).astype(f"<u{width}")
    return swapped.tobytes() + value[usable:]
