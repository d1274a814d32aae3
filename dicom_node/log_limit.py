"""Rate limiting for log lines that repeat once per request.

A modality resending 10,000 instances into a full disk would otherwise write
10,000 identical ERROR lines. A `LogLimiter` writes the first line of a key at
once, counts the lines of that key that follow within the window (default 10 s)
without writing them, and adds the count to the next line of the key it writes::

    instance not stored (disk full): cannot write the file: [Errno 28] No spac...
    instance not stored (disk full): cannot write the file: [Errno 28] No spac...
        ... (37 more like this in the last 12 s)

Nothing is lost: every line written stands for itself plus the number in its
suffix, so the lines of a key add up to the number of times it was logged
(while its level is enabled). A count whose window has ended and that no line
of its own key came to carry is written out by the next line of *any* key of
the limiter: the last line held back, with the count of the others (possibly
"0 more"). `LogLimiter.flush` (or `flush_all`, for every limiter of the
process) writes out all counts at once, e.g. when the node stops.

Keys are the caller's: say *what kind* of line it is (what went wrong, which
peer), never patient data or UIDs. Messages are %-format strings (the suffix is
appended to them). Counts are per limiter, so per process; a limiter is safe to
share between threads (lines are written outside its lock).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

DEFAULT_WINDOW_SECONDS = 10.0
# keys held at once; past that, lines of new keys are written unlimited (never dropped)
DEFAULT_MAX_KEYS = 1024
_SUFFIX = " (%d more like this in the last %d s)"

_limiters: weakref.WeakSet[LogLimiter] = weakref.WeakSet()
_limiters_lock = threading.Lock()


@dataclass(slots=True)
class _Window:
    started: float  # when the last line of the key was written
    held: int = 0  # lines of the key not written since
    # the last line held back, as text (no reference kept to the caller's objects):
    # written out if no later line of the key comes to carry the count
    level: int = logging.NOTSET
    text: str = ""


@dataclass(frozen=True, slots=True)
class _Line:
    level: int
    msg: str
    args: tuple[object, ...]


class LogLimiter:
    """Writes lines to ``logger``, at most one per key and window; see the module doc."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.logger = logger
        self.window_seconds = window_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._next_due = math.inf  # earliest end of a window holding lines back
        self._lock = threading.Lock()
        with _limiters_lock:
            _limiters.add(self)

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self._log(key, logging.WARNING, msg, args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        return self._log(key, logging.ERROR, msg, args)

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless a line of ``key`` was written less
        than a window ago. True if this line was written now."""
        return self._log(key, level, msg, args)

    def flush(self) -> int:
        """Write out every count held back, whether its window has ended or not.
        Returns the number of lines written."""
        now = self._clock()
        with self._lock:
            lines = [self._release(window, now) for window in self._windows.values() if window.held]
            self._next_due = math.inf
        self._write(lines, stacklevel=3)
        return len(lines)

    def _log(self, key: Hashable, level: int, msg: str, args: tuple[object, ...]) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        line: _Line | None = _Line(level, msg, args)
        with self._lock:
            lines: list[_Line] = []
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self._max_keys:
                    lines = self._windows_due(now, prune=True)
                if len(self._windows) < self._max_keys:
                    self._windows[key] = _Window(started=now)
                # else: too many keys held; this one goes out unlimited, never dropped
            elif now - window.started >= self.window_seconds:
                # the window is over: this line goes out and carries the count
                if window.held:
                    line = _Line(level, msg + _SUFFIX, (*args, window.held, self._age(window, now)))
                window.started, window.held, window.text = now, 0, ""
            else:
                window.held += 1
                window.level, window.text = level, _render(msg, args)
                self._next_due = min(self._next_due, window.started + self.window_seconds)
                line = None
            lines += self._windows_due(now)
        if line is not None:
            lines.append(line)
        # stacklevel: the record names the caller of warning()/error()/log()
        self._write(lines, stacklevel=4)
        return line is not None

    def _windows_due(self, now: float, *, prune: bool = False) -> list[_Line]:
        """Counts of ended windows, written out by whichever line comes next; ended
        windows with nothing held are forgotten (``prune``: even if none is due)."""
        if now < self._next_due and not prune:
            return []
        lines: list[_Line] = []
        next_due = math.inf
        for key, window in list(self._windows.items()):
            ended = now - window.started >= self.window_seconds
            if window.held and ended:
                lines.append(self._release(window, now))
            elif window.held:
                next_due = min(next_due, window.started + self.window_seconds)
            elif ended:
                del self._windows[key]
        self._next_due = next_due
        return lines

    def _release(self, window: _Window, now: float) -> _Line:
        """The last line held back, carrying the count of the others; a new window
        starts, as for any line written."""
        line = _Line(
            window.level, "%s" + _SUFFIX, (window.text, window.held - 1, self._age(window, now))
        )
        window.started, window.held, window.text = now, 0, ""
        return line

    def _age(self, window: _Window, now: float) -> int:
        return max(1, round(now - window.started))

    def _write(self, lines: list[_Line], *, stacklevel: int) -> None:
        for line in lines:
            self.logger.log(line.level, line.msg, *line.args, stacklevel=stacklevel)


def _render(msg: str, args: tuple[object, ...]) -> str:
    try:
        return msg % args if args else msg
    except (TypeError, ValueError, KeyError):
        return f"{msg} {args!r}"  # as logging would, rather than lose the line


def flush_all() -> int:
    """`LogLimiter.flush` every limiter of this process (e.g. before it exits).
    Returns the number of lines written."""
    with _limiters_lock:
        limiters = list(_limiters)
    return sum(limiter.flush() for limiter in limiters)
