"""CPU per instance of the header read: the lean walk (``read_header``) against
pydicom's read (``read_header_with_pydicom``), interleaved, on the ingest
benchmark's CT-like and small instances and on pydicom's CT_small.dcm.

    .venv/bin/python bench/header_read.py            # 7 rounds
    .venv/bin/python bench/header_read.py --rounds 15

The instances are read from bench/ingest.py's cache (generated there when
missing: ``bench/ingest.py --quick`` makes them), as bytes in memory as a
C-STORE data set arrives. Each round times both reads of every set, in
alternating order; the figure is the median round, in microseconds of process
CPU time (time.process_time) per instance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path

from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import DEFAULT_ROOT, prepare_set
from dicom_node.domain.dataset_header import (
    InstanceHeader,
    read_header,
    read_header_with_pydicom,
)


def _sets(count: int) -> dict[str, list[bytes]]:
    ct = prepare_set(DEFAULT_ROOT / "data", "ct", 300, 1)
    small = prepare_set(DEFAULT_ROOT / "data", "small", 1000, 200)
    ct_small = get_testdata_file("CT_small.dcm")
    assert ct_small is not None
    return {
        "CT-like (bench)": [path.read_bytes() for path in ct.files[:count]],
        "small (bench)": [path.read_bytes() for path in small.files[:count]],
        "CT_small.dcm": [Path(ct_small).read_bytes()] * count,
    }


def _per_instance_us(read: Callable[[bytes], InstanceHeader], files: list[bytes]) -> float:
    def run() -> None:
        for data in files:
            read(data)

    seconds = timeit.Timer(run, timer=time.process_time).timeit(number=3)
    return seconds / (3 * len(files)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--files", type=int, default=200, help="instances per set")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    sets = _sets(args.files)
    for files in sets.values():  # the same headers both ways, before timing
        assert all(read_header(data) == read_header_with_pydicom(data) for data in files)
    reads = {"pydicom": read_header_with_pydicom, "lean": read_header}
    results: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        order = list(reads) if round_number % 2 == 0 else list(reversed(reads))
        for name, files in sets.items():
            for variant in order:
                us = _per_instance_us(reads[variant], files)
                results.setdefault((name, variant), []).append(us)
    print(f"{'set':<18} {'pydicom us':>11} {'lean us':>9} {'ratio':>6}   (median of {args.rounds})")
    for name in sets:
        old = statistics.median(results[(name, "pydicom")])
        new = statistics.median(results[(name, "lean")])
        print(f"{name:<18} {old:>11.0f} {new:>9.0f} {old / new:>5.1f}x")


if __name__ == "__main__":
    main()
