"""Orthanc 1.10 retrieves from the node, as its users do (issue 14, item 6).

Two Orthancs, both with the node as modality ``node`` and known to the node as
peers: ORTHANC accepts every transfer syntax (its default), so each instance
should arrive in its stored syntax and unchanged; ORTHANC_RAW accepts only
Implicit and Explicit VR Little Endian, so every compressed instance must be
transcoded by the node (pixel-equal for lossless originals, within 2 per sample
for lossy ones, still marked lossy). Each retrieve is Orthanc's own C-MOVE SCU:
``POST /modalities/node/move`` at STUDY level, and a PATIENT-level query whose
answer is retrieved (Orthanc sends that C-MOVE at PATIENT level on the Study
Root model).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import LOGS, ORTHANC_ALL, ORTHANC_RAW, NodeUnderTest
from tests.interop.netns import NetNamespace
from tests.interop.peers import ORTHANC, UNCOMPRESSED_SYNTAXES, Orthanc, stop_all
from tests.interop.studies import (
    KINDS,
    SPECS,
    UNCOMPRESSED,
    Study,
    judge,
    names,
    read_part10,
    retrieve_report,
)
from tests.support import require

pytestmark = [
    pytest.mark.interop,
    # rtdose_rle.dcm holds a UID with a zero-led component (…9.0123…): pydicom
    # warns at every read of it, and the node rightly keeps it as it came
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

PATIENTS = tuple(dict.fromkeys(spec.patient_id for spec in SPECS))


@pytest.fixture(scope="module")
def orthancs(
    netns: NetNamespace, node: NodeUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Orthanc]]:
    require(Path(ORTHANC).exists(), "Orthanc is not installed (apt-get install orthanc)")
    base = tmp_path_factory.mktemp("orthanc")
    started: dict[str, Orthanc] = {}
    try:
        with netns.entered():
            for name, (aet, dicom_port, http_port), accepted in (
                ("all", ORTHANC_ALL, None),
                ("uncompressed", ORTHANC_RAW, UNCOMPRESSED_SYNTAXES),
            ):
                started[name] = Orthanc(
                    base / name,
                    aet=aet,
                    dicom_port=dicom_port,
                    http_port=http_port,
                    node_port=node.dicom_port,
                    accepted=accepted,
                )
                LOGS[f"Orthanc {aet}"] = started[name].log_tail
        yield started
    finally:
        for orthanc in started.values():
            LOGS.pop(f"Orthanc {orthanc.aet}", None)
        stop_all(started.values())


def _check(
    orthanc: Orthanc,
    node: NodeUnderTest,
    answer: httpx.Response,
    *expected: Study,
    accepting: str,
) -> None:
    wanted = names(*expected)
    stored_syntax = {
        i.sop_instance_uid: i.transfer_syntax_uid for s in expected for i in s.instances
    }
    received = orthanc.instances()
    problems: dict[str, list[str]] = {}
    for uid in wanted.keys() & received.keys():
        data = orthanc.file(received[uid])
        found = judge(node.stored_path(uid), data, bit_preserving=False)
        syntax = str(read_part10(data).file_meta.TransferSyntaxUID)
        # Orthanc takes every syntax (its default): each instance must go as
        # stored, never decompressed or re-encoded; the other Orthanc takes
        # uncompressed ones only
        stored = stored_syntax[uid]
        if accepting == "all" and syntax != stored:
            found.append(f"sent as {syntax}, stored as {stored}")
        if accepting == "uncompressed" and syntax not in UNCOMPRESSED:
            found.append(f"arrived as {syntax} at an Orthanc that takes none")
        if found:
            problems[uid] = found
    report = retrieve_report(wanted, received, problems)
    complete = received.keys() == wanted.keys() and not problems
    assert complete, report
    # Orthanc answers its REST call with an error when the C-MOVE did not succeed
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{report}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("accepting", ["all", "uncompressed"])
def test_orthanc_moves_a_study(
    orthancs: dict[str, Orthanc],
    node: NodeUnderTest,
    studies: dict[str, Study],
    accepting: str,
    kind: str,
) -> None:
    orthanc = orthancs[accepting]
    orthanc.clear()
    study = studies[kind]
    answer = orthanc.move_study(study.study_instance_uid)
    _check(orthanc, node, answer, study, accepting=accepting)


@pytest.mark.parametrize("patient_id", PATIENTS)
@pytest.mark.parametrize("accepting", ["all", "uncompressed"])
def test_orthanc_retrieves_a_patient_found_by_query(
    orthancs: dict[str, Orthanc],
    node: NodeUnderTest,
    studies: dict[str, Study],
    accepting: str,
    patient_id: str,
) -> None:
    orthanc = orthancs[accepting]
    orthanc.clear()
    answer = orthanc.query_and_retrieve_patient(patient_id)
    patient = [s for s in studies.values() if s.patient_id == patient_id]
    _check(orthanc, node, answer, *patient, accepting=accepting)
    # what reached the node was Orthanc's PATIENT-level C-MOVE (on the Study
    # Root model), the node's Export event says so, with the counts
    events = [
        e
        for e in node.audit_events(event_code="110106", target_class="PATIENT")
        if e["details"]["destination"] == orthanc.aet
        and e["details"]["keys"].get("PatientID") == patient_id
    ]
    assert events, "no PATIENT-level Export event for this retrieve"
    event = events[0]  # newest first
    assert event["outcome"] == "success", event
    assert event["details"]["counts"]["completed"] == sum(len(s.instances) for s in patient)
