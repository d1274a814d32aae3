"""LogLimiter: one line per key and window, with counts that add up."""

from __future__ import annotations

import gc
import itertools
import logging
import re
import threading
import weakref

import pytest

from dicom_node.log_limit import LogLimiter, flush_all

SUFFIX = re.compile(r" \((\d+) more like this in the last (\d+) s\)$")
_names = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger(f"tests.log_limit.{next(_names)}")


def _limiter(logger: logging.Logger, clock: Clock, **kwargs: object) -> LogLimiter:
    return LogLimiter(logger, clock=clock, **kwargs)  # type: ignore[arg-type]


def _lines(caplog: pytest.LogCaptureFixture, logger: logging.Logger) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger.name]


def _accounted(lines: list[str]) -> int:
    """Every line stands for itself plus the count in its suffix."""
    return sum(1 + int(m.group(1)) if (m := SUFFIX.search(line)) else 1 for line in lines)


def test_the_first_line_of_a_key_is_written_at_once_and_repeats_are_held_back(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    assert limiter.warning(("not stored", "disk full"), "instance not stored (%s)", "disk full")
    for _ in range(5):
        clock.now += 1
        assert not limiter.warning(("not stored", "disk full"), "instance not stored (%s)", "x")
    assert _lines(caplog, logger) == ["instance not stored (disk full)"]


def test_the_next_line_after_the_window_carries_the_count_of_those_held_back(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    for second in range(10):  # 0..9 s: inside the 10 s window
        clock.now = 1000.0 + second
        limiter.error("k", "instance not stored (%s): %s", "disk full", f"errno {second}")
    clock.now = 1012.0
    assert limiter.error("k", "instance not stored (%s): %s", "disk full", "errno 12")
    assert _lines(caplog, logger) == [
        "instance not stored (disk full): errno 0",
        "instance not stored (disk full): errno 12 (9 more like this in the last 12 s)",
    ]
    assert [r.levelno for r in caplog.records if r.name == logger.name] == [logging.ERROR] * 2


def test_a_new_window_starts_with_each_line_written(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock, window_seconds=10.0)
    written = []
    for tenth in range(300):  # 30 s, a line every 0.1 s
        clock.now = 1000.0 + tenth / 10
        written.append(limiter.warning("k", "refused"))
    assert [i / 10 for i, w in enumerate(written) if w] == [0.0, 10.0, 20.0]
    lines = _lines(caplog, logger)
    assert lines == [
        "refused",
        "refused (99 more like this in the last 10 s)",
        "refused (99 more like this in the last 10 s)",
    ]
    limiter.flush()
    assert _accounted(_lines(caplog, logger)) == 300


def test_a_line_alone_in_its_window_carries_no_suffix(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    limiter.warning("k", "refused")
    clock.now += 60
    limiter.warning("k", "refused")
    assert _lines(caplog, logger) == ["refused", "refused"]


def test_keys_do_not_hold_each_other_back(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    for _ in range(3):
        limiter.warning(("refused", "CT_1"), "instance from %s refused", "CT_1")
        limiter.warning(("refused", "MR_2"), "instance from %s refused", "MR_2")
        limiter.error(("not stored", "disk full"), "instance not stored (%s)", "disk full")
    assert _lines(caplog, logger) == [
        "instance from CT_1 refused",
        "instance from MR_2 refused",
        "instance not stored (disk full)",
    ]


def test_the_count_of_an_ended_window_is_written_by_a_line_of_another_key(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    for reason in ("first", "second", "third"):
        limiter.error("a", "instance not stored: %s", reason)
    clock.now += 11
    limiter.warning("b", "instance refused")
    records = [r for r in caplog.records if r.name == logger.name]
    assert [r.getMessage() for r in records] == [
        "instance not stored: first",
        # the last line held back, standing for itself and the one before it
        "instance not stored: third (1 more like this in the last 11 s)",
        "instance refused",
    ]
    assert records[1].levelno == logging.ERROR
    clock.now += 11
    limiter.warning("b", "instance refused")  # nothing of "a" is left to write
    assert _lines(caplog, logger)[3:] == ["instance refused"]


def test_flush_writes_held_counts_before_their_window_ends(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    limiter.warning("a", "refused a")
    limiter.warning("a", "refused a")
    limiter.warning("b", "refused b")
    clock.now += 3
    assert limiter.flush() == 1
    assert _lines(caplog, logger) == [
        "refused a",
        "refused b",
        "refused a (0 more like this in the last 3 s)",
    ]
    assert limiter.flush() == 0


def test_the_lines_written_account_for_every_line_logged(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock, window_seconds=5.0)
    logged = {"a": 0, "b": 0, "c": 0}
    started = clock.now
    for step in range(2000):
        clock.now += (step * 7919 % 13) / 10  # irregular gaps of 0 to 1.2 s
        key = "abc"[step * 31 % 7 % 3]
        limiter.warning(key, "line %s", key)
        logged[key] += 1
    limiter.flush()
    lines = _lines(caplog, logger)
    for key, count in logged.items():
        assert _accounted([line for line in lines if line.startswith(f"line {key}")]) == count
    # at most one line per key and window, and the flush
    assert len(lines) <= 3 * ((clock.now - started) / 5.0 + 2)
    assert len(lines) < 2000 / 2


def test_counts_add_up_when_many_threads_log_the_same_key(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        for _ in range(500):
            limiter.error(("not stored", "disk full"), "instance not stored (%s)", "disk full")

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.flush()
    lines = _lines(caplog, logger)
    assert lines == [
        "instance not stored (disk full)",
        "instance not stored (disk full) (3998 more like this in the last 1 s)",
    ]
    assert _accounted(lines) == 8 * 500


def test_past_max_keys_new_keys_are_written_unlimited_until_old_ones_expire(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock, max_keys=2)
    limiter.warning("a", "a")
    limiter.warning("a", "a")  # held
    limiter.warning("b", "b")
    limiter.warning("c", "c")
    limiter.warning("c", "c")  # no room to count it: written, never dropped
    assert _lines(caplog, logger) == ["a", "b", "c", "c"]
    clock.now += 10
    limiter.warning("c", "c")  # "b" is forgotten, "a" writes out its count
    limiter.warning("c", "c")  # now counted
    assert _lines(caplog, logger)[4:] == ["a (0 more like this in the last 10 s)", "c"]
    limiter.flush()
    assert _lines(caplog, logger)[6:] == ["c (0 more like this in the last 1 s)"]


def test_lines_below_the_logger_level_are_neither_written_nor_counted(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    logger.setLevel(logging.ERROR)
    limiter = _limiter(logger, clock)
    assert not limiter.warning("k", "refused")
    assert limiter.error("k", "not stored")
    assert limiter.flush() == 0
    assert _lines(caplog, logger) == ["not stored"]


def test_the_record_names_the_caller_not_the_limiter(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    limiter = _limiter(logger, clock)
    limiter.warning("k", "refused")
    limiter.log("k", logging.WARNING, "refused")
    limiter.flush()
    records = [r for r in caplog.records if r.name == logger.name]
    assert len(records) == 2
    assert {(r.pathname, r.funcName) for r in records} == {
        (__file__, "test_the_record_names_the_caller_not_the_limiter")
    }


def test_flush_all_writes_the_counts_of_every_limiter(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    loggers = [logging.getLogger(f"tests.log_limit.{next(_names)}") for _ in range(2)]
    limiters = [_limiter(lg, clock) for lg in loggers]
    for limiter in limiters:
        limiter.warning("k", "refused")
        limiter.warning("k", "refused")
    assert flush_all() >= 2
    for lg in loggers:
        assert _lines(caplog, lg) == ["refused", "refused (0 more like this in the last 1 s)"]


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        LogLimiter(logging.getLogger("tests.log_limit"), window_seconds=0)


def test_a_held_line_keeps_its_text_not_the_callers_objects(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger, clock: Clock
) -> None:
    class Failure(Exception):
        pass

    limiter = _limiter(logger, clock)
    limiter.warning("k", "refused: %s", Failure("first"))
    held = Failure("no space left")  # an exception pins its traceback's frames
    limiter.warning("k", "refused: %s", held)
    gone = weakref.ref(held)
    del held
    gc.collect()
    assert gone() is None
    limiter.flush()
    assert _lines(caplog, logger)[-1] == "refused: no space left (0 more like this in the last 1 s)"
