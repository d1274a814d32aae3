"""The streaming multipart/related reader of STOW-RS
(dicom_node/services/dicomweb/multipart_reader.py): parts come out whole
whatever the chunking, the preamble and epilogue are ignored, and every bound
holds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from dicom_node.services.dicomweb.multipart_reader import (
    MalformedMultipart,
    MultipartReader,
    Part,
    TooManyParts,
    parse_media_type,
)

BOUNDARY = b"0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"


def body(contents: Iterable[bytes], *, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = bytearray(preamble)
    for content in contents:
        out += b"\r\n--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n" + content
    out += b"\r\n--" + BOUNDARY + b"--" + epilogue
    if not preamble:
        del out[:2]  # the first boundary opens the body, without a CRLF before it
    return bytes(out)


def read(
    data: bytes,
    tmp_path: Path,
    *,
    chunks: list[int] | None = None,
    max_part_bytes: int = 1 << 20,
    max_parts: int = 100,
    max_header_bytes: int = 1024,
) -> list[Part]:
    reader = MultipartReader(
        BOUNDARY,
        scratch_dir=tmp_path,
        max_part_bytes=max_part_bytes,
        max_parts=max_parts,
        max_header_bytes=max_header_bytes,
    )
    parts: list[Part] = []
    try:
        at = 0
        for size in chunks or [len(data)]:
            parts += reader.feed(data[at : at + size])
            at += size
        parts += reader.feed(data[at:])
        reader.finish()
    finally:
        reader.close()
    return parts


def contents(parts: list[Part]) -> list[bytes]:
    return [part.path.read_bytes() for part in parts if part.path is not None]


# a delimiter-like sequence inside content must not end the part
TRICKY = [b"first\r\n--0f3cf5c0 not the boundary\r\n", b"", b"\r\n--" + BOUNDARY[:-1] + b"x"]


def test_parts_whatever_the_chunk_edges(tmp_path: Path) -> None:
    data = body(TRICKY, preamble=b"ignored preamble", epilogue=b"\r\nignored epilogue")
    whole = read(data, tmp_path)
    assert contents(whole) == TRICKY
    assert whole[0].content_type == "application/dicom"
    # a split at every offset: a delimiter (or CRLF) cut anywhere
    for cut in range(1, len(data)):
        assert contents(read(data, tmp_path, chunks=[cut])) == TRICKY, cut
    # and byte by byte
    assert contents(read(data, tmp_path, chunks=[1] * len(data))) == TRICKY


def test_no_temp_file_is_left_but_the_parts(tmp_path: Path) -> None:
    parts = read(body([b"a", b"b"]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.path.name for p in parts if p.path is not None
    )
    assert all(p.path is not None and p.path.suffix == ".part" for p in parts)


def test_a_body_without_the_closing_boundary_is_malformed(tmp_path: Path) -> None:
    data = body([b"content"])
    with pytest.raises(MalformedMultipart, match="closing boundary"):
        read(data[: -len(b"--")], tmp_path)
    for part in tmp_path.iterdir():
        part.unlink()  # the part read whole is the caller's; the route removes it
    with pytest.raises(MalformedMultipart):
        read(b"no boundary at all", tmp_path)
    with pytest.raises(MalformedMultipart):
        read(data[: data.index(b"content") + 3], tmp_path)  # cut in a part's content
    assert list(tmp_path.iterdir()) == []  # the unfinished part's file is removed


def test_other_text_after_a_boundary_is_malformed(tmp_path: Path) -> None:
    data = b"--" + BOUNDARY + b"junk\r\n\r\nx\r\n--" + BOUNDARY + b"--"
    with pytest.raises(MalformedMultipart):
        read(data, tmp_path)
    padded = b"--" + BOUNDARY + b" \t\r\n\r\nx\r\n--" + BOUNDARY + b"--"
    assert contents(read(padded, tmp_path)) == [b"x"]  # transport padding is allowed


def test_part_headers_are_bounded(tmp_path: Path) -> None:
    long_header = b"--" + BOUNDARY + b"\r\nX-Long: " + b"a" * 2000
    with pytest.raises(MalformedMultipart, match="headers over 1024"):
        read(long_header + b"\r\n\r\nx\r\n--" + BOUNDARY + b"--", tmp_path, chunks=[100] * 30)
    with pytest.raises(MalformedMultipart):
        read(b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY + b"--", tmp_path)


def test_part_count_is_bounded(tmp_path: Path) -> None:
    assert len(read(body([b"x"] * 3), tmp_path, max_parts=3)) == 3
    with pytest.raises(TooManyParts):
        read(body([b"x"] * 4), tmp_path, max_parts=3)


def test_a_part_over_the_limit_is_counted_not_kept(tmp_path: Path) -> None:
    big = b"y" * 5000
    parts = read(body([b"small", big, b"after"]), tmp_path, max_part_bytes=4096, chunks=[700] * 9)
    assert [p.over_limit for p in parts] == [False, True, False]
    assert parts[1].size == len(big)
    assert contents(parts) == [b"small", b"after"]
    assert len(list(tmp_path.iterdir())) == 2


def test_a_part_without_headers(tmp_path: Path) -> None:
    data = b"--" + BOUNDARY + b"\r\n\r\nbare\r\n--" + BOUNDARY + b"--"
    parts = read(data, tmp_path)
    assert contents(parts) == [b"bare"] and parts[0].headers == {}


def test_boundary_length() -> None:
    with pytest.raises(MalformedMultipart):
        MultipartReader(b"", scratch_dir=Path("."), max_part_bytes=1, max_parts=1)
    with pytest.raises(MalformedMultipart):
        MultipartReader(b"b" * 71, scratch_dir=Path("."), max_part_bytes=1, max_parts=1)


def test_media_type_parameters() -> None:
    assert parse_media_type('Multipart/Related; type="application/dicom"; boundary="a b;c"') == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "a b;c"},
    )
    assert parse_media_type("multipart/related;boundary=xyz") == (
        "multipart/related",
        {"boundary": "xyz"},
    )
    with pytest.raises(MalformedMultipart):
        parse_media_type('multipart/related; boundary="open')
