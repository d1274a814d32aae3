"""A pydicom pixel decoding plugin: JPEG Extended (Process 2 and 4, transfer syntax
1.2.840.10008.1.2.4.51) through GDCM, 12-bit samples included.

pydicom 3.0's own GDCM plugin refuses 12-bit JPEG Extended, which leaves
pylibjpeg-libjpeg (GPLv3, not a dependency of this Apache-2.0 project) as pydicom's
only decoder for the most common use of that syntax (12-bit CT and MR). GDCM 3.2
decodes it: the pixels are those of DCMTK's dcmdjpeg (tests/unit/test_transcode.py
compares them). GDCM picks its 8-, 12- or 16-bit libjpeg from Bits Allocated; told
16 it first tries the 16-bit one, which writes "Unsupported JPEG data precision 12"
to the process's stderr before the 12-bit one succeeds (python-gdcm issue 35), so
the precision of the codestream's SOF marker is given instead.

The interface is pydicom's (pydicom.pixels.decoders: ``is_available``,
``DECODER_DEPENDENCIES`` and a frame decoding function); domain/transcode.py adds
the plugin to pydicom's JPEG Extended decoder.
"""

from __future__ import annotations

import struct

from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import JPEGExtended12Bit

try:
    import gdcm  # type: ignore[import-untyped]

    HAVE_GDCM = True
except ImportError:  # pragma: no cover - python-gdcm is a dependency
    HAVE_GDCM = False

DECODER_DEPENDENCIES = {JPEGExtended12Bit: ("python-gdcm>=3.0.10",)}

# the start-of-frame markers of the JPEG processes (ITU-T T.81 Table B.1), every one
# but DHT (C4), JPG (C8) and DAC (CC), which share the range
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# markers without a length field: TEM, RSTn, SOI, EOI (T.81 B.1.1.3)
_STANDALONE = {0x01, *range(0xD0, 0xDA)}


def is_available(uid: str) -> bool:
    return HAVE_GDCM and uid == JPEGExtended12Bit


def sample_precision(codestream: bytes) -> int:
    """The sample precision of the frame header (SOF) of a JPEG codestream.

    Raises ValueError if no frame header comes before the end of the data.
    """
    position = 2 if codestream[:2] == b"\xff\xd8" else 0
    while position + 4 <= len(codestream):
        if codestream[position] != 0xFF:
            raise ValueError("no JPEG marker where one was expected")
        marker = codestream[position + 1]
        if marker == 0xFF:  # fill byte before a marker (T.81 B.1.1.2)
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack(">H", codestream[position + 2 : position + 4])
        if marker in _SOF_MARKERS:
            if position + 4 >= len(codestream):
                break
            return codestream[position + 4]
        position += 2 + length
    raise ValueError("no JPEG frame header")


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One decoded frame, as pydicom's decoders return it (samples of 8 bits for an
    8-bit codestream, else 16; colour by pixel)."""
    precision = sample_precision(src)
    if precision not in (8, 12):
        raise ValueError("JPEG Extended holds 8- or 12-bit samples only")

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    kind = gdcm.PhotometricInterpretation.GetPIType(str(runner.photometric_interpretation))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(kind))
    if runner.samples_per_pixel > 1:
        image.SetPlanarConfiguration(runner.planar_configuration)
    syntax = gdcm.TransferSyntax.GetTSType(str(JPEGExtended12Bit))
    image.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    # Bits Allocated as the precision: GDCM's choice of libjpeg (12-bit samples
    # still come back in 16 bits)
    image.SetPixelFormat(
        gdcm.PixelFormat(
            runner.samples_per_pixel,
            precision,
            precision,
            precision - 1,
            runner.pixel_representation,
        )
    )
    runner.set_option("bits_allocated", 8 if precision == 8 else 16)

    # GDCM returns the buffer as a str of surrogate-escaped bytes
    frame: bytes = image.GetBuffer().encode("utf-8", "surrogateescape")
    expected = (
        runner.rows * runner.columns * runner.samples_per_pixel * (1 if precision == 8 else 2)
    )
    if len(frame) != expected:
        raise ValueError("GDCM did not decode the frame")
    return frame
