"""SQLite writers of every process queue on one kernel file lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from sqlalchemy import text

from dicom_node.db import migrate
from dicom_node.db.engine import Database


def test_a_writer_waits_for_another_process_and_goes_as_soon_as_it_releases(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    migrate.upgrade(url)
    db = Database(url)
    # another process's writer, as seen by the kernel: its own open file, locked
    other = os.open(tmp_path / "node.sqlite3.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    finished: list[float] = []

    def write() -> None:
        with db.unit_of_work() as session:
            session.execute(text("SELECT 1"))
        finished.append(time.monotonic())

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.5)
    assert finished == []  # queued behind the other process
    released = time.monotonic()
    fcntl.flock(other, fcntl.LOCK_UN)
    writer.join(timeout=10)
    os.close(other)
    db.dispose()
    assert finished and finished[0] - released < 0.5  # no busy-handler back-off


def test_readers_never_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    migrate.upgrade(url)
    db = Database(url)
    other = os.open(tmp_path / "node.sqlite3.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with db.read() as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
        db.dispose()
