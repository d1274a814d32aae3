"""Calling AEs per service (known_ae_required_for) and MPPS N-SET by the step's
creator only (mpps_set_by_creator_only): issue 13, part 3 and finding 13.

Real associations from pynetdicom SCUs, each naming itself with a calling AE
title: a registered modality (CT_MAIN_1, from the demo data), a configured peer,
an entry of allowed_calling_aets, or a stranger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update

from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    ImagingRequest,
    Modality,
    PerformedProcedureStep,
)
from dicom_node.node import Node
from tests.builders import REFUSED_NOT_AUTHORIZED, Scu, audit_rows, demo
from tests.support import free_port

ALL_SERVICES = ["storage", "query", "retrieve", "worklist", "mpps", "commitment"]
UNABLE_TO_PROCESS_NOT_AUTHORIZED = 0xC124


@pytest.fixture(autouse=True)
def quiet_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="pynetdicom")


@pytest.fixture
def scu(make_node: Callable[..., Node]) -> Iterator[Callable[[Node, str], Scu]]:
    opened: list[Scu] = []

    def open_(node: Node, calling: str) -> Scu:
        opened.append(Scu.open(node, calling))
        return opened[-1]

    yield open_
    for one in opened:
        if one.assoc.is_established:
            one.close()


def count(node: Node, model: type) -> int:
    assert node.db is not None
    with node.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --------------------------------------------------------------------------- known AEs


def test_a_stranger_is_refused_every_guarded_service_with_its_status(
    make_node: Callable[..., Node],
    scu: Callable[[Node, str], Scu],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    destination = f"PACS@127.0.0.1:{free_port()}"
    node = make_node(known_ae_required_for=ALL_SERVICES, peers=destination)
    orders = demo(node)
    uid = generate_uid()
    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        stranger = scu(node, "INTRUDER")
        assert stranger.echo() == 0x0000  # verification shows nothing: never refused
        assert stranger.store() == REFUSED_NOT_AUTHORIZED
        assert stranger.find() == (UNABLE_TO_PROCESS_NOT_AUTHORIZED, 0)
        assert stranger.worklist() == (UNABLE_TO_PROCESS_NOT_AUTHORIZED, 0)
        assert stranger.get() == UNABLE_TO_PROCESS_NOT_AUTHORIZED
        assert stranger.move("PACS") == UNABLE_TO_PROCESS_NOT_AUTHORIZED
        assert stranger.n_create(uid, orders["DEMOACC0001"]) == REFUSED_NOT_AUTHORIZED
        assert stranger.n_set(uid) == REFUSED_NOT_AUTHORIZED
        assert stranger.n_action() == REFUSED_NOT_AUTHORIZED
        stranger.close()
    # nothing was done for it
    assert count(node, DicomInstance) == 0
    assert count(node, PerformedProcedureStep) == 0
    # one log line each, the stranger's title in it (rate-limited per service and peer:
    # the second MPPS and retrieve refusals wait for the next line of their kind)
    lines = [r.getMessage() for r in caplog.records if "calling AE title not known" in r.message]
    for what, expected in (
        ("C-STORE", 1),
        ("C-FIND", 2),  # query and worklist
        ("C-GET", 1),
        ("N-CREATE", 1),
        ("N-ACTION", 1),
    ):
        assert (
            sum(line.startswith(f"{what} from INTRUDER at 127.0.0.1:") for line in lines)
            == expected
        )
    assert len(lines) == 6
    # the first refusal audited at once; the others in one count when the node stops
    first = audit_rows(db_url, "request_refused")
    assert len(first) == 1
    assert (first[0].event_code, first[0].actor, first[0].target_id) == (
        "110113",
        "INTRUDER",
        "storage",
    )
    assert first[0].details["event_type"] == "110126"
    node.stop()
    rows = audit_rows(db_url, "request_refused")
    assert sum(row.details["count"] for row in rows) == 8
    assert rows[-1].details["targets"] == {
        "query": 1,
        "worklist": 1,
        "retrieve": 2,
        "mpps": 2,
        "commitment": 1,
    }


def test_known_calling_aes_are_served(
    make_node: Callable[..., Node], scu: Callable[[Node, str], Scu], db_url: str
) -> None:
    node = make_node(
        known_ae_required_for=ALL_SERVICES,
        peers=f"PACS@127.0.0.1:{free_port()}",
        allowed_calling_aets=["CT_MAIN_1", "WORKSTATION", "PACS"],
    )
    orders = demo(node)
    # a registered modality (also listed: allowed_calling_aets rejects any other)
    modality = scu(node, "CT_MAIN_1")
    assert modality.store() == 0x0000
    assert modality.worklist()[0] == 0x0000
    assert modality.n_create(generate_uid(), orders["DEMOACC0001"]) == 0x0000
    # a configured peer, and a workstation of allowed_calling_aets
    assert scu(node, "PACS").get() == 0x0000
    assert scu(node, "WORKSTATION").find()[0] == 0x0000
    assert count(node, DicomInstance) == 1
    assert audit_rows(db_url, "request_refused") == []


def test_a_registered_modality_is_known_and_a_retired_one_is_not(
    make_node: Callable[..., Node], scu: Callable[[Node, str], Scu]
) -> None:
    node = make_node(known_ae_required_for=["storage"])
    demo(node)  # registers CT_MAIN_1 and MR_NORTH_1
    assert node.db is not None
    with node.db.unit_of_work() as session:
        session.execute(
            update(Modality).where(Modality.dicom_ae_title == "MR_NORTH_1").values(status="retired")
        )
    assert scu(node, "CT_MAIN_1").store() == 0x0000
    assert scu(node, "MR_NORTH_1").store() == REFUSED_NOT_AUTHORIZED
    assert scu(node, "INTRUDER").store() == REFUSED_NOT_AUTHORIZED


def test_only_the_listed_services_are_guarded(
    make_node: Callable[..., Node], scu: Callable[[Node, str], Scu]
) -> None:
    node = make_node(known_ae_required_for=["mpps", "worklist"])
    demo(node)
    stranger = scu(node, "INTRUDER")
    assert stranger.store() == 0x0000
    assert stranger.find()[0] == 0x0000
    assert stranger.worklist()[0] == UNABLE_TO_PROCESS_NOT_AUTHORIZED
    assert stranger.n_create(generate_uid()) == REFUSED_NOT_AUTHORIZED


def test_by_default_any_calling_ae_is_served(node: Node, scu: Callable[[Node, str], Scu]) -> None:
    """The trade-off of the default (an empty known_ae_required_for): documented."""
    demo(node)
    stranger = scu(node, "INTRUDER")
    assert stranger.store() == 0x0000
    assert stranger.n_create(generate_uid()) == 0x0000


# --------------------------------------------------------------------------- MPPS creator


def test_an_n_set_from_another_ae_is_refused_audited_and_changes_nothing(
    make_node: Callable[..., Node],
    scu: Callable[[Node, str], Scu],
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = make_node()  # mpps_set_by_creator_only defaults to true
    order = demo(node)["DEMOACC0002"]
    uid = generate_uid()
    assert scu(node, "CT_MAIN_1").n_create(uid, order) == 0x0000
    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        # another AE (a known one, even) may not discontinue the creator's step
        assert scu(node, "MR_NORTH_1").n_set(uid, "DISCONTINUED") == REFUSED_NOT_AUTHORIZED
    lines = [r.getMessage() for r in caplog.records if "N-SET" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("MPPS N-SET from MR_NORTH_1 at 127.0.0.1:")
    assert lines[0].endswith(" refused: not authorized: the step was created by another AE")
    assert node.db is not None
    with node.db.read() as session:
        step = session.scalars(select(PerformedProcedureStep)).one()
        refreshed = session.get(ImagingRequest, order.id)
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "mpps_set_refused")
        ).all()
    assert step.status == "IN PROGRESS" and step.ended_at is None
    assert refreshed is not None and refreshed.status == "in_progress"
    assert (event.event_code, event.outcome, event.actor) == (
        "110113",
        "minor_failure",
        "MR_NORTH_1",
    )
    assert (event.target_class, event.target_id) == ("PerformedProcedureStep", uid)
    assert event.source_address and event.source_address.startswith("127.0.0.1:")
    # audited as the other refusals, aggregated per peer (test_mpps_refusals.py)
    assert event.reason == "the step was created by another AE"
    assert event.details["count"] == 1
    # a known peer asking for what only another may do (PS3.15 A.5.3.11)
    assert event.details["event_type"] == "110132"
    # the creator still can
    assert scu(node, "CT_MAIN_1").n_set(uid, "COMPLETED") == 0x0000
    with node.db.read() as session:
        assert session.get(ImagingRequest, order.id).status == "performed"  # type: ignore[union-attr]


def test_another_ae_may_set_the_step_when_creator_only_is_off(
    make_node: Callable[..., Node], scu: Callable[[Node, str], Scu]
) -> None:
    node = make_node(mpps_set_by_creator_only=False)
    order = demo(node)["DEMOACC0002"]
    uid = generate_uid()
    assert scu(node, "CT_MAIN_1").n_create(uid, order) == 0x0000
    assert scu(node, "MPPS_MANAGER").n_set(uid, "DISCONTINUED") == 0x0000
    assert node.db is not None
    with node.db.read() as session:
        assert session.get(ImagingRequest, order.id).status == "discontinued"  # type: ignore[union-attr]
