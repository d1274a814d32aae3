"""Process logging: the text default and the JSON lines option."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from dicom_node.logging_setup import JsonFormatter, configure_logging
from dicom_node.settings import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
