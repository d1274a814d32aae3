"""What a WADO-RS client accepts (the Accept header, PS3.18 8.7) and what the node
answers with: the one place that reads Accept for the WADO-RS resources.

Accept is parsed into media ranges, best first (by ``q``, then as written; a
range with q=0 is left out; no Accept header is ``*/*``). A multipart range
names its parts' type in its ``type`` parameter and may name a transfer syntax
(``transfer-syntax=<uid>``, or ``*``: as stored). Each resource then picks the
first range it can answer:

- instances (``dicom_syntaxes``): ``multipart/related; type="application/dicom"``
  (also ``multipart/related`` with no type, ``*/*``, ``multipart/*`` and a bare
  ``application/dicom``); no transfer syntax named means as stored.
- frames and pixel data bulk data (``frame_form``): uncompressed as
  ``application/octet-stream`` (Explicit VR Little Endian), or the stored
  compressed bytes in their own media type (``image/jp2``...) or, for
  ``application/octet-stream; transfer-syntax=*``, labelled octet-stream with
  the stored syntax named (what OHIF asks for).
- other bulk data (``accepts_octet_stream``) and metadata (``accepts_json``).
Nothing acceptable: the route answers 406.
"""

from __future__ import annotations

from dataclasses import dataclass

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
AS_STORED = "*"
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"

# syntaxes whose pixel data is native (uncompressed) bytes
NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    }
)

# PS3.18 Table 8.7.3-2 (and -3, -4): the media type of a compressed frame
_MEDIA_TYPES = {
    **dict.fromkeys(
        (
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
        ),
        "image/jpeg",
    ),
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), "image/jls"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"), "image/jp2"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"), "image/jpx"),
    **dict.fromkeys(
        ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
        "image/jphc",
    ),
    **dict.fromkeys(
        ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
        "image/jxl",
    ),
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    **dict.fromkeys(("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"), "video/mpeg2"),
    **dict.fromkeys(
        tuple(f"1.2.840.10008.1.2.4.{n}" for n in range(102, 109)),
        "video/mp4",
    ),
}
# older names clients still send for the same parts
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


class NotAcceptable(Exception):
    """What was asked cannot be produced in any form the client accepts (406)."""


@dataclass(frozen=True, slots=True)
class MediaRange:
    media_type: str  # lower case, e.g. "multipart/related", "*/*"
    part_type: str | None  # a multipart range's ``type`` parameter
    transfer_syntax: str | None
    q: float


@dataclass(frozen=True, slots=True)
class FrameForm:
    """How frames go out: ``native`` uncompressed bytes, or the stored ones."""

    native: bool
    content_type: str  # of each part


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first."""
    if header is None or not header.strip():
        return [MediaRange("*/*", None, None, 1.0)]
    ranges: list[tuple[float, int, MediaRange]] = []
    for position, item in enumerate(_split(header, ",")):
        pieces = _split(item, ";")
        media_type = pieces[0].strip().lower()
        if not media_type:
            continue
        parameters: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"').strip()
        try:
            q = float(parameters.get("q", "1"))
        except ValueError:
            q = 1.0
        if not q > 0:
            continue
        part_type = parameters.get("type")
        ranges.append(
            (
                -q,
                position,
                MediaRange(
                    media_type,
                    part_type.lower() if part_type else None,
                    parameters.get("transfer-syntax") or None,
                    q,
                ),
            )
        )
    return [entry[2] for entry in sorted(ranges, key=lambda entry: entry[:2])]


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside double quotes."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _part_type(entry: MediaRange) -> str:
    """The type of the parts a range asks for; ``*/*`` when it does not say."""
    if entry.media_type == "multipart/related":
        part = entry.part_type or "*/*"
    elif entry.media_type in ("*/*", "multipart/*"):
        part = "*/*"
    else:
        part = entry.media_type
    return _ALIASES.get(part, part)


def dicom_syntaxes(ranges: list[MediaRange]) -> list[str]:
    """The transfer syntaxes the client takes application/dicom parts in, best
    first (``AS_STORED`` where it names none or ``*``). Empty: 406."""
    syntaxes: list[str] = []
    for entry in ranges:
        if _part_type(entry) in ("*/*", "application/*", DICOM):
            syntax = entry.transfer_syntax or AS_STORED
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    return syntaxes


def media_type_of(transfer_syntax: str) -> str:
    """The media type of a frame stored in ``transfer_syntax``."""
    if transfer_syntax in NATIVE_SYNTAXES:
        return OCTET_STREAM
    return _MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def frame_form(ranges: list[MediaRange], stored: str) -> FrameForm | None:
    """How to send the frames of an instance stored in ``stored``, or None (406)."""
    native_form = FrameForm(True, f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}")
    is_native = stored in NATIVE_SYNTAXES
    own = media_type_of(stored)
    for entry in ranges:
        part, syntax = _part_type(entry), entry.transfer_syntax
        if part in (OCTET_STREAM, "application/*"):
            as_stored = syntax in (AS_STORED, stored)
            if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN) or (is_native and as_stored):
                return native_form
            if syntax in (AS_STORED, stored):
                return FrameForm(False, f"{OCTET_STREAM}; transfer-syntax={stored}")
        elif part == "*/*":
            if is_native and syntax in (None, AS_STORED, stored):
                return native_form
            if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
                return native_form
            if syntax in (None, AS_STORED, stored):
                return FrameForm(False, f"{own}; transfer-syntax={stored}")
        elif not is_native and syntax in (None, AS_STORED, stored):
            family = own.split("/")[0]
            if part in (own, f"{family}/*"):
                return FrameForm(False, f"{own}; transfer-syntax={stored}")
    return None


def accepts_octet_stream(ranges: list[MediaRange]) -> bool:
    """Whether a bulk data value (not pixel data) may go as application/octet-stream."""
    return any(
        _part_type(entry) in ("*/*", "application/*", OCTET_STREAM)
        and entry.transfer_syntax in (None, AS_STORED, EXPLICIT_VR_LITTLE_ENDIAN)
        for entry in ranges
    )


def accepts_json(ranges: list[MediaRange]) -> bool:
    """Whether the client takes ``application/dicom+json`` (metadata)."""
    return any(
        entry.media_type in ("*/*", "application/*", "application/dicom+json", "application/json")
        for entry in ranges
    )
