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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- pynetdicom's lines

LIBRARY_LOGGER = "pynetdicom"
LIBRARY_WINDOW_SECONDS = 10.0
# templates tracked at once; past it, a logger's further templates share one window
LIBRARY_MAX_TEMPLATES = 256
_HELD_TEXT_MAX = 500  # of the last line held back per template, written with its count
_SUMMARY = "rate_limit_summary"  # set on the lines the filter writes itself
_OTHER = "(other lines)"
# what varies within one of pynetdicom's messages: the value it quotes ("Invalid
# 'Called AE Title' value '...' - must not...", "Non-conformant 'SOP Class UID'
# value '...'": the field's name stays), hex and decimal numbers
_VALUES = re.compile(r"(?<= value ).*?(?= - |$)|0x[0-9A-Fa-f]+|\d+", re.DOTALL)


@dataclass(slots=True)
class _Window:
    started: float
    held: int = 0
    level: int = logging.NOTSET
    text: str = ""  # the last line held back


class LibraryFlood(logging.Filter):
    """Rate-limits pynetdicom's WARNING and ERROR lines (their tracebacks with them).

    pynetdicom logs what it finds wrong in a PDU it decodes or validates (an AE
    title with a control character, a non-conformant UID), quoting the value,
    once per connection, some with a traceback: an unauthenticated peer
    repeating one bad A-ASSOCIATE-RQ wrote ~16 lines per connection, as fast as
    it could connect. Per logger and message template: the first line at once
    (traceback included), then at most one per window, carrying the count of the
    lines held back since (``(N more like this in the last S s)``, as
    ``log_limit.LogLimiter`` writes it). A count whose template does not come
    back is written by the next pynetdicom line of any template, as the last
    line held back with the count of the others.

    The template is ``record.msg``; pynetdicom builds most messages as f-strings,
    so the values in them (the quoted value, numbers) are masked first, or every
    AE title would be a template of its own. Memory is bounded: past
    ``max_templates`` templates with an open window, a logger's further lines
    share one window. Lines below WARNING and other loggers' lines pass.
    """

    def __init__(
        self,
        *,
        window_seconds: float = LIBRARY_WINDOW_SECONDS,
        max_templates: int = LIBRARY_MAX_TEMPLATES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self._max = max_templates
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < logging.WARNING
            or getattr(record, _SUMMARY, False)
            or not (record.name == LIBRARY_LOGGER or record.name.startswith(LIBRARY_LOGGER + "."))
        ):
            return True
        now = self._clock()
        key = (record.name, _template(record))
        with self._lock:
            due = self._release_due(now, key)
            window = self._windows.get(key)
            if window is None and len(self._windows) >= self._max:
                self._forget_ended(now)
            if window is None and len(self._windows) >= self._max:
                key = (record.name, _OTHER)
                window = self._windows.get(key)
            carried = age = 0
            if window is None:
                self._windows[key] = _Window(started=now)
                passes = True
            elif now - window.started >= self.window_seconds:
                carried, age = window.held, _age(window, now)
                window.started, window.held, window.text = now, 0, ""
                passes = True
            else:
                window.held += 1
                window.level = record.levelno
                window.text = record.getMessage()[:_HELD_TEXT_MAX]
                passes = False
        for name, line in due:
            logging.getLogger(name).handle(line)
        if passes and carried:
            record.msg = f"{record.getMessage()} ({carried} more like this in the last {age} s)"
            record.args = None
        return passes

    def _release_due(
        self, now: float, current: tuple[str, str]
    ) -> list[tuple[str, logging.LogRecord]]:
        """Lines for the counts of ended windows (not ``current``'s: its own line
        carries it); ended windows with nothing held are forgotten."""
        lines = []
        for key, window in list(self._windows.items()):
            if key == current or now - window.started < self.window_seconds:
                continue
            if not window.held:
                del self._windows[key]
                continue
            line = logging.LogRecord(
                key[0],
                window.level,
                __file__,
                0,
                "%s (%d more like this in the last %d s)",
                (window.text, window.held - 1, _age(window, now)),
                None,
            )
            setattr(line, _SUMMARY, True)
            lines.append((key[0], line))
            window.started, window.held, window.text = now, 0, ""
        return lines

    def _forget_ended(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if not window.held and now - window.started >= self.window_seconds:
                del self._windows[key]


def _template(record: logging.LogRecord) -> str:
    msg = record.msg
    if not isinstance(msg, str):
        return type(msg).__name__  # LOGGER.exception(exc): the exception's type
    return msg if record.args else _VALUES.sub("_", msg)


def _age(window: _Window, now: float) -> int:
    return max(1, round(now - window.started))


def make_formatter(fmt: LogFormat | str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be text or json, not {fmt!r}")


def configure_logging(level: str, *, fmt: LogFormat | str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    # pynetdicom's warnings and errors, which a peer can cause once per connection
    handler.addFilter(LibraryFlood())
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
