"""How to make a group of instance files durable: per-file fsync on the sending
threads, or one batched sync in the index writer (docs/ingest.md#group-commit).

A script, not a test. Run from the repository, on the file system of the store:

    .venv/bin/python bench/fsync_batch.py DATA_DIR/bench-fsync [FILES]

It writes FILES (256) files of 130 KB (a CT instance) and prints the wall time
per file of: fsync of each file as it is written, by 1 and by 4 threads (the
associations of a worker); and, for groups of 4, 16 and 64 files written
unsynced, one ``syncfs`` of the file system or an fsync of each file by one
thread (the writer). Two rounds; the files are removed.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import uuid
from pathlib import Path

SIZE = 130_000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _write(root: Path, data: bytes, *, sync: bool) -> Path:
    path = root / f"{uuid.uuid4().hex}.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return path


def per_file(root: Path, data: bytes, count: int, threads: int) -> float:
    def run(n: int) -> None:
        for _ in range(n):
            _write(root, data, sync=True)

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / count * 1000


def grouped(root: Path, data: bytes, count: int, group: int, *, syncfs: bool) -> float:
    started = time.perf_counter()
    for _ in range(count // group):
        paths = [_write(root, data, sync=False) for _ in range(group)]
        if syncfs:
            fd = os.open(root, os.O_RDONLY)
            try:
                _libc.syncfs(fd)
            finally:
                os.close(fd)
        else:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    root = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    root.mkdir(parents=True, exist_ok=True)
    data = os.urandom(SIZE)
    try:
        for round_ in (1, 2):
            one, four = per_file(root, data, count, 1), per_file(root, data, count, 4)
            print(
                f"round {round_}: per-file fsync, 1 thread {one:.2f} ms/file, 4 threads {four:.2f}"
            )
            for group in (4, 16, 64):
                fs = grouped(root, data, count, group, syncfs=True)
                each = grouped(root, data, count, group, syncfs=False)
                print(
                    f"  group {group}: syncfs {fs:.2f} ms/file, fsync each in one thread {each:.2f}"
                )
            for path in root.glob("*.part"):
                path.unlink()
    finally:
        for path in root.glob("*.part"):
            path.unlink()


if __name__ == "__main__":
    main()
