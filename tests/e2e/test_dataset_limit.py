"""max_dataset_bytes over real associations (pynetdicom as the sender), on SQLite
and PostgreSQL: a data set over the limit, as sent or once a Deflated one is
inflated, is answered 0xA700 with one log line, nothing written, nothing indexed,
and the association goes on; one of exactly the limit is stored."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import cast

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, DicomInstance
from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from dicom_node.scp.dataset_limit import HELD_DATASET_LIMIT
from tests.dicomfiles import ct_dataset, write
from tests.large_datasets import MIB, deflate, deflated_part10, send_files, sized_instance
from tests.support import run, wait_for


def _indexed(node: Node) -> set[str]:
    assert node.db is not None
    with node.db.read() as session:
        return set(session.scalars(select(DicomInstance.sop_instance_uid)))


def _files(node: Node) -> list[Path]:
    assert node.store is not None
    return sorted(p for p in node.store.root.rglob("*") if p.is_file())


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "max_dataset_bytes" in r.getMessage()]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def test_a_deflate_bomb_is_refused_with_a700_and_the_association_goes_on(
    make_node: Callable[..., Node], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node: Node = make_node(max_dataset_bytes=64 * MIB)
    bomb_uid = generate_uid()
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(deflated_part10(200 * MIB, sop_uid=bomb_uid))  # inflates to 200 MiB
    assert bomb.stat().st_size < MIB
    good = write(ct_dataset(study_uid=generate_uid()), tmp_path / "good.dcm")
    before = _peak_rss_mib()

    with caplog.at_level(logging.INFO):
        first, second = send_files(node.dicom_port, [bomb, good])

    assert first.Status == 0xA700
    assert first.ErrorComment == f"inflated data set over max_dataset_bytes ({64 * MIB} bytes)"
    assert second.Status == 0x0000  # same association, next instance
    assert _indexed(node) == {pydicom.dcmread(good).SOPInstanceUID}
    assert [p.parent.name for p in _files(node) if p.suffix == ".dcm"] != []
    assert not any(bomb_uid in str(p) for p in _files(node))
    assert node.store is not None and list(node.store.tmp.iterdir()) == []
    lines = _refusal_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "inflated data set over" in lines[0].getMessage() and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info]
    # inflated a chunk at a time to a file, never whole in memory (robust bound:
    # the old code held the 200 MiB at least once)
    assert _peak_rss_mib() - before < 150


def test_over_the_limit_as_sent_is_refused_and_exactly_the_limit_is_stored(
    make_node: Callable[..., Node], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limit = MIB
    node: Node = make_node(max_dataset_bytes=limit)
    exact = write(sized_instance(limit), tmp_path / "exact.dcm")
    over = write(sized_instance(limit + 2), tmp_path / "over.dcm")
    good = write(ct_dataset(study_uid=generate_uid()), tmp_path / "good.dcm")
    sent = exact.read_bytes()
    assert len(sent) - dataset_offset(sent) == limit

    with caplog.at_level(logging.INFO):
        statuses = send_files(node.dicom_port, [exact, over, good])

    assert [s.Status for s in statuses] == [0x0000, 0xA700, 0x0000]
    uids = {
        path: pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        for path in (exact, over, good)
    }
    assert _indexed(node) == {uids[exact], uids[good]}
    assert node.db is not None and node.store is not None
    with node.db.read() as session:
        row = session.scalars(
            select(DicomInstance).where(DicomInstance.sop_instance_uid == uids[exact])
        ).one()
    kept = node.store.absolute(row.file_path).read_bytes()
    assert kept[dataset_offset(kept) :] == sent[dataset_offset(sent) :]  # as sent
    assert not any(uids[over] in str(p) for p in _files(node))
    assert list(node.store.tmp.iterdir()) == []
    lines = _refusal_lines(caplog)
    assert [r.getMessage() for r in lines] == [
        f"instance from RAWSCU refused: data set over max_dataset_bytes ({limit} bytes): "
        f"{limit + 2} bytes"
    ]
    assert wait_for(lambda: len(_transfer_audits(node)) == 1)
    assert _transfer_audits(node)[0].details["counts"] == {"stored": 2, "too_large": 1}


def _transfer_audits(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "instances_received"))
        )


def test_import_refuses_an_over_size_file_and_a_deflate_bomb_and_counts_them(
    tmp_path: Path, db_url: str
) -> None:
    source = tmp_path / "cd"
    source.mkdir()
    write(sized_instance(MIB + 2), source / "over.dcm")
    (source / "bomb.dcm").write_bytes(deflated_part10(200 * MIB))
    write(sized_instance(MIB), source / "exact.dcm")
    (source / "fine.dcm").write_bytes(deflated_part10(1000))
    result = run(tmp_path, "import", str(source), database_url=db_url, max_dataset_bytes=str(MIB))
    assert result.returncode == 1, result.stderr  # two files were refused
    assert "4 files: 2 stored, 2 too_large" in result.stdout
    assert f"refused (1): data set over max_dataset_bytes ({MIB} bytes)" in result.stdout
    assert f"refused (1): inflated data set over max_dataset_bytes ({MIB} bytes)" in result.stdout
    assert "Traceback" not in result.stderr
    instances = sorted((tmp_path / "data" / "instances").rglob("*.dcm"))
    assert len(instances) == 2
    assert list((tmp_path / "data" / "tmp").iterdir()) == []


def test_a_deflated_c_find_identifier_bomb_aborts_the_association(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom inflates a query identifier whole before any handler sees it:
    a bomb there is measured first (bounded) and the association aborted."""
    ae = AE(ae_title="BOMBSCU")
    ae.add_requested_context(
        StudyRootQueryRetrieveInformationModelFind, DeflatedExplicitVRLittleEndian
    )
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    request = C_FIND()
    request.MessageID = 1
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Priority = 2
    request.Identifier = BytesIO(deflate(zeros=200 * MIB))
    before = _peak_rss_mib()
    with caplog.at_level(logging.INFO):
        assoc.dimse.send_msg(request, cast(int, assoc.accepted_contexts[0].context_id))
        assert wait_for(lambda: assoc.is_aborted, timeout=30)
    lines = [r.getMessage() for r in caplog.records if "aborting" in r.getMessage()]
    assert lines == [
        f"association from BOMBSCU at 127.0.0.1:{assoc.local['port']}: "
        f"a data set inflating past {HELD_DATASET_LIMIT} bytes "
        "received, aborting"
    ]
    assert _peak_rss_mib() - before < 150
    # the node is fine: the next association is served
    echo = AE(ae_title="ECHOSCU")
    echo.add_requested_context(Verification)
    again = echo.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert again.is_established and again.send_c_echo().Status == 0x0000
    again.release()
