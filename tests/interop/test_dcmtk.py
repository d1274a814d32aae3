"""DCMTK 3.6.7 against the node (issue 14, item 6): ``movescu`` moving each test
study to ``storescp +xa`` (takes every syntax) and to a default ``storescp``
(uncompressed syntaxes only), and ``getscu`` retrieving each study with
``+xw``, ``+xy``, ``+xv`` and its default proposal. storescp and getscu write
what arrives bit for bit (``+B``), so an instance sent in its stored syntax
must be byte-identical to the node's file, and a transcoded one pixel-equal
(tests/interop/studies.py: ``judge``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.interop.conftest import LOGS, STORESCP_ALL, STORESCP_RAW, NodeUnderTest
from tests.interop.netns import NetNamespace
from tests.interop.peers import Storescp, final_counts, run_tool
from tests.interop.studies import (
    KINDS,
    UNCOMPRESSED,
    Study,
    judge,
    names,
    read_part10,
    retrieve_report,
)
from tests.support import dcmtk_tool

pytestmark = [
    pytest.mark.interop,
    # rtdose_rle.dcm holds a UID with a zero-led component (…9.0123…): pydicom
    # warns at every read of it, and the node rightly keeps it as it came
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

# getscu's preferred storage syntax per option; every option also offers
# Explicit VR Little Endian, Explicit VR Big Endian and Implicit VR Little Endian
# in the same presentation context (one context per storage SOP class).
GETSCU_PREFERS = {
    "+xw": "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy)
    "+xy": "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "+xv": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "default": None,
}


@pytest.fixture(scope="module")
def storescps(
    netns: NetNamespace, node: NodeUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Storescp]]:
    dcmtk_tool("storescp")
    base = tmp_path_factory.mktemp("storescp")
    started: dict[str, Storescp] = {}
    try:
        with netns.entered():
            for name, (aet, port), options in (
                ("all", STORESCP_ALL, ["+xa"]),
                ("uncompressed", STORESCP_RAW, []),
            ):
                started[name] = Storescp(base / name, aet=aet, port=port, options=options)
                LOGS[f"storescp {aet}"] = started[name].log_tail
        yield started
    finally:
        for scp in started.values():
            LOGS.pop(f"storescp {scp.aet}", None)
            scp.stop()


def _with_output(report: str, tool: str, result: subprocess.CompletedProcess[str]) -> str:
    """The report with the last lines DCMTK printed that are not its dumps."""
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("I:", "W:", "E:", "F:")) and not line.startswith("I: (")
    ]
    return "\n".join([report, f"--- {tool} (exit {result.returncode}), last lines:", *lines[-25:]])


def _judge_all(node: NodeUnderTest, received: dict[str, bytes]) -> dict[str, list[str]]:
    problems = {}
    for uid, data in received.items():
        found = judge(node.stored_path(uid), data, bit_preserving=True)
        if found:
            problems[uid] = found
    return problems


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("accepting", ["all", "uncompressed"])
def test_movescu_to_storescp(
    storescps: dict[str, Storescp],
    node: NodeUnderTest,
    studies: dict[str, Study],
    accepting: str,
    kind: str,
) -> None:
    storescp = storescps[accepting]
    storescp.clear()
    study = studies[kind]
    result = run_tool(
        [dcmtk_tool("movescu"), "-d", "-S", "-aet", "MOVESCU", "-aec", "DICOM_NODE",
         "-aem", storescp.aet, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study.study_instance_uid}",
         "127.0.0.1", str(node.dicom_port)],
    )  # fmt: skip
    received = storescp.received()
    problems = _judge_all(node, received)
    for instance in study.instances:
        if (data := received.get(instance.sop_instance_uid)) is None:
            continue
        stored, got = instance.transfer_syntax_uid, _syntax(data)
        # +xa takes every syntax: each instance goes as stored (byte for byte,
        # judge checks); the default storescp takes uncompressed ones only
        if accepting == "all" and got != stored:
            problems.setdefault(instance.sop_instance_uid, []).append(
                f"sent as {got}, stored as {stored}"
            )
        if accepting == "uncompressed" and got not in UNCOMPRESSED:
            problems.setdefault(instance.sop_instance_uid, []).append(f"arrived as {got}")
    wanted = names(study)
    report = _with_output(retrieve_report(wanted, received, problems), "movescu", result)
    complete = received.keys() == wanted.keys() and not problems
    assert complete, report
    counts = final_counts(result.stdout + result.stderr)
    assert counts == {"remaining": 0, "completed": len(wanted), "failed": 0, "warning": 0}, report
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def _syntax(data: bytes) -> str:
    return str(read_part10(data).file_meta.TransferSyntaxUID)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", GETSCU_PREFERS)
def test_getscu(
    node: NodeUnderTest, studies: dict[str, Study], tmp_path: Path, option: str, kind: str
) -> None:
    study = studies[kind]
    out = tmp_path / "got"
    out.mkdir()
    result = run_tool(
        [dcmtk_tool("getscu"), "-d", "-S", "+B", *([option] if option != "default" else []),
         "-aec", "DICOM_NODE", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study.study_instance_uid}",
         "127.0.0.1", str(node.dicom_port)],
    )  # fmt: skip
    received = {}
    for path in out.iterdir():
        received[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = (
            path.read_bytes()
        )
    problems = _judge_all(node, received)
    # The node, as the acceptor of getscu's storage contexts, chooses each
    # context's syntax before it knows what will be retrieved, so it can go only
    # by what it holds of the SOP class. Where the store holds a class in one
    # syntax and getscu offers it, the instance must arrive as stored.
    offered = {GETSCU_PREFERS[option], *UNCOMPRESSED} - {None}
    held: dict[str, set[str]] = {}
    for stored in (i for s in studies.values() for i in s.instances):
        held.setdefault(stored.sop_class_uid, set()).add(stored.transfer_syntax_uid)
    for instance in study.instances:
        uid, syntax = instance.sop_instance_uid, instance.transfer_syntax_uid
        if uid not in received or syntax not in offered or held[instance.sop_class_uid] != {syntax}:
            continue
        if (got := _syntax(received[uid])) != syntax:
            problems.setdefault(uid, []).append(f"offered its stored {syntax}, got {got}")
    wanted = names(study)
    report = _with_output(retrieve_report(wanted, received, problems), "getscu", result)
    complete = received.keys() == wanted.keys() and not problems
    assert complete, report
    output = result.stdout + result.stderr
    counts = final_counts(output)
    assert counts == {"remaining": 0, "completed": len(wanted), "failed": 0, "warning": 0}, report
    assert result.returncode == 0, output[-3000:]
    # the association ends with a clean release, nothing after the final response
    errors = [line for line in output.splitlines() if line.startswith(("E:", "F:"))]
    assert not errors, "\n".join(errors)
