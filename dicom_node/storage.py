"""The file store: one file per instance, at a path built only from validated UIDs.

Writes go to ``tmp/`` first and are renamed into place with ``os.replace`` (atomic
on POSIX), so a reader or a crash never sees a half-written instance file. With
``fsync`` on (the default) the data and the directory entry are flushed before
the rename is reported, so an acknowledged instance survives a power cut.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from dicom_node.domain.part10_source import Buffer
from dicom_node.domain.vr import validate_uid

log = logging.getLogger("dicom_node.storage")

TEMP_SUFFIX = ".part"


class FileStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.instances = self.root / "instances"
        self.tmp = self.root / "tmp"
        self.fsync = fsync
        self.instances.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths

    @staticmethod
    def relative_path(
        study_uid: str, series_uid: str, sop_uid: str, *, variant: str | None = None
    ) -> str:
        """``<study>/<series>/<sop>.dcm``; every part is a validated UID, so no
        value a peer sends can escape the store ('..', '/', NUL never pass)."""
        parts = [
            validate_uid(study_uid, name="StudyInstanceUID"),
            validate_uid(series_uid, name="SeriesInstanceUID"),
            validate_uid(sop_uid, name="SOPInstanceUID"),
        ]
        if variant is not None:
            if not variant.isalnum():
                raise ValueError("a file variant is alphanumeric")
            parts[2] = f"{parts[2]}.{variant}"
        return f"{parts[0]}/{parts[1]}/{parts[2]}.dcm"

    def absolute(self, relative: str) -> Path:
        path = (self.instances / relative).resolve()
        if not path.is_relative_to(self.instances):
            raise ValueError("path outside the store")
        return path

    # ------------------------------------------------------------------ writing

    def write_temp(self, data: Buffer) -> Path:
        """Write ``data`` to a new temp file inside the store (same file system as
        the final place, so the later rename is atomic)."""
        path = self.tmp / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path

    def install(self, temp: Path, relative: str) -> Path:
        """Move a temp file to its final place, replacing what is there atomically.

        The rename is durable only once ``sync_directory`` has run on the result:
        the ingest path does that after its database commit, so the commit's lock
        is not held across a directory fsync.
        """
        final = self.absolute(relative)
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                # the new directories' own entries must be durable too (rare: a new series)
                _fsync_dir(final.parent.parent)
                _fsync_dir(final.parent.parent.parent)
        os.replace(temp, final)
        return final

    def sync_directory(self, installed: Path) -> None:
        """Make an ``install`` durable (a no-op with fsync off)."""
        if self.fsync:
            _fsync_dir(installed.parent)

    def exists(self, relative: str) -> bool:
        return self.absolute(relative).is_file()

    def remove(self, relative: str) -> None:
        self.absolute(relative).unlink(missing_ok=True)

    def sweep_temp(self, *, older_than_seconds: float) -> int:
        """Delete temp files left by interrupted transfers; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.tmp.glob(f"*{TEMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished or swept by someone else meanwhile
        return removed

    def iter_files(self) -> list[Path]:
        return sorted(self.instances.rglob("*.dcm"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
