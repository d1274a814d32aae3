"""bench/ingest.py several times, interleaved, and the medians: the figure to judge on.

Single ingest runs move by 20-30% on a small shared machine, and ratios near
1.0 flip from run to run, so a claim is made on the median of several rounds.
Each round runs, one after the other, the node on each database asked for
(each run with Orthanc beside it, so every run has its own Orthanc figure and
ratio) and, with ``--baseline DIR``, an older checkout of the node (node only,
on SQLite, ``PYTHONPATH=DIR``) and, with ``--variant NAME:DICOM_NODE_X=VALUE``,
the node with a setting changed (node only, on the first database; e.g.
``--variant no-fsync:DICOM_NODE_FSYNC=false``); the order inside a round turns
with each round. To compare two nodes, run them alike: ``--no-orthanc`` leaves
Orthanc out (a node run right after an Orthanc run is not measured as one
after a node run: the disk is still busy with Orthanc's files). A script, run
as root from the repository:

    .venv/bin/python bench/ingest_rounds.py --rounds 3
    .venv/bin/python bench/ingest_rounds.py --rounds 3 --databases sqlite \\
        --baseline /tmp/prev16 -- --ct 300 --small 1000 --small-studies 200

Arguments after ``--`` go to every bench/ingest.py run (sets, clients,
``--profile``, ``--node-env``...). Prints each run's output as it goes, then
one table: per set and client count, the median instances/s of each target
with each run's figure, the median of the runs' node/Orthanc ratios, the
median CPU per instance of each server (its process tree, user + system) and
the peak RSS and PSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent / "ingest.py"


@dataclass
class Run:
    """One bench/ingest.py run: which node, on which database."""

    label: str  # the table's column: "node sqlite", "before", ...
    database: str
    pythonpath: str | None = None  # an older checkout, first on the path
    node_env: list[str] = field(default_factory=list)  # a variant's settings

    orthanc: bool = True  # --no-orthanc: node runs only (an A/B of two nodes)

    @property
    def with_orthanc(self) -> bool:
        return self.orthanc and self.pythonpath is None and not self.node_env


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # to the same run's Orthanc
    rss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # ms per instance


def _runs(args: argparse.Namespace) -> list[Run]:
    runs = [Run(f"node {db}", db, orthanc=args.orthanc) for db in args.databases]
    if args.baseline is not None:
        runs.append(Run("before", "sqlite", str(args.baseline)))
    for variant in args.variant:
        name, _, setting = variant.partition(":")
        runs.append(Run(name, args.databases[0], node_env=[setting]))
    return runs


def _one(run: Run, passthrough: list[str], out: Path) -> dict[str, Any]:
    only = "node,orthanc" if run.with_orthanc else "node"
    command = [sys.executable, str(BENCH), "--only", only, "--database", run.database]
    command += [*passthrough, "--json", str(out)]
    for setting in run.node_env:
        command += ["--node-env", setting]
    env = dict(os.environ)
    if run.pythonpath is not None:
        env["PYTHONPATH"] = run.pythonpath
    print(f"\n== {run.label}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0 or not out.exists():
        print(f"== {run.label}: bench/ingest.py exited {done.returncode}", flush=True)
        return {"loadavg": [], "results": []}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _median(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    runs = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{statistics.median(values):.{digits}f} ({runs})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, passthrough = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument("--baseline", type=Path, default=None, help="an older checkout")
    parser.add_argument(
        "--no-orthanc",
        dest="orthanc",
        action="store_false",
        help="node runs only: comparing two nodes, each run alike (no Orthanc run between)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:DICOM_NODE_X=VALUE",
        help="also the node with this setting, on the first database, labelled NAME (repeatable)",
    )
    args = parser.parse_args(ours)
    args.databases = [db.strip() for db in args.databases.split(",") if db.strip()]
    for variant in args.variant:
        name, _, setting = variant.partition(":")
        if not name or not setting.startswith("DICOM_NODE_") or "=" not in setting:
            parser.error(f"--variant {variant!r}: NAME:DICOM_NODE_X=VALUE")
    if os.geteuid() != 0:
        sys.exit("bench: run as root (bench/ingest.py measures in a private network namespace)")
    runs = _runs(args)
    cells: dict[tuple[str, str, int], Cell] = {}
    sets: dict[str, float] = {}
    loads: list[float] = []
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="ingest-rounds-") as tmp:
        for round_no in range(args.rounds):
            turn = round_no % len(runs)
            for i, run in enumerate(runs[turn:] + runs[:turn]):
                data = _one(run, passthrough, Path(tmp) / f"r{round_no}-{i}.json")
                loads += [float(x) for x in data.get("loadavg", [])[:1]]
                results: list[dict[str, Any]] = data.get("results", [])
                orthanc = {
                    (r["set"], r["clients"]): r["rate"] for r in results if r["target"] == "orthanc"
                }
                for r in results:
                    label = "orthanc" if r["target"] == "orthanc" else run.label
                    sets[r["set"]] = r["mean_kb"]
                    cell = cells.setdefault((label, r["set"], r["clients"]), Cell())
                    if r["rate"] is None:
                        continue  # a failed run: its errors were printed
                    cell.rates.append(r["rate"])
                    cell.rss.append(r["peak_rss_mb"])
                    cell.pss.append(r["peak_pss_mb"])
                    if r.get("cpu_ms") is not None:
                        cell.cpu.append(r["cpu_ms"])
                    theirs = orthanc.get((r["set"], r["clients"]))
                    if label != "orthanc" and theirs:
                        cell.ratios.append(r["rate"] / theirs)
    labels = [run.label for run in runs] + ["orthanc"]
    baselines = {run.label for run in runs if not run.with_orthanc}  # no ratio of their own
    print(
        f"\n{args.rounds} rounds, {started:%Y-%m-%d %H:%M}-{datetime.now(UTC):%H:%M} UTC, "
        f"load average (1 min) at each run's end: {', '.join(f'{x:.1f}' for x in loads)}; "
        f"bench/ingest.py {' '.join(passthrough)}\n"
    )
    print("instances/s, median (each run); node/Orthanc: median of the runs' ratios")
    if "postgresql" in args.databases:
        print("(the CPU and memory of a node on PostgreSQL leave its database server out)")
    print(
        "| set | clients | "
        + " | ".join(labels)
        + "".join(
            f" | {label} / orthanc"
            for label in labels
            if label != "orthanc" and label not in baselines
        )
        + " | CPU ms/instance: "
        + ", ".join(labels)
        + " | peak RSS / PSS MB: "
        + ", ".join(labels)
        + " |"
    )
    nodes = [label for label in labels if label != "orthanc" and label not in baselines]
    print("| --- | ---: |" + " ---: |" * (len(labels) + len(nodes)) + " --- | --- |")
    for set_name in sets:
        for k in sorted({key[2] for key in cells if key[1] == set_name}):
            row = [cells.get((label, set_name, k), Cell()) for label in labels]
            ratios = [cells.get((label, set_name, k), Cell()).ratios for label in nodes]
            memory = ", ".join(
                f"{statistics.median(c.rss):.0f} / {statistics.median(c.pss):.0f}" if c.rss else "-"
                for c in row
            )
            cpu = ", ".join(f"{statistics.median(c.cpu):.2f}" if c.cpu else "-" for c in row)
            print(
                f"| {set_name} ({sets[set_name]:.1f} KB) | {k} | "
                + " | ".join(_median(c.rates) for c in row)
                + "".join(f" | {_median(r, 2)}" for r in ratios)
                + f" | {cpu} | {memory} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
