"""Hostile C-FIND, C-GET, C-MOVE and C-STORE over real associations (issue 13,
findings 1, 3 and 8), on SQLite and PostgreSQL (the ``make_node`` fixture's
``backend``): pynetdicom and DCMTK clients against a node on the loopback."""

from __future__ import annotations

import logging
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files, iter_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.services.operations.demo import load_demo
from tests.dicomfiles import ct_dataset
from tests.support import SAMPLE_DIR, Served, dcmtk_env, dcmtk_tool, free_port

STORAGE = (CTImageStorage, MRImageStorage)  # the SOP classes of sample_dicom
CALLED = "DICOM_NODE"


# --------------------------------------------------------------------------- helpers


def _loaded(make_node: Any, **settings: object) -> Node:
    node: Node = make_node(**settings)
    assert node.db is not None and node.store is not None
    files = list(iter_files([SAMPLE_DIR]))
    import_files(node.db, node.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT)
    return node


def _c_store(port: int, *datasets: Dataset) -> list[int]:
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    assert assoc.is_established
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the values sent on purpose
            return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _c_find(
    port: int, identifier: Dataset, *, timeout: float = 60.0
) -> list[tuple[int, Dataset | None]]:
    """The statuses and identifiers answered; nothing when no answer came within
    ``timeout`` (the association is then aborted)."""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title="HOSTILE")
    ae.dimse_timeout = timeout
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    assert assoc.is_established
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [(int(s.Status), i) for s, i in assoc.send_c_find(identifier, model) if s]
    finally:
        assoc.release()


def _c_get(node: Node, identifier: Dataset, model: str) -> tuple[list[int], list[str]]:
    """(the statuses, the SOP Instance UIDs received) of a C-GET on its own association."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(model)
    for sop_class in STORAGE:
        ae.add_requested_context(sop_class)
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title=CALLED,
        ext_neg=[build_role(sop_class, scp_role=True) for sop_class in STORAGE],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(identifier, model) if s]
    finally:
        assoc.release()
    return statuses, received


def _c_move(node: Node, identifier: Dataset, model: str, destination: str) -> list[int]:
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=CALLED)
    assert assoc.is_established
    try:
        return [int(s.Status) for s, _ in assoc.send_c_move(identifier, destination, model) if s]
    finally:
        assoc.release()


class Receiver:
    """A storage SCP a C-MOVE may send to: counts what arrives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="DEST")
        for sop_class in STORAGE:
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.stop()


def _identifier(level: str, **keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def _study_uids(node: Node) -> dict[str, int]:
    """StudyInstanceUID -> instance count, of every stored study."""
    assert node.db is not None
    with node.db.read() as session:
        rows = session.execute(select(DicomStudy.study_instance_uid, DicomStudy.instance_count))
        return {uid: int(count) for uid, count in rows}


def _exports(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "instances_exported")
                .order_by(AuditEvent.id)
            )
        )


def _node_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("dicom_node") and r.levelno >= level]


# ------------------------------------------------------------ finding 1: C-FIND ReDoS


@pytest.mark.timeout(240)
def test_a_sixty_star_sequence_key_is_answered_at_once_and_right(
    db_url: str, tmp_path: Path, served: list[Served]
) -> None:
    # the node in a process of its own: a backtracking matcher holds the GIL for
    # ever (2.4x longer per star; 8.6 s at 16), which would freeze a node running
    # inside the test process, the test and pytest-timeout with it. Here the SCU
    # just gets no answer within its DIMSE timeout and the test fails.
    server = Served(tmp_path, database_url=db_url, dicom_workers="1")
    served.append(server)
    dicom_port, http_port = server.ports()
    study = generate_uid()
    # the attacker stores (no sign-in needed) an instance whose request attributes
    # hold one item the pattern matches in SQL and one that makes a regular
    # expression backtrack when the items are re-checked one by one
    decoy = ct_dataset(study_uid=study, request_accessions=("A" * 16, "ACCZ"))
    other = ct_dataset(study_uid=generate_uid(), request_accessions=("A" * 16,))
    assert _c_store(dicom_port, decoy, other) == [0x0000, 0x0000]
    item = Dataset()
    item.AccessionNumber = "*" * 60 + "Z"
    identifier = _identifier("STUDY", StudyInstanceUID="")
    identifier.RequestAttributesSequence = [item]

    answers = _c_find(dicom_port, identifier, timeout=60)

    assert [code for code, _ in answers] == [0xFF00, 0x0000]
    found = answers[0][1]
    assert found is not None and found.StudyInstanceUID == study
    assert [i.AccessionNumber for i in found.RequestAttributesSequence] == ["ACCZ"]
    # the same kind of pattern in a plain key, matched by the database's LIKE
    name = _identifier("STUDY", StudyInstanceUID="", PatientName="*D?" * 300 + "Z")
    assert [code for code, _ in _c_find(dicom_port, name, timeout=60)] == [0x0000]
    assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10).status_code == 200


# --------------------------------------------------- finding 3: wildcards in retrieves

PATIENT_GET = PatientRootQueryRetrieveInformationModelGet
STUDY_GET = StudyRootQueryRetrieveInformationModelGet


def _refused_identifiers(node: Node) -> list[tuple[str, Dataset]]:
    """(information model, identifier) pairs a retrieve must refuse with 0xA900."""
    uids = list(_study_uids(node))
    return [
        ("patient", _identifier("PATIENT", PatientID="NOPE\\?*")),  # the attack
        ("patient", _identifier("PATIENT", PatientID="DEMO*")),
        ("patient", _identifier("PATIENT", PatientID="?*")),
        ("patient", _identifier("PATIENT", PatientID="DEMO0001\\DEMO0002")),
        ("patient", _identifier("STUDY", PatientID="*", StudyInstanceUID=uids[0])),
        ("study", _identifier("STUDY", StudyInstanceUID=f"{uids[0]}\\*")),
        ("study", _identifier("STUDY", StudyInstanceUID=f"{uids[0]}\\?*")),
        ("study", _identifier("STUDY", StudyInstanceUID=f"{uids[0]}-{uids[1]}")),
        # a UID list is for the key of the retrieve's level, not those above it
        (
            "study",
            _identifier("SERIES", StudyInstanceUID=f"{uids[0]}\\{uids[1]}", SeriesInstanceUID="*"),
        ),
    ]


def test_c_get_refuses_wildcards_ranges_and_lists_in_every_unique_key(make_node: Any) -> None:
    node = _loaded(make_node)
    refused = _refused_identifiers(node)
    for model, identifier in refused:
        sop_class = PATIENT_GET if model == "patient" else STUDY_GET
        statuses, received = _c_get(node, identifier, sop_class)
        assert (statuses, received) == ([0xA900], []), identifier
    exports = _exports(node)
    assert len(exports) == len(refused)
    assert all(e.outcome == "minor_failure" and e.reason for e in exports)
    assert exports[0].reason == "PatientID: no wildcards in a retrieve"


def test_c_move_refuses_them_too_and_sends_nothing(make_node: Any, receiver: Receiver) -> None:
    node = _loaded(make_node, peers=f"DEST@127.0.0.1:{receiver.port}")
    for model, identifier in _refused_identifiers(node):
        sop_class = (
            PatientRootQueryRetrieveInformationModelMove
            if model == "patient"
            else StudyRootQueryRetrieveInformationModelMove
        )
        assert _c_move(node, identifier, sop_class, "DEST") == [0xA900], identifier
    assert receiver.received == []


def test_dcmtk_getscu_and_movescu_with_the_wildcard_list_get_a900(
    make_node: Any, receiver: Receiver, tmp_path: Path
) -> None:
    node = _loaded(make_node, peers=f"DEST@127.0.0.1:{receiver.port}")
    out = tmp_path / "got"
    out.mkdir()
    keys = ["-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=NOPE\\?*"]
    got = subprocess.run(
        [dcmtk_tool("getscu"), "-P", "-aec", CALLED, "-od", str(out), *keys,
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    moved = subprocess.run(
        [dcmtk_tool("movescu"), "-d", "-P", "-aec", CALLED, "-aem", "DEST", *keys,
         "127.0.0.1", str(node.dicom_port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert list(out.iterdir()) == []
    assert receiver.received == []
    for result in (got, moved):
        output = (result.stdout + result.stderr).lower()
        # DCMTK's name for 0xA900 (it shares the code with C-STORE's A900)
        assert "0xa900" in output or "datasetdoesnotmatchsopclass" in output, output


def test_a_uid_list_is_retrieved_up_to_the_limit_and_refused_with_c000_beyond(
    make_node: Any, receiver: Receiver
) -> None:
    node = _loaded(make_node, max_query_list_values=2, peers=f"DEST@127.0.0.1:{receiver.port}")
    studies = _study_uids(node)
    first, second, third = list(studies)[:3]
    statuses, received = _c_get(
        node, _identifier("STUDY", StudyInstanceUID=f"{first}\\{second}"), STUDY_GET
    )
    assert statuses[-1] == 0x0000
    assert len(received) == studies[first] + studies[second]
    (export,) = _exports(node)  # audited, the list in the details
    assert export.details["keys"]["StudyInstanceUID"] == f"{first}\\{second}"
    assert export.details["counts"]["offered"] == len(received)

    three = _identifier("STUDY", StudyInstanceUID=f"{first}\\{second}\\{third}")
    assert _c_get(node, three, STUDY_GET) == ([0xC000], [])
    move = StudyRootQueryRetrieveInformationModelMove
    assert _c_move(node, three, move, "DEST") == [0xC000]
    assert receiver.received == []
    assert _exports(node)[-1].reason == "StudyInstanceUID: more than 2 values"


# ------------------------------------------------------ finding 8: over-long integers


def _raw_is(identifier: Dataset, keyword: str, text: str) -> None:
    """Put an IS value into ``identifier`` as bytes: pydicom would not encode
    some of them (a float overflow), a hostile peer sends them anyway."""
    tag = Tag(keyword)
    data = text.encode("ascii")
    if len(data) % 2:
        data += b" "
    identifier[tag] = RawDataElement(tag, "IS", len(data), data, 0, False, True)  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SeriesNumber", "1" * 20),
        ("SeriesNumber", "9" * 400),  # pydicom itself overflows on this one
        ("SeriesNumber", "-2147483649"),
        ("InstanceNumber", "1\\" + "1" * 20),  # every value of a list
    ],
    ids=["20-digits", "400-digits", "below-int32", "in-a-list"],
)
def test_c_find_with_an_out_of_range_integer_is_c000_with_one_log_line(
    make_node: Any, caplog: pytest.LogCaptureFixture, keyword: str, value: str
) -> None:
    node: Node = make_node()
    caplog.set_level(logging.INFO)
    caplog.clear()  # what the node logs from here on
    identifier = _identifier("IMAGE", StudyInstanceUID="", SOPInstanceUID="")
    _raw_is(identifier, keyword, value)

    answers = _c_find(node.dicom_port, identifier)

    ((code, _),) = answers
    assert code == 0xC000
    warned = _node_records(caplog, logging.WARNING)
    assert [r.getMessage() for r in warned] == [
        f"C-FIND from HOSTILE refused: {keyword}: out of range for IS (-2147483648 to 2147483647)"
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert "database unavailable" not in caplog.text
    assert value.split("\\")[-1] not in caplog.text


def _names(count: int, *real: str) -> str:
    return "\\".join([*real, *(f"NOBODY{i}^X" for i in range(count - len(real)))])


def test_c_find_lists_work_up_to_the_limit_and_are_refused_with_c000_beyond(
    make_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = _loaded(make_node)  # the default limit: 1,000 values
    caplog.set_level(logging.INFO)
    caplog.clear()
    names = _identifier("STUDY", StudyInstanceUID="", PatientName=_names(1000, "smith*"))
    studies = [code for code, _ in _c_find(node.dicom_port, names)]
    assert studies == [0xFF00, 0x0000]  # SMITH^JOHN^A's one study

    accessions = [f"X{i}" for i in range(998)] + ["DEMOACC000?", "*0099"]
    wildcards = _identifier("STUDY", AccessionNumber="\\".join(accessions))
    found = [answer.AccessionNumber for _, answer in _c_find(node.dicom_port, wildcards) if answer]
    assert sorted(found) == ["DEMOACC0001", "DEMOACC0002", "DEMOACC0003", "DEMOACC0099"]

    patient_ids = "\\".join([f"NOPE{i}" for i in range(998)] + ["DEMO0001", "DEMO0004"])
    series = _identifier("SERIES", PatientID=patient_ids, SeriesInstanceUID="")
    # DEMO0001's 2 series, DEMO0004's 1, then Success
    assert len(_c_find(node.dicom_port, series)) == 2 + 1 + 1

    too_many = _identifier("STUDY", StudyInstanceUID="", PatientName=_names(1001, "smith*"))
    ((code, _),) = _c_find(node.dicom_port, too_many)
    assert code == 0xC000
    assert [r.getMessage() for r in _node_records(caplog, logging.WARNING)] == [
        "C-FIND from HOSTILE refused: PatientName: more than 1000 values"
    ]
    assert "database unavailable" not in caplog.text


def test_c_store_with_out_of_range_integers_is_stored_as_sent_and_indexed_as_unknown(
    make_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node: Node = make_node()
    caplog.set_level(logging.INFO)
    caplog.clear()
    study = generate_uid()
    datasets = []
    for number in range(3):
        ds = ct_dataset(study_uid=study, instance_number=number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.SeriesNumber = "1" * 20
            ds.InstanceNumber = "-" + "9" * 15
        datasets.append(ds)

    assert _c_store(node.dicom_port, *datasets) == [0x0000] * 3

    assert node.db is not None and node.store is not None
    with node.db.read() as session:
        rows = session.execute(
            select(
                DicomSeries.series_number, DicomInstance.instance_number, DicomInstance.file_path
            )
            .join(DicomInstance, DicomInstance.series_pk == DicomSeries.id)
            .join(DicomStudy, DicomStudy.id == DicomSeries.study_pk)
            .where(DicomStudy.study_instance_uid == study)
        ).all()
    assert [(series, instance) for series, instance, _ in rows] == [(None, None)] * 3
    for _, _, path in rows:
        data = node.store.absolute(path).read_bytes()
        stored = pydicom.dcmread(node.store.absolute(path))
        assert stored["SeriesNumber"].value.original_string == "1" * 20  # kept as sent
        assert b"11111111111111111111" in data[dataset_offset(data) :]
    assert _node_records(caplog, logging.WARNING) == []
    assert all(r.exc_info is None for r in caplog.records)
    # and it is found, its unknown numbers answered empty
    answers = _c_find(
        node.dicom_port, _identifier("IMAGE", StudyInstanceUID=study, InstanceNumber="")
    )
    assert [code for code, _ in answers] == [0xFF00] * 3 + [0x0000]


def _worklist(port: int, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    model = ModalityWorklistInformationFind
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    assert assoc.is_established
    try:
        return [(int(s.Status), i) for s, i in assoc.send_c_find(identifier, model) if s]
    finally:
        assoc.release()


def test_worklist_lists_work_up_to_the_limit_and_are_refused_with_c000_beyond(
    make_node: Any,
) -> None:
    node: Node = make_node()
    assert node.db is not None
    with node.db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor=SystemActor.CLI)
    everything = Dataset()
    everything.PatientName = ""
    everything.AccessionNumber = ""
    steps = [answer for _, answer in _worklist(node.dicom_port, everything) if answer]
    assert len(steps) >= 2
    wanted = {str(steps[0].PatientName), str(steps[-1].PatientName)}
    expected = sorted(str(s.AccessionNumber) for s in steps if str(s.PatientName) in wanted)

    listed = Dataset()
    listed.PatientName = _names(1000, *(name.lower() for name in wanted))
    listed.AccessionNumber = ""
    found = [answer for _, answer in _worklist(node.dicom_port, listed) if answer]
    assert sorted(str(s.AccessionNumber) for s in found) == expected

    listed.PatientName = _names(1001, *wanted)
    ((code, _),) = _worklist(node.dicom_port, listed)
    assert code == 0xC000
