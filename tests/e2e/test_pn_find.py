"""Every PN key by the one PN rule, over the wire: C-FIND (both models, study,
series and patient level) from pynetdicom and DCMTK findscu, the Modality
Worklist (ScheduledPerformingPhysicianName inside the Scheduled Procedure Step
Sequence, RequestingPhysician, ReferringPhysicianName) and the HTTP searches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicom_node.db.models import ImagingCenter, Modality
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.node import Node
from dicom_node.services.access.users import create_user
from dicom_node.services.workflow.orders import (
    NewOrder,
    create_order,
    schedule_order_by_id,
    update_order,
)
from tests.builders import PN_SERIES_CASES as SERIES_CASES
from tests.builders import PN_STUDY_CASES as STUDY_CASES
from tests.builders import PN_UID as UID
from tests.builders import YAMADA, store_named
from tests.support import findscu, findscu_w

PASSWORD = "correct horse battery"
SUCCESS, PENDING = 0x0000, 0xFF00


@pytest.fixture
def named(make_node) -> Node:  # type: ignore[no-untyped-def]
    node: Node = make_node()
    assert node.db is not None and node.store is not None
    store_named(node.db, node.store)
    return node


@pytest.fixture
def association(named: Node) -> Iterator[Association]:
    ae = AE(ae_title="PN_FIND")
    for model in (
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
        ModalityWorklistInformationFind,
    ):
        ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", named.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    yield assoc
    assoc.release()


def _find(assoc: Association, identifier: Dataset, model: str) -> list[Dataset]:
    """The matches of one C-FIND; fails unless it ends in Success."""
    answers = [
        (int(status.Status), found) for status, found in assoc.send_c_find(identifier, model)
    ]
    assert answers and answers[-1][0] == SUCCESS, answers[-1]
    assert all(status == PENDING for status, _ in answers[:-1])
    return [found for _, found in answers[:-1] if found is not None]


def _identifier(level: str, keys: dict[str, str], *returned: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword in returned:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value.split("\\") if "\\" in value else value)
    return ds


# the study-level cases: C-FIND refuses a key below the query level
_STUDY_KEYS = {"PatientName", "ReferringPhysicianName", "NameOfPhysiciansReadingStudy"}
STUDY_LEVEL = [(keys, expected) for keys, expected in STUDY_CASES if set(keys) <= _STUDY_KEYS]


def test_study_root_study_level_matches_every_pn_key_by_the_one_rule(
    association: Association,
) -> None:
    by_uid = {uid: label for label, uid in UID.items()}
    wrong = []
    for keys, expected in STUDY_LEVEL:
        identifier = _identifier("STUDY", keys, "StudyInstanceUID")
        found = _find(association, identifier, StudyRootQueryRetrieveInformationModelFind)
        labels = {by_uid[str(ds.StudyInstanceUID)] for ds in found}
        if labels != expected:
            wrong.append((keys, labels, expected))
    assert wrong == []


def test_the_pn_values_come_back_as_stored(association: Association) -> None:
    identifier = _identifier(
        "STUDY",
        {"ReferringPhysicianName": "garcía^josé"},
        "StudyInstanceUID",
        "NameOfPhysiciansReadingStudy",
    )
    (found,) = _find(association, identifier, StudyRootQueryRetrieveInformationModelFind)
    assert found.SpecificCharacterSet == "ISO_IR 192"
    assert str(found.ReferringPhysicianName) == "García^José"
    assert [str(name) for name in found.NameOfPhysiciansReadingStudy] == ["Wong^Anna", YAMADA]


@pytest.mark.parametrize(
    "model",
    [StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind],
)
def test_series_level_matches_performing_physician_in_both_models(
    association: Association, model: str
) -> None:
    wrong = []
    for keys, expected in SERIES_CASES:
        identifier = _identifier("SERIES", keys, "SeriesDescription")
        if model == PatientRootQueryRetrieveInformationModelFind:
            identifier.PatientID = ""
        found = _find(association, identifier, model)
        labels = {str(ds.SeriesDescription) for ds in found}
        if labels != expected:
            wrong.append((keys, labels, expected))
    assert wrong == []


def test_patient_root_patient_level_name_in_another_case(association: Association) -> None:
    identifier = _identifier("PATIENT", {"PatientName": "MÜLLER^HANS"}, "PatientID")
    found = _find(association, identifier, PatientRootQueryRetrieveInformationModelFind)
    assert [str(ds.PatientID) for ds in found] == ["PN1"]


@pytest.mark.parametrize(
    ("model", "keys", "expected"),
    [
        ("-S", ["QueryRetrieveLevel=STUDY", "ReferringPhysicianName=garcía^josé"], ["PN1"]),
        ("-S", ["QueryRetrieveLevel=STUDY", "ReferringPhysicianName=GARCIA^JOSE"], ["PN2"]),
        ("-S", ["QueryRetrieveLevel=STUDY", "NameOfPhysiciansReadingStudy=山田^太郎"], ["PN1"]),
        ("-S", ["QueryRetrieveLevel=SERIES", "PerformingPhysicianName=σωκ*"], ["PN1"]),
        ("-P", ["QueryRetrieveLevel=STUDY", "ReferringPhysicianName=Gar*"], ["PN1", "PN2"]),
        ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName=müller^hans"], ["PN1"]),
    ],
    ids=str,
)
def test_findscu_pn_keys_in_another_case(
    named: Node, tmp_path: Path, model: str, keys: list[str], expected: list[str]
) -> None:
    result, responses = findscu(
        named, tmp_path, "SpecificCharacterSet=ISO_IR 192", *keys, "PatientID", model=model
    )
    assert result.returncode == 0, result.stderr
    assert sorted(str(ds.PatientID) for ds in responses) == expected


# ------------------------------------------------------------------ worklist

SPS = "ScheduledProcedureStepSequence[0]"


@pytest.fixture
def scheduled(make_node) -> tuple[Node, Principal, list[int]]:  # type: ignore[no-untyped-def]
    """Two scheduled CT orders with physicians' names, made by the services."""
    node: Node = make_node()
    assert node.db is not None
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    with node.db.unit_of_work() as session:
        user = create_user(
            session,
            username="pn-scheduler",
            password=PASSWORD,
            role="scheduler",
            actor=Actor.system(SystemActor.CLI),
        )
        center = ImagingCenter(name="Main", code="MAIN")
        session.add(center)
        session.flush()
        modality = Modality(
            imaging_center_id=center.id, name="CT 1", type="CT", dicom_ae_title="CT_PN"
        )
        session.add(modality)
        session.flush()
        principal = Principal(user_id=user.id, username=user.username, role=Role.SCHEDULER)
        orders = []
        for patient_id, name, referring, requesting, performing in (
            ("WL1", "Yamada^Hanako", "García^José", "Wong^Anna", YAMADA),
            ("WL2", "Doe^Jane", "Garcia^Jose", "WONG^ANNA^^", "Koch^Eva"),
        ):
            order = create_order(
                session,
                NewOrder(
                    patient_id=patient_id,
                    patient_name=name,
                    requested_modality="CT",
                    study_description="CT HEAD",
                    referring_physician_name=referring,
                    requesting_physician=requesting,
                    scheduled_performing_physician_name=performing,
                ),
                principal=principal,
                duplicate_window=timedelta(0),
            )
            schedule_order_by_id(
                session, order.id, modality_id=modality.id, scheduled_at=slot, principal=principal
            )
            orders.append(order.id)
    return node, principal, orders


def _patients(responses: list[Dataset]) -> set[str]:
    return {str(ds.PatientID) for ds in responses}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([f"{SPS}.ScheduledPerformingPhysicianName=yamada^tarou"], {"WL1"}),
        ([f"{SPS}.ScheduledPerformingPhysicianName=山田^太郎"], {"WL1"}),
        ([f"{SPS}.ScheduledPerformingPhysicianName=KOCH^EVA"], {"WL2"}),
        ([f"{SPS}.ScheduledPerformingPhysicianName=*A"], {"WL2"}),  # kocH^evA
        ([f"{SPS}.ScheduledPerformingPhysicianName=yamada"], set()),
        ([f"{SPS}.ScheduledPerformingPhysicianName="], {"WL1", "WL2"}),
        (["RequestingPhysician=wong^anna"], {"WL1", "WL2"}),
        (["ReferringPhysicianName=GARCÍA^JOSÉ"], {"WL1"}),
        (["ReferringPhysicianName=gar*"], {"WL1", "WL2"}),
        (["PatientName=YAMADA^HANAKO"], {"WL1"}),
    ],
    # sorted: a set's order follows string hashing, different in each xdist process
    ids=lambda value: str(sorted(value)) if isinstance(value, set) else str(value),
)
def test_worklist_pn_keys_in_another_case(
    scheduled: tuple[Node, Principal, list[int]],
    tmp_path: Path,
    keys: list[str],
    expected: set[str],
) -> None:
    node, _, _ = scheduled
    responses = findscu_w(
        node,
        tmp_path,
        "SpecificCharacterSet=ISO_IR 192",
        "PatientID",
        *keys,
        f"{SPS}.ScheduledStationAETitle=CT_PN",
        calling="CT_PN",
    )
    assert _patients(responses) == expected


def test_worklist_answers_the_physicians_and_follows_an_edit(
    scheduled: tuple[Node, Principal, list[int]],
) -> None:
    node, principal, orders = scheduled
    assert node.db is not None

    def step(performer: str) -> list[Dataset]:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientID = ""
        ds.RequestingPhysician = ""
        item = Dataset()
        item.ScheduledPerformingPhysicianName = performer
        ds.ScheduledProcedureStepSequence = [item]
        ae = AE(ae_title="CT_PN")
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
        assert assoc.is_established
        try:
            return _find(assoc, ds, ModalityWorklistInformationFind)
        finally:
            assoc.release()

    (found,) = step("やまだ^*")
    assert str(found.PatientID) == "WL1" and str(found.RequestingPhysician) == "Wong^Anna"
    assert str(found.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName) == YAMADA

    # an edit of the order refolds its copy: the new name matches, the old one not
    with node.db.unit_of_work() as session:
        update_order(
            session,
            orders[0],
            changes={"scheduled_performing_physician_name": "Ivanov^Ivan"},
            principal=principal,
        )
    assert step("やまだ^*") == []
    (found,) = step("IVANOV^IVAN")
    assert str(found.PatientID) == "WL1"


# ------------------------------------------------------------------ HTTP


def _client(node: Node) -> httpx.Client:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        create_user(
            session,
            username="pn-http",
            password=PASSWORD,
            role="scheduler",
            actor=Actor.system(SystemActor.CLI),
        )
    base = f"http://127.0.0.1:{node.http_port}"
    token = httpx.post(
        f"{base}/api/auth/token", data={"username": "pn-http", "password": PASSWORD}, timeout=30
    )
    assert token.status_code == 200, token.text
    return httpx.Client(
        base_url=base,
        timeout=30,
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )


def _searched(client: httpx.Client, **keys: str) -> set[str]:
    response = client.get("/api/studies", params=keys)
    assert response.status_code == 200, response.text
    return {item["patient_id"] for item in response.json()["items"]}


def test_http_study_search_matches_every_pn_key_and_follows_a_correction(named: Node) -> None:
    with _client(named) as client:
        assert _searched(client, ReferringPhysicianName="garcía^josé") == {"PN1"}
        assert _searched(client, ReferringPhysicianName="GAR*") == {"PN1", "PN2"}
        assert _searched(client, NameOfPhysiciansReadingStudy="山田^太郎") == {"PN1"}
        assert _searched(client, PerformingPhysicianName="σωκράτης*") == {"PN1"}
        assert _searched(client, PerformingPhysicianName="smith^john^") == {"PN1"}

        # a correction refolds the copy (db/models.py), through the ORM
        (study,) = client.get("/api/studies", params={"StudyInstanceUID": UID["B"]}).json()["items"]
        corrected = client.patch(
            f"/api/studies/{study['id']}",
            json={"referring_physician_name": "Ōtani^Shōhei", "reason": "typo"},
        )
        assert corrected.status_code == 200, corrected.text
        assert _searched(client, ReferringPhysicianName="ŌTANI^SHŌHEI") == {"PN2"}
        assert _searched(client, ReferringPhysicianName="garcia^jose") == set()


def test_http_order_listing_matches_a_name_by_any_component_group(
    scheduled: tuple[Node, Principal, list[int]],
) -> None:
    node, _, orders = scheduled
    with node.db.unit_of_work() as session:  # type: ignore[union-attr]
        update_order(
            session,
            orders[1],
            changes={"patient_name": "Doe^Jane=ドウ^ジェーン"},
            principal=scheduled[1],
        )
    with _client(node) as client:

        def listed(name: str) -> set[int]:
            response = client.get("/api/orders", params={"patient_name": name})
            assert response.status_code == 200, response.text
            return {order["id"] for order in response.json()["items"]}

        assert listed("yamada") == {orders[0]}  # a prefix, case-insensitively
        assert listed("DOE^J") == {orders[1]}
        assert listed("ドウ") == {orders[1]}  # the start of another component group
        assert listed("hanako") == set()
