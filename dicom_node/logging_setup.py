"""Process logging: one line per event on stderr; pynetdicom kept quiet.

``fmt="json"`` writes one JSON object a line for log shippers (ts in ISO 8601
UTC, level, logger, message, pid, and the traceback as ``exception``). It
carries exactly what the text lines carry, nothing more: no record attributes
beyond the formatted message, so no identifiers a handler did not put there.

No record can forge another. Peers choose AE titles, UIDs and other values
that end up in log lines, ours and pynetdicom's (which logs a non-conformant
UID of an A-ASSOCIATE-RQ verbatim). Both formatters escape control characters
in every record's final message (``escape_control``), so a line break, a
carriage return or a terminal escape sequence inside a value shows as ``\\n``,
``\\r``, ``\\x1b``... A traceback keeps its lines, but in text format each of
them is indented: a record always starts at column 0 with its timestamp, so a
line a peer smuggled into an exception message can never pass for one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

# What could end a line, move the cursor or restyle a terminal: C0 controls (tab and
# line feed included), DEL, C1 controls (NEL among them, and CSI, the 8-bit ESC [),
# the Unicode line and paragraph separators, and the bidirectional marks, embeddings,
# overrides and isolates (a line that displays otherwise than it reads).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# before each line of a traceback or stack in text format (see the module doc)
TEXT_CONTINUATION = "    "


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as a Python-style escape.

    Backslashes are left as they are: DICOM separates values with them, and an
    ambiguous ``\\n`` typed by a peer still cannot break a line."""
    return _UNSAFE.sub(_escaped, text)


def _escape_lines(text: str, prefix: str = "") -> str:
    """A multi-line block (a traceback) with each line escaped and prefixed. Split
    on line feeds only: splitlines() would also split on (and so drop) a carriage
    return or a separator that escaping must show."""
    return "\n".join(prefix + escape_control(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, the message escaped, tracebacks indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # record.message is set by format() just before, from msg % args
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return _escape_lines(super().formatException(ei), TEXT_CONTINUATION)

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info), TEXT_CONTINUATION)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            # escaped as in text format: a viewer that decodes the field and shows
            # it must not show a forged line either
            "message": escape_control(record.getMessage()),
            # several DICOM worker processes share one stderr
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = _escape_lines(record.exc_text)
        if record.stack_info:
            entry["stack"] = _escape_lines(self.formatStack(record.stack_info))
        # ASCII escapes: a line stays valid whatever encoding stderr has
        return json.dumps(entry, default=str)


def make_formatter(fmt: LogFormat | str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be text or json, not {fmt!r}")


def configure_logging(level: str, *, fmt: LogFormat | str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings go through the handler too (escaped, one line each) instead of
    # being printed to stderr as they are.
    logging.captureWarnings(True)
    debug = level == "DEBUG"
    # pynetdicom's INFO lines describe every association and request; ours say what
    # matters without identifiers. Its warnings and errors still come through.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.WARNING)
    # pydicom warns about invalid values quoting them (a patient's name or birth
    # date in a received data set), once on its logger and once as a Python warning:
    # both only at DEBUG, which is for diagnosis and may show PHI anyway.
    logging.getLogger("pydicom").setLevel(logging.DEBUG if debug else logging.ERROR)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if debug else logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
