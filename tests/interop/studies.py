"""The interop tests' input studies, and how a received instance is judged.

Inputs are pydicom's own test files (its wheel and the ``pydicom-data``
package: nothing is downloaded). Each study copies some of them with new
patient, study, series and SOP Instance UIDs, so that files which share UIDs
upstream (MR_small in six transfer syntaxes) become distinct instances of one
study; the pixel data and every other element are left as they are, and each
file keeps its transfer syntax.

A received instance is judged against the node's stored file:

- received in the stored transfer syntax: the same data set (the same
  elements with the same values, the same pixel data bytes; byte for byte
  where the receiver keeps what arrived, DCMTK's ``+B``);
- received in another syntax (the node transcoded): the same elements except
  the pixel module's encoding ones, the same SOP Instance UID, pixel values
  equal to pydicom's decode of the stored file (DCMTK's where pydicom has no
  decoder: 12-bit JPEG Extended) for lossless originals, or within
  ``LOSSY_TOLERANCE`` per sample (lossy ones), never a lossy syntax for a
  lossless original, and a lossy original still marked
  LossyImageCompression "01" (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

import functools
import io
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    generate_uid,
)

from dicom_node.domain.part10 import dataset_offset
from tests.support import dcmtk_tool

UNCOMPRESSED = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
# lossy transfer syntaxes among the inputs' (PS3.5 Table A-1 and 8.2)
LOSSY = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLSNearLossless,
        JPEG2000,
        UID("1.2.840.10008.1.2.4.93"),  # JPEG 2000 Part 2 multi-component
        UID("1.2.840.10008.1.2.4.203"),  # HTJ2K
    }
)
# what the issue allows a lossy original to differ by, decoder against decoder
LOSSY_TOLERANCE = 2

# Elements a transcoding may change (PS3.5 8.2, PS3.3 C.7.6.3): the pixel data's
# encoding, its colour model after a YCbCr decompression, the planar
# configuration of the decoded colour samples, the lossy compression history
# (may be added to, never removed) and encapsulation-only offset tables.
TRANSCODING_MAY_CHANGE = frozenset(
    Tag(keyword)
    for keyword in (
        "PixelData",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
    )
)
# photometric interpretations a native (uncompressed) pixel data may carry
NATIVE_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422"}
)


@dataclass(frozen=True)
class StudySpec:
    kind: str
    patient_id: str
    sources: tuple[str, ...]  # pydicom test file names


# One study per kind of the issue. Multi-frame, colour (YBR_FULL_422, YBR_ICT,
# YBR_RCT, RGB, palette), 8/16/32-bit and odd sizes are all among them. The RLE
# and JPEG-LS studies share a patient, so a patient-level retrieve of it must
# bring both studies.
SPECS = (
    StudySpec(
        "j2k-lossless",
        "INTEROP-J2KR",
        (
            "MR_small_jp2klossless.dcm",
            "emri_small_jpeg_2k_lossless.dcm",  # 10 frames
            "US1_J2KR.dcm",  # YBR_RCT
            "693_J2KR.dcm",  # pydicom-data
            "GDCMJ2K_TextGBR.dcm",
        ),
    ),
    StudySpec(
        "j2k-lossy",
        "INTEROP-J2KI",
        (
            "693_J2KI.dcm",
            "US1_J2KI.dcm",  # YBR_ICT
            "JPEG2000.dcm",
            "MR2_J2KI.dcm",  # 1024 x 1024, pydicom-data
            "SC_rgb_gdcm_KY.dcm",
        ),
    ),
    StudySpec(
        "jpeg-baseline",
        "INTEROP-JPEG",
        (
            "color3d_jpeg_baseline.dcm",  # 120 frames of 480 x 640 YBR_FULL_422, pydicom-data
            "examples_ybr_color.dcm",  # 30 frames
            "SC_rgb_jpeg_dcmtk.dcm",
            "SC_jpeg_no_color_transform.dcm",  # RGB, no colour transform
            "SC_rgb_small_odd_jpeg.dcm",  # 3 x 3
        ),
    ),
    StudySpec(
        "rle",
        "INTEROP-RLE-JLS",
        (
            "MR_small_RLE.dcm",
            "emri_small_RLE.dcm",  # 10 frames
            "SC_rgb_rle.dcm",
            "SC_rgb_rle_16bit_2frame.dcm",
            "OBXXXX1A_rle.dcm",  # PALETTE COLOR, pydicom-data
            "rtdose_rle.dcm",  # 32-bit, 15 frames
        ),
    ),
    StudySpec(
        "jpeg-ls",
        "INTEROP-RLE-JLS",
        (
            "MR_small_jpeg_ls_lossless.dcm",
            "emri_small_jpeg_ls_lossless.dcm",  # 10 frames
            "JPEGLSNearLossless_16.dcm",  # near-lossless, no LossyImageCompression
            "SC_rgb_jls_lossy_line.dcm",
        ),
    ),
    StudySpec(
        # instances of one SOP class in many syntaxes: the case one context per
        # SOP class cannot serve (MR in 7 syntaxes, SC in 6, CT and Enhanced MR in 2)
        "mixed",
        "INTEROP-MIXED",
        (
            "MR_small.dcm",
            "MR_small_implicit.dcm",
            "MR_small_bigendian.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_RLE.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR2_J2KI.dcm",
            "emri_small.dcm",
            "emri_small_jpeg_2k_lossless.dcm",
            "image_dfl.dcm",  # Deflated Explicit VR Little Endian
            "SC_rgb.dcm",
            "JPEG-LL.dcm",  # JPEG Lossless SV1, pydicom-data
            "SC_rgb_jpeg_dcmtk.dcm",
            "SC_rgb_rle.dcm",
            "JPEG-lossy.dcm",  # JPEG Extended 12-bit: pydicom needs GDCM's own API (or GPL)
            "CT_small.dcm",
            "693_J2KR.dcm",
        ),
    ),
)
KINDS = tuple(spec.kind for spec in SPECS)
# A study with a damaged instance: its JPEG 2000 frame is not a codestream, so
# nothing can decode it. To a destination that accepts its stored syntax it goes
# as it is; to one that accepts no compressed syntax that one sub-operation must
# fail and be reported (status, failed UID list, audit), and the others arrive.
DAMAGED = "MR_small_jp2klossless.dcm"
UNDECODABLE = StudySpec(
    "undecodable",
    "INTEROP-UNDECODABLE",
    ("MR_small.dcm", DAMAGED, "CT_small.dcm"),
)


@dataclass(frozen=True)
class Instance:
    source: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path  # the file imported into the node


@dataclass(frozen=True)
class Study:
    kind: str
    patient_id: str
    study_instance_uid: str
    instances: tuple[Instance, ...]

    @property
    def sop_instance_uids(self) -> set[str]:
        return {instance.sop_instance_uid for instance in self.instances}


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["|".join(["dicom-node-interop", *map(str, parts)])]))


def build_studies(directory: Path) -> dict[str, Study]:
    """Write every study's files under ``directory``; the studies by kind."""
    studies = {}
    for spec in (*SPECS, UNDECODABLE):
        study_uid = _uid(spec.kind, "study")
        instances = []
        for number, source in enumerate(spec.sources, start=1):
            path = get_testdata_file(source, download=False)  # never at run time
            if path is None:  # pragma: no cover - pydicom-data is a test dependency
                raise FileNotFoundError(f"pydicom test file {source} (install pydicom-data)")
            ds = pydicom.dcmread(path)
            sop_uid = UID(_uid(spec.kind, number, source))
            ds.PatientID = spec.patient_id
            ds.PatientName = f"INTEROP^{spec.kind.upper()}"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = _uid(spec.kind, "series", number)
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            if spec is UNDECODABLE and source == DAMAGED:
                ds.PixelData = encapsulate([b"\x00" * 64])
            out = directory / spec.kind / f"{number:02d}-{source}"
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out, enforce_file_format=True)
            instances.append(
                Instance(
                    source,
                    sop_uid,
                    str(ds.SOPClassUID),
                    str(ds.file_meta.TransferSyntaxUID),
                    out,
                )
            )
        studies[spec.kind] = Study(spec.kind, spec.patient_id, study_uid, tuple(instances))
    return studies


# --------------------------------------------------------------------------- judging


def read_part10(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


# DCMTK's decompressors, the reference where pydicom (with the project's
# Apache-compatible plugins) has no decoder: 12-bit JPEG Extended
_DCMTK_DECODERS = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"), "dcmdjpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"), "dcmdjpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), "dcmdjpls"),
    "1.2.840.10008.1.2.5": "dcmdrle",
}


@functools.lru_cache(maxsize=64)
def reference_pixels(path: Path) -> np.ndarray:
    """The stored file's pixels as pydicom decodes them, else as DCMTK does.
    Cached: each stored file is decoded once per session however often it is
    retrieved."""
    ds = pydicom.dcmread(path)
    try:
        return np.asarray(ds.pixel_array)
    except Exception:
        tool = _DCMTK_DECODERS.get(str(ds.file_meta.TransferSyntaxUID))
        if tool is None:
            raise
    with tempfile.TemporaryDirectory() as directory:
        decoded = Path(directory) / "decoded.dcm"
        subprocess.run([dcmtk_tool(tool), str(path), str(decoded)], check=True, capture_output=True)
        return np.asarray(pydicom.dcmread(decoded).pixel_array)


def _element_differences(stored: Dataset, received: Dataset, skip: Iterable[int]) -> list[str]:
    skipped = set(skip)
    problems = []
    for tag in sorted((set(stored.keys()) | set(received.keys())) - skipped):
        if tag.group == 0x0002:
            continue
        if tag not in received:
            problems.append(f"{stored[tag].keyword or tag} missing")
        elif tag not in stored:
            problems.append(f"{received[tag].keyword or tag} added")
        elif stored[tag].value != received[tag].value:
            problems.append(f"{stored[tag].keyword or tag} differs")
    return problems


def _largest_difference(expected: np.ndarray, actual: np.ndarray) -> int:
    """max |expected - actual| over every sample, a frame at a time (a 120-frame
    colour cine is 110 MB of samples: as int64 at once it would be 1.8 GB)."""
    if expected.ndim == 0 or len(expected) == 0:
        return 0
    frames = zip(expected.reshape(len(expected), -1), actual.reshape(len(actual), -1), strict=True)
    return max(
        int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)), initial=0)) for a, b in frames
    )


def judge(stored_path: Path, received: bytes, *, bit_preserving: bool) -> list[str]:
    """What is wrong with ``received`` as a copy of the node's stored file
    (empty: nothing). ``bit_preserving``: the receiver wrote the data set as it
    arrived (DCMTK ``+B``), so an untranscoded one must match byte for byte."""
    stored_bytes = stored_path.read_bytes()
    stored = read_part10(stored_bytes)
    copy = read_part10(received)
    stored_ts = UID(stored.file_meta.TransferSyntaxUID)
    received_ts = UID(copy.file_meta.TransferSyntaxUID)
    if copy.SOPInstanceUID != stored.SOPInstanceUID:
        return [f"SOPInstanceUID {copy.SOPInstanceUID} != {stored.SOPInstanceUID}"]
    if received_ts == stored_ts:
        if bit_preserving:
            if received[dataset_offset(received) :] != stored_bytes[dataset_offset(stored_bytes) :]:
                return [f"{stored_ts.name}: data set bytes differ"]
            return []
        return [f"{stored_ts.name}: {p}" for p in _element_differences(stored, copy, ())]
    # transcoded
    route = f"{stored_ts.name} -> {received_ts.name}"
    lossy = stored_ts in LOSSY or stored.get("LossyImageCompression") == "01"
    problems = [f"{route}: {p}" for p in _element_differences(stored, copy, TRANSCODING_MAY_CHANGE)]
    if received_ts in LOSSY and not lossy:
        problems.append(f"{route}: a lossless original sent in a lossy syntax")
    if lossy and copy.get("LossyImageCompression") != "01":
        problems.append(
            f"{route}: LossyImageCompression {copy.get('LossyImageCompression')!r}, not '01'"
        )
    if received_ts in UNCOMPRESSED:
        photometric = copy.get("PhotometricInterpretation")
        if photometric not in NATIVE_PHOTOMETRIC:
            problems.append(f"{route}: PhotometricInterpretation {photometric} in native data")
    try:
        expected = reference_pixels(stored_path)
        actual = np.asarray(copy.pixel_array)
    except Exception as exc:  # any decoder failure is the finding itself
        return [*problems, f"{route}: pixel data cannot be decoded: {exc!r}"]
    if expected.shape != actual.shape:
        return [*problems, f"{route}: pixel array {actual.shape}, stored {expected.shape}"]
    difference = _largest_difference(expected, actual)
    allowed = LOSSY_TOLERANCE if lossy else 0
    if difference > allowed:
        problems.append(f"{route}: pixels differ by up to {difference} (allowed {allowed})")
    return problems


def retrieve_report(
    expected: dict[str, str], arrived: Iterable[str], problems: dict[str, list[str]]
) -> str:
    """One readable paragraph: what did not arrive and what arrived wrong.
    ``expected``: SOP Instance UID -> a name for it (its study kind and file)."""
    arrived = set(arrived)
    missing = sorted(expected[uid] for uid in expected.keys() - arrived)
    unexpected = len(arrived - expected.keys())
    lines = [f"{len(arrived & expected.keys())} of {len(expected)} instances arrived"]
    if missing:
        lines.append(f"missing: {', '.join(missing)}")
    if unexpected:
        lines.append(f"{unexpected} instances nobody asked for")
    lines += [f"{expected[uid]}: {'; '.join(found)}" for uid, found in sorted(problems.items())]
    return "\n".join(lines)


def names(*studies: Study) -> dict[str, str]:
    """SOP Instance UID -> "kind/file" for ``retrieve_report``."""
    return {
        instance.sop_instance_uid: f"{study.kind}/{instance.source}"
        for study in studies
        for instance in study.instances
    }
