"""Backup, verify and restore of a node's store, against the plain tools an
administrator would otherwise use.

Orthanc and DCMTK have no backup or integrity command to compare with, so the
baselines are what a careful admin scripts by hand on the same files, in the
same run: ``cp -a`` of the store plus SQLite's online backup (a copy with no
checks), and ``sha256sum`` over every file (the hashing alone). The node's
commands do more (a manifest, every file hashed and compared with the index,
restore checked end to end); the ratios say what that costs.

    .venv/bin/python bench/operations.py [--count 2000]

SQLite only; the data set is bench/ingest.py's CT set (256x256, ~130 KB each),
cached under --cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import prepare_set  # noqa: E402

NODE = [sys.executable, "-m", "dicom_node"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    env["DICOM_NODE_DATA_DIR"] = str(data_dir)
    return env


def _timed(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {result.stderr.strip()[-400:]}")
    return took


def _sqlite_copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=2000, help="CT instances (default 2000)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dn-bench")
    args = parser.parse_args(argv)

    data = prepare_set(args.cache, "ct", args.count, 1)
    work = Path(tempfile.mkdtemp(prefix="dn-ops-"))
    try:
        store = work / "data"
        imported = _timed([*NODE, "import", str(data.files[0].parents[2])], _env(store))
        files = sorted((store / "instances").rglob("*.dcm"))
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        db_file = store / "dicom-node.sqlite3"

        rows: list[tuple[str, float, str, float]] = []
        backup = _timed([*NODE, "backup", str(work / "backup")], _env(store))
        started = time.monotonic()
        shutil.copytree(
            store / "instances", work / "plain" / "instances", copy_function=shutil.copy2
        )
        _sqlite_copy(db_file, work / "plain" / "db.sqlite3")
        subprocess.run(["sync"], check=True)
        plain_copy = time.monotonic() - started
        rows.append(
            (
                "backup (copy, hash, manifest, fsync)",
                backup,
                "cp -a + sqlite backup + sync",
                plain_copy,
            )
        )

        verify = _timed([*NODE, "verify"], _env(store))
        started = time.monotonic()
        for chunk in range(0, len(files), 500):
            subprocess.run(
                ["sha256sum", *map(str, files[chunk : chunk + 500])],
                check=True,
                capture_output=True,
            )
        sha = time.monotonic() - started
        rows.append(("verify (hash every file vs index)", verify, "sha256sum of every file", sha))
        quick = _timed([*NODE, "verify", "--quick"], _env(store))
        rows.append(("verify --quick (sizes only)", quick, "sha256sum of every file", sha))

        restored = work / "restored"
        restore = _timed([*NODE, "restore", str(work / "backup")], _env(restored))
        started = time.monotonic()
        shutil.copytree(work / "plain", work / "plain-restored", copy_function=shutil.copy2)
        subprocess.run(["sync"], check=True)
        plain_restore = time.monotonic() - started
        rows.append(("restore (hash-checked, verified)", restore, "cp -a + sync", plain_restore))

        print(
            f"{len(files)} instances, {size_mb:.0f} MB, SQLite; import took {imported:.1f} s; "
            f"{os.cpu_count()} cores"
        )
        print(f"| {'operation':<38} | node s | {'baseline':<30} | base s | ratio |")
        print(f"|{'-' * 40}|-------:|{'-' * 32}|-------:|------:|")
        for name, node_s, base_name, base_s in rows:
            print(
                f"| {name:<38} | {node_s:6.1f} | {base_name:<30} | {base_s:6.1f} "
                f"| {node_s / base_s:5.1f} |"
            )
        print(
            f"node throughput: backup {size_mb / backup:.0f} MB/s, "
            f"verify {size_mb / verify:.0f} MB/s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
