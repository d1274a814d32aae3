"""A streaming ``multipart/related`` parser (RFC 2046 5.1, RFC 2387) for STOW-RS.

Fed the body in chunks of any size, it writes each part's content to its own
temp file as the bytes arrive, so a request of gigabytes needs no more memory
than a chunk and one delimiter: the delimiter is searched in what is buffered,
and only the last ``len(delimiter) - 1`` bytes are held back, in case a
delimiter starts there and ends in the next chunk.

Everything a sender chooses is bounded: the headers of a part
(``max_header_bytes``), the number of parts (``max_parts``), and the bytes a
part's file may hold (``max_part_bytes``: past it the part's file is removed and
the rest of its bytes are only counted, so the other parts go on). A body that
ends before the close delimiter is malformed. Temp files carry the store's
temp suffix, so one left by a crash is swept like any other (storage.py).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path

from dicom_node.storage import TEMP_SUFFIX

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# RFC 2046: a boundary is 1 to 70 characters
MAX_BOUNDARY_LENGTH = 70
_CRLF = b"\r\n"


class MalformedMultipart(ValueError):
    """The body is not a multipart message with this boundary (HTTP 400)."""


class TooManyParts(MalformedMultipart):
    """More parts than the reader takes (HTTP 413: the request is too large)."""


@dataclass
class Part:
    """One part as received: its headers (names lower-cased), and its content
    in ``path`` (a temp file the caller now owns), or ``path`` None when the
    content was over ``max_part_bytes`` (``size`` counts all of it)."""

    headers: dict[str, str]
    path: Path | None
    size: int = 0

    @property
    def over_limit(self) -> bool:
        return self.path is None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class _State(Enum):
    PREAMBLE = auto()
    AFTER_DELIMITER = auto()
    HEADERS = auto()
    BODY = auto()
    EPILOGUE = auto()


@dataclass
class _Open:
    headers: dict[str, str]
    fd: int | None
    path: Path | None
    size: int = 0


@dataclass
class MultipartReader:
    boundary: bytes
    scratch_dir: Path
    max_part_bytes: int
    max_parts: int
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    _buffer: bytearray = field(default_factory=bytearray, init=False)
    _state: _State = field(default=_State.PREAMBLE, init=False)
    _open: _Open | None = field(default=None, init=False)
    _parts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.boundary) <= MAX_BOUNDARY_LENGTH:
            raise MalformedMultipart("the boundary must be 1 to 70 characters")
        # The first delimiter may open the body, with no CRLF before it: start
        # as if one had been read, so every delimiter is CRLF--boundary.
        self._delimiter = _CRLF + b"--" + self.boundary
        self._buffer += _CRLF

    @property
    def complete(self) -> bool:
        """The close delimiter was read."""
        return self._state is _State.EPILOGUE

    def feed(self, chunk: bytes) -> list[Part]:
        """Take the next bytes of the body; returns the parts completed by them.
        Raises MalformedMultipart (TooManyParts) for a body that cannot be read."""
        if self._state is _State.EPILOGUE:
            return []  # the epilogue is ignored (RFC 2046), not even buffered
        self._buffer += chunk
        done: list[Part] = []
        while self._step(done):
            pass
        return done

    def finish(self) -> None:
        """The body has ended: it must have ended with the close delimiter."""
        if self._state is not _State.EPILOGUE:
            raise MalformedMultipart("the body ends before the closing boundary")

    def close(self) -> None:
        """Remove the temp file of a part still being read (a refused or broken
        request); completed parts' files belong to the caller."""
        if self._open is not None:
            self._close_file(self._open, remove=True)
            self._open = None

    # ------------------------------------------------------------------ states

    def _step(self, done: list[Part]) -> bool:
        """Advance by one state transition if the buffer allows; False: wait for more."""
        buffer = self._buffer
        if self._state is _State.PREAMBLE:
            at = buffer.find(self._delimiter)
            if at < 0:
                # the preamble is ignored: keep only what may start a delimiter
                del buffer[: max(0, len(buffer) - len(self._delimiter) + 1)]
                return False
            del buffer[: at + len(self._delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        if self._state is _State.AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state is _State.HEADERS:
            return self._headers()
        if self._state is _State.BODY:
            return self._body(done)
        buffer.clear()  # EPILOGUE
        return False

    def _after_delimiter(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        if buffer[:2] == b"--":
            self._state = _State.EPILOGUE
            buffer.clear()
            return False
        end = buffer.find(_CRLF)
        if end < 0:
            if len(buffer) > self.max_header_bytes:
                raise MalformedMultipart("no line end after a boundary")
            return False
        if buffer[:end].strip(b" \t"):  # only transport padding may follow it
            raise MalformedMultipart("a boundary is followed by other characters")
        del buffer[: end + 2]
        self._parts += 1
        if self._parts > self.max_parts:
            raise TooManyParts(f"more than {self.max_parts} parts")
        self._state = _State.HEADERS
        return True

    def _headers(self) -> bool:
        buffer = self._buffer
        if buffer[:2] == _CRLF:  # no headers at all
            end, block = 0, b""
        else:
            found = buffer.find(b"\r\n\r\n", 0, self.max_header_bytes + 4)
            if found < 0:
                if len(buffer) >= self.max_header_bytes + 4:
                    raise MalformedMultipart(f"part headers over {self.max_header_bytes} bytes")
                return False
            end, block = found + 2, bytes(buffer[:found])
        del buffer[: end + 2]
        self._open = self._start_part(_parse_headers(block))
        self._state = _State.BODY
        return True

    def _body(self, done: list[Part]) -> bool:
        buffer = self._buffer
        current = self._open
        assert current is not None
        at = buffer.find(self._delimiter)
        if at < 0:
            keep = len(self._delimiter) - 1
            if len(buffer) > keep:
                self._write(current, memoryview(buffer)[: len(buffer) - keep])
                del buffer[: len(buffer) - keep]
            return False
        self._write(current, memoryview(buffer)[:at])
        del buffer[: at + len(self._delimiter)]
        self._close_file(current, remove=False)
        self._open = None
        done.append(Part(current.headers, current.path, current.size))
        self._state = _State.AFTER_DELIMITER
        return True

    # ------------------------------------------------------------------ files

    def _start_part(self, headers: dict[str, str]) -> _Open:
        path = self.scratch_dir / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        return _Open(headers, fd, path)

    def _write(self, current: _Open, data: memoryview) -> None:
        current.size += len(data)
        if current.fd is None:
            return  # over the limit: counted, not kept
        if current.size > self.max_part_bytes:
            self._close_file(current, remove=True)
            return
        while data:
            written = os.write(current.fd, data)
            data = data[written:]

    @staticmethod
    def _close_file(current: _Open, *, remove: bool) -> None:
        if current.fd is not None:
            os.close(current.fd)
            current.fd = None
        if remove and current.path is not None:
            current.path.unlink(missing_ok=True)
            current.path = None


def _parse_headers(block: bytes) -> dict[str, str]:
    """``Name: value`` lines (RFC 822 style; folded lines joined)."""
    headers: dict[str, str] = {}
    name: str | None = None
    for raw in block.split(_CRLF) if block else []:
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and name is not None:
            headers[name] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise MalformedMultipart("a part header line is not 'Name: value'")
        name = key.strip().lower()
        headers[name] = value.strip()
    return headers


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; name=value; name="quoted value"`` -> the lower-cased
    type and its parameters (names lower-cased, values unquoted)."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    while rest:
        rest = rest.lstrip(" \t;")
        if not rest:
            break
        name, eq, rest = rest.partition("=")
        if not eq:
            raise MalformedMultipart(f"media type parameter without a value: {name.strip()!r}")
        rest = rest.lstrip(" \t")
        if rest.startswith('"'):
            chars: list[str] = []
            i = 1
            while i < len(rest) and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < len(rest):
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= len(rest):
                raise MalformedMultipart("unterminated quoted media type parameter")
            param_value, rest = "".join(chars), rest[i + 1 :]
        else:
            param_value, _, rest = rest.partition(";")
            param_value = param_value.strip()
        params[name.strip().lower()] = param_value
    return head.strip().lower(), params
