"""Process logging: one line per event on stderr; pynetdicom kept quiet.

``fmt="json"`` writes one JSON object a line for log shippers (ts in ISO 8601
UTC, level, logger, message, pid, and the traceback as ``exception``). It
carries exactly what the text lines carry, nothing more: no record attributes
beyond the formatted message, so no identifiers a handler did not put there.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # several DICOM worker processes share one stderr
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII escapes: a line stays valid whatever encoding stderr has
        return json.dumps(entry, default=str)


def make_formatter(fmt: LogFormat | str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise ValueError(f"log format must be text or json, not {fmt!r}")


def configure_logging(level: str, *, fmt: LogFormat | str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's INFO lines describe every association and request; ours say what
    # matters without identifiers. Its warnings and errors still come through.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
