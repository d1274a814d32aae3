"""WADO-RS Accept negotiation (services/dicomweb/negotiation.py) and the
multipart writer (services/dicomweb/multipart.py), without a server."""

from __future__ import annotations

from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from dicom_node.services.dicomweb.multipart import (
    Part,
    PartUnavailable,
    content_type,
    gathered,
    stream_parts,
)
from dicom_node.services.dicomweb.negotiation import (
    AS_STORED,
    accepts_json,
    accepts_octet_stream,
    dicom_syntaxes,
    frame_form,
    parse_accept,
)

EVRLE = "1.2.840.10008.1.2.1"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"


def test_accept_ranges_are_ordered_by_q_then_as_written_and_q0_is_dropped() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80;q=0.5,'
        ' multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1,'
        ' multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2;q=0'
    )
    assert [r.transfer_syntax for r in ranges] == [EVRLE, "1.2.840.10008.1.2.4.80"]
    assert dicom_syntaxes(ranges) == [EVRLE, "1.2.840.10008.1.2.4.80"]


def test_instances_default_to_as_stored() -> None:
    for header in (
        None,
        "",
        "*/*",
        "multipart/related",
        'multipart/related; type="application/dicom"',
    ):
        assert dicom_syntaxes(parse_accept(header)) == [AS_STORED], header
    assert dicom_syntaxes(parse_accept("application/dicom+json")) == []
    assert dicom_syntaxes(parse_accept('multipart/related; type="image/jp2"')) == []


def test_a_quoted_comma_does_not_split_a_range() -> None:
    (entry,) = parse_accept('multipart/related; type="application/dicom, x"')
    assert entry.part_type == "application/dicom, x"


@pytest.mark.parametrize(
    ("accept", "stored", "native", "part"),
    [
        ('multipart/related; type="*/*"', EVRLE, True, "application/octet-stream"),
        ('multipart/related; type="*/*"', J2K, False, "image/jp2"),
        ('multipart/related; type="image/jp2"', J2K, False, "image/jp2"),
        ('multipart/related; type="image/*"', RLE, False, "image/dicom-rle"),
        ('multipart/related; type="image/x-dicom-rle"', RLE, False, "image/dicom-rle"),
        (
            'multipart/related; type="application/octet-stream"',
            J2K,
            True,
            "application/octet-stream",
        ),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            J2K,
            False,
            "application/octet-stream",
        ),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            EVRLE,
            True,
            "application/octet-stream",
        ),
    ],
)
def test_frame_forms(accept: str, stored: str, native: bool, part: str) -> None:
    form = frame_form(parse_accept(accept), stored)
    assert form is not None
    assert form.native is native
    assert form.content_type.split(";")[0] == part
    expected_syntax = EVRLE if native else stored
    assert form.content_type.endswith(f"transfer-syntax={expected_syntax}")


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        ('multipart/related; type="image/jp2"', RLE),  # never re-encoded
        ('multipart/related; type="image/jp2"', EVRLE),
        (
            f'multipart/related; type="application/octet-stream"; transfer-syntax={RLE}',
            J2K,
        ),
        ("application/dicom+json", EVRLE),
    ],
)
def test_frames_nothing_acceptable(accept: str, stored: str) -> None:
    assert frame_form(parse_accept(accept), stored) is None


def test_metadata_and_bulk_data_types() -> None:
    assert accepts_json(parse_accept(None))
    assert accepts_json(parse_accept("application/dicom+json"))
    assert not accepts_json(parse_accept('multipart/related; type="application/dicom"'))
    assert accepts_octet_stream(parse_accept('multipart/related; type="application/octet-stream"'))
    assert not accepts_octet_stream(parse_accept('multipart/related; type="image/jp2"'))


def test_multipart_body_parses_and_an_unavailable_part_is_left_out() -> None:
    def gone() -> Iterator[bytes]:
        raise PartUnavailable
        yield b""  # a generator

    parts = [
        Part("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", lambda: [b"ab", b"\r\n--"]),
        Part("application/dicom", gone),
        Part("application/octet-stream", lambda: []),
    ]
    body = b"".join(stream_parts(parts, "BOUNDARY"))
    head = f"Content-Type: {content_type('application/dicom', 'BOUNDARY')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    payloads = [part.get_payload(decode=True) for part in message.iter_parts()]
    assert payloads == [b"ab\r\n--", b""]
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "application/dicom",
        "application/octet-stream",
    ]


def test_the_body_goes_out_in_pieces_of_at_least_the_write_size() -> None:
    """A study's parts (here 10 of 3 bytes and their headers) leave as a few
    large pieces, the same bytes in the same order; only the last may be shorter."""
    parts = [Part("application/dicom", lambda n=n: [b"%03d" % n]) for n in range(10)]
    pieces = list(gathered(stream_parts(parts, "B"), at_least=100))
    assert b"".join(pieces) == b"".join(stream_parts(parts, "B"))
    assert len(pieces) > 1
    assert all(len(piece) >= 100 for piece in pieces[:-1])


def test_a_part_failing_midway_cuts_the_gathered_body_short() -> None:
    """What was gathered before the failure is not sent: the answer stays cut
    short (no closing delimiter), never passes for a complete one."""

    def broken() -> Iterator[bytes]:
        yield b"half"
        raise PartUnavailable  # after its first byte: the answer is cut short

    parts = [Part("application/dicom", lambda: [b"whole"]), Part("application/dicom", broken)]
    body = gathered(stream_parts(parts, "B"), at_least=1 << 20)
    with pytest.raises(PartUnavailable):
        next(body)
