"""Process logging: the text default, the JSON lines option, and escaping (no record
can forge another: issue 13, finding 11)."""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from dicom_node.logging_setup import (
    TEXT_CONTINUATION,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    escape_control,
)
from dicom_node.settings import Settings

_QUIETED = ("pynetdicom", "pydicom", "py.warnings", "apscheduler", "alembic", "uvicorn.error")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in _QUIETED}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
    logging.captureWarnings(False)


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("disk full")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "dicom_node.scp", logging.WARNING, __file__, 1, message, args or None, exc_info
    )


def test_json_line_has_utc_time_level_logger_and_the_formatted_message() -> None:
    line = JsonFormatter().format(_record("association from %s closed: %d stored", "CT1", 3))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "dicom_node.scp"
    assert entry["message"] == "association from CT1 closed: 3 stored"
    assert entry["ts"].endswith("Z")
    ts = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - ts) < timedelta(minutes=1)
    assert "exception" not in entry


def test_json_line_carries_the_traceback_as_text_on_one_line() -> None:
    line = JsonFormatter().format(_record("could not write the audit event", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "could not write the audit event"
    assert entry["exception"].startswith("Traceback")
    assert "RuntimeError: disk full" in entry["exception"]


def test_json_line_stays_ascii_for_non_ascii_messages() -> None:
    line = JsonFormatter().format(_record("station %s", "Ærø-CT"))
    assert line.isascii()
    assert json.loads(line)["message"] == "station Ærø-CT"


def test_json_line_adds_no_record_attributes_beyond_the_message() -> None:
    record = _record("stored")
    record.patient_name = "DOE^JANE"  # an ``extra=`` a caller might pass
    entry = json.loads(JsonFormatter().format(record))
    assert set(entry) == {"ts", "level", "logger", "message", "pid"}
    assert "DOE" not in json.dumps(entry)


def test_configure_logging_json_writes_parseable_lines_to_stderr(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt="json")
    logging.getLogger("dicom_node.jobs").info("escalation: %d items overdue", 2)
    logging.getLogger("dicom_node.jobs").debug("not at INFO")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("dicom_node.api").exception("request failed")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries] == ["escalation: 2 items overdue", "request failed"]
    assert entries[1]["level"] == "ERROR"
    assert "ValueError: bad value" in entries[1]["exception"]


def test_configure_logging_text_is_the_default(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    logging.getLogger("dicom_node.scp").warning("association rejected")
    err = capsys.readouterr().err
    assert err.rstrip().endswith("WARNING dicom_node.scp: association rejected")
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)


def test_configure_logging_refuses_an_unknown_format(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="text or json"):
        configure_logging("INFO", fmt="xml")


def test_log_format_setting_takes_text_or_json_only() -> None:
    assert Settings().log_format == "text"
    assert Settings(log_format="json").log_format == "json"
    with pytest.raises(ValidationError):
        Settings(log_format="xml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- escaping

# what a peer would put in a UID or an AE title to forge a record of its own
FORGED = "1.2.3\n2026-01-01 00:00:00,000 ERROR dicom_node.scp: admin signed in"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("a\tb", "a\\tb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # ANSI colour (ESC)
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),  # line breaks to some readers
        ("nel\x85csi\x9b", "nel\\x85csi\\x9b"),  # C1: next line, 8-bit CSI
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),  # Unicode line/paragraph separators
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),  # bidi override and isolate
    ],
)
def test_escape_control_writes_control_characters_as_escapes(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


def test_escape_control_leaves_ordinary_text_alone() -> None:
    for text in ("CT_MAIN_1", "1.2.840.10008.1.1", "NOPE\\?*", "Ærø-CT", "名前", "a b  c"):
        assert escape_control(text) == text


def test_text_record_with_a_forged_line_in_a_value_stays_one_line() -> None:
    line = TextFormatter().format(_record("association from %s at %s", FORGED, "10.0.0.9:104"))
    assert line.count("\n") == 0
    assert line.endswith(
        "association from 1.2.3\\n2026-01-01 00:00:00,000 ERROR "
        "dicom_node.scp: admin signed in at 10.0.0.9:104"
    )


def test_text_record_escapes_the_message_itself_not_only_arguments() -> None:
    line = TextFormatter().format(_record(f"value {FORGED}\x1b[2J"))
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("\\x1b[2J")


def test_text_traceback_lines_are_indented_so_none_can_pass_for_a_record() -> None:
    try:
        raise ValueError(f"Invalid 'Calling AE Title' value '{FORGED}'")
    except ValueError:
        record = _record("undecodable PDU received")
        record.exc_info = sys.exc_info()
    lines = TextFormatter().format(record).split("\n")
    assert RECORD_START.match(lines[0])
    assert lines[0].endswith("undecodable PDU received")
    assert len(lines) > 3
    assert all(line.startswith(TEXT_CONTINUATION) for line in lines[1:])
    assert not any(RECORD_START.match(line) for line in lines[1:])
    assert lines[1] == TEXT_CONTINUATION + "Traceback (most recent call last):"
    # the forged text is there, on an indented continuation line
    assert any(line.startswith(TEXT_CONTINUATION + "2026-01-01") for line in lines)


def test_text_traceback_escapes_carriage_returns_and_terminal_sequences() -> None:
    try:
        raise RuntimeError("over\rwritten \x1b]0;title\x07")
    except RuntimeError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    assert "\r" not in text and "\x1b" not in text and "\x07" not in text
    assert "over\\rwritten \\x1b]0;title\\x07" in text


def test_json_message_is_escaped_and_one_line() -> None:
    line = JsonFormatter().format(_record("abstract syntax %s", FORGED + "\x1b[0m\u2028"))
    assert "\n" not in line
    entry = json.loads(line)
    assert "\n" not in entry["message"] and "\x1b" not in entry["message"]
    assert entry["message"] == "abstract syntax " + escape_control(FORGED + "\x1b[0m\u2028")


def test_json_traceback_keeps_its_lines_but_escapes_the_rest() -> None:
    try:
        raise ValueError("bad \x1b[31m value\r")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exception"].startswith("Traceback")
    assert entry["exception"].endswith("ValueError: bad \\x1b[31m value\\r")
    assert "\x1b" not in entry["exception"] and "\r" not in entry["exception"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_configured_handler_escapes_records_of_every_logger(
    fmt: str, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt=fmt)
    # pynetdicom's own line for a non-conformant UID of an A-ASSOCIATE-RQ
    logging.getLogger("pynetdicom.utils").warning(
        f"Non-conformant 'abstract_syntax' value '{FORGED}'"
    )
    logging.getLogger("dicom_node.scp").warning("association from %s", "EV\nIL")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    if fmt == "json":
        messages = [json.loads(line)["message"] for line in lines]
    else:
        assert all(RECORD_START.match(line) for line in lines)
        messages = lines
    assert messages[0].endswith(
        "value '1.2.3\\n2026-01-01 00:00:00,000 ERROR dicom_node.scp: admin signed in'"
    )
    assert messages[1].endswith("association from EV\\nIL")


def test_python_warnings_go_through_the_handler_at_debug_only(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """pydicom warns about an invalid value quoting it (PHI, a forged line): never
    printed raw on stderr; at DEBUG, one escaped record."""
    configure_logging("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR DA: {FORGED}", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("Invalid value for VR PN: 'DOE^JANE'")
    assert capsys.readouterr().err == ""

    configure_logging("DEBUG")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR DA: {FORGED}", UserWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert RECORD_START.match(lines[0])
    assert "WARNING py.warnings: " in lines[0] and "\\n2026-01-01" in lines[0]
