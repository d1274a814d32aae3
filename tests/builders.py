"""Builders shared by the test suites: the data and the peers more than one test
module uses, so that no test module imports another.

Helpers for external tools and processes (`dicom-node` commands, DCMTK's findscu,
PostgreSQL, free ports) live in ``tests/support.py``; DICOM data sets in
``tests/dicomfiles.py``; this module holds what tests build on top of them:

- a seeded reading item, user ids and audit rows for the API tests;
- the demo orders, an SCU with a context for every service, audit rows;
- raw PDUs (an A-ASSOCIATE-RQ built by hand);
- the query table (studies and their C-FIND matching cases), stored by the
  compiler tests and sent over the wire by the findscu tests;
- the person-name table, the same for PN matching;
- retrieve peers (a storage SCP with chosen syntaxes, one that stops reading)
  and compressed studies;
- users, a claimed study and reports in a given state for the service-level
  reporting and workflow tests.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    AuditEvent,
    DicomInstance,
    DicomStudy,
    ImagingRequest,
    Patient,
    User,
    WorklistItem,
)
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Priority, Role
from dicom_node.domain.matching import PRIORITY_RANK
from dicom_node.domain.part10 import dataset_offset
from dicom_node.domain.permissions import Principal
from dicom_node.node import Node
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.instances import IngestPolicy, Source, StoreOutcome, store_instance
from dicom_node.services.operations.demo import load_demo
from dicom_node.services.reporting.reports import (
    add_addendum,
    create_report,
    finalize_report,
    submit_report,
)
from dicom_node.services.reporting.versions import VersionKind
from dicom_node.storage import FileStore
from tests.dicomfiles import ct_dataset, to_bytes
from tests.support import free_port

if TYPE_CHECKING:
    from tests.api.conftest import ApiServer

# --------------------------------------------- API tests: a seeded reading item, users, audit rows

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Seeded:
    study_id: int
    item_id: int
    order_id: int
    study_uid: str
    patient_id: str


def seed_study(
    db: Database,
    *,
    priority: str = "routine",
    due_in: timedelta | None = timedelta(hours=4),
    modality: str = "CT",
    queue: str = "reading",
    status: str = "pending",
    requested_by_id: int | None = None,
) -> Seeded:
    """A complete, matched study of a scheduled order, with one worklist item."""
    n = next(_numbers)
    now = datetime.now(UTC)
    with db.unit_of_work() as session:
        patient = Patient(
            patient_id=f"WL{n}",
            patient_name=f"PATIENT^{n}",
            patient_name_folded=f"patient^{n}",
            patient_birth_date="19800101",
            patient_sex="F",
        )
        order = ImagingRequest(
            patient_id=f"WL{n}",
            patient_name=f"PATIENT^{n}",
            patient_name_folded=f"patient^{n}",
            accession_number=f"ACC{n}",
            priority=priority,
            status="performed",
            requested_modality=modality,
            requested_by_id=requested_by_id,
        )
        session.add_all([patient, order])
        session.flush()
        study = DicomStudy(
            study_instance_uid=generate_uid(),
            patient_pk=patient.id,
            imaging_request_id=order.id,
            accession_number=f"ACC{n}",
            study_description=f"{modality} STUDY {n}",
            modality_type=modality,
            series_count=1,
            instance_count=3,
            metadata_status="matched",
            status="acquired",
            completeness="complete",
        )
        session.add(study)
        session.flush()
        item = WorklistItem(
            imaging_request_id=order.id,
            dicom_study_id=study.id,
            queue_type=queue,
            status=status,
            priority=priority,
            priority_rank=PRIORITY_RANK[Priority(priority)],
            due_at=now + due_in if due_in is not None else None,
        )
        session.add(item)
        session.flush()
        return Seeded(study.id, item.id, order.id, study.study_instance_uid, patient.patient_id)


def user_id(api: ApiServer, username: str) -> int:
    with api.db.read() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found


def audit_actions(api: ApiServer, target_class: str, target_id: int) -> list[AuditEvent]:
    with api.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.target_class == target_class,
                    AuditEvent.target_id == str(target_id),
                )
                .order_by(AuditEvent.id)
            )
        )


# ------------------------------------------ the demo orders, an SCU with every service, audit rows

REFUSED_NOT_AUTHORIZED = 0x0124

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _study(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def _final(responses: Iterator[tuple[Dataset, Dataset | None]]) -> tuple[int, int]:
    statuses = [int(status.Status) for status, _ in responses if status]
    pending = sum(code in (0xFF00, 0xFF01) for code in statuses)
    return statuses[-1], pending


def demo(node: Node) -> dict[str, ImagingRequest]:
    assert node.db is not None
    with node.db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor=SystemActor.CLI)
    with node.db.read() as session:
        return {o.accession_number or "": o for o in session.scalars(select(ImagingRequest))}


@dataclass
class Scu:
    """One association from ``calling`` with a context for every service."""

    assoc: Association

    @classmethod
    def open(cls, node: Node, calling: str) -> Scu:
        ae = AE(ae_title=calling)
        for context in (
            Verification,
            CTImageStorage,
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
            ModalityWorklistInformationFind,
            ModalityPerformedProcedureStep,
            StorageCommitmentPushModel,
        ):
            ae.add_requested_context(context)
        assoc = ae.associate(
            "127.0.0.1",
            node.dicom_port,
            ae_title="DICOM_NODE",
            # C-GET sends its instances back on this association
            ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)],
        )
        assert assoc.is_established
        return cls(assoc)

    def close(self) -> None:
        self.assoc.release()

    def echo(self) -> int:
        return int(self.assoc.send_c_echo().Status)

    def store(self) -> int:
        return int(self.assoc.send_c_store(ct_dataset(study_uid=generate_uid())).Status)

    def find(self) -> tuple[int, int]:
        """(final status, matches) of a STUDY-level C-FIND for every study."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.PatientID = ""
        return _final(self.assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))

    def worklist(self) -> tuple[int, int]:
        query = Dataset()
        query.PatientID = ""
        step = Dataset()
        step.ScheduledStationAETitle = ""
        query.ScheduledProcedureStepSequence = [step]
        return _final(self.assoc.send_c_find(query, ModalityWorklistInformationFind))

    def get(self) -> int:
        """Final status of a C-GET of a study that is not there."""
        model = StudyRootQueryRetrieveInformationModelGet
        return _final(self.assoc.send_c_get(_study(generate_uid()), model))[0]

    def move(self, destination: str) -> int:
        model = StudyRootQueryRetrieveInformationModelMove
        return _final(self.assoc.send_c_move(_study(generate_uid()), destination, model))[0]

    def n_create(self, uid: str, order: ImagingRequest | None = None) -> int:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepStartDate = "20261124"
        ds.PerformedProcedureStepStartTime = "101500"
        item = Dataset()
        item.StudyInstanceUID = order.study_instance_uid if order else generate_uid()
        item.AccessionNumber = order.accession_number if order else ""
        ds.ScheduledStepAttributesSequence = [item]
        status, _ = self.assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        return int(status.Status)

    def n_set(self, uid: str, status: str = "DISCONTINUED") -> int:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        if status == "COMPLETED":
            ds.PerformedProcedureStepEndDate = "20261124"
            ds.PerformedProcedureStepEndTime = "103000"
            series = Dataset()
            series.SeriesInstanceUID = generate_uid()
            series.ReferencedImageSequence = []
            ds.PerformedSeriesSequence = [series]
        answer, _ = self.assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        return int(answer.Status)

    def n_action(self) -> int:
        info = Dataset()
        info.TransactionUID = generate_uid()
        item = Dataset()
        item.ReferencedSOPClassUID = str(CTImageStorage)
        item.ReferencedSOPInstanceUID = generate_uid()
        info.ReferencedSOPSequence = [item]
        answer, _ = self.assoc.send_n_action(
            info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE
        )
        return int(answer.Status)


def audit_rows(db_url: str, action: str) -> list[AuditEvent]:
    db = Database(db_url)
    try:
        with db.read() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
                )
            )
    finally:
        db.dispose()


# ---------------------------------------------------------------------------------------- raw PDUs

VERIFICATION = b"1.2.840.10008.1.1"

IMPLICIT_LE = b"1.2.840.10008.1.2"


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_rq(*, called: bytes, calling: bytes, abstract_syntaxes: list[bytes]) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with any bytes in its AE titles and UIDs."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16]
    body += b"\x00" * 32
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")  # DICOM application context
    for number, syntax in enumerate(abstract_syntaxes):
        context = bytes([2 * number + 1, 0, 0, 0]) + _item(0x30, syntax) + _item(0x40, IMPLICIT_LE)
        body += _item(0x20, context)
    # maximum length and implementation class UID (PS3.7 D.3.3)
    body += _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


# --------------------------------------------------------------------------------- the query table

# deterministic: the UIDs appear in the test ids, which must be the same in every
# process (pytest-xdist workers compare their collections)
QUERY_UID = {
    name: generate_uid(entropy_srcs=["test_query", name])
    for name in ("A", "B", "C", "D", "A1", "A2", "B1", "C1", "D1")
}


# study label -> patient, study attributes; series label -> study, modality, instances
QUERY_PATIENTS = {
    "A": ("PAT1", "DOE^JANE"),
    "B": ("PAT2", "doe^john"),
    "C": ("PAT3", "Διονυσιος=ΔΙΟΝ^ΤΕΣΤ"),
    "D": ("PAT4", "O'NEIL^ANN"),
}


QUERY_STUDIES = {
    "A": {
        "StudyDate": "20260105",
        "StudyTime": "101500",
        "AccessionNumber": "ACC100",
        "StudyDescription": "CT CHEST",
    },
    "B": {
        "StudyDate": "20251231",
        "StudyTime": "0930",
        "AccessionNumber": "ACC_200",
        "StudyDescription": "50% DOSE",
    },
    "C": {
        "StudyDate": "20260110",
        "StudyTime": "141530.25",
        "AccessionNumber": "ACC300",
        "StudyDescription": "ct chest",
    },
    "D": {
        "StudyDate": "20250101",
        "StudyTime": "23",
        "AccessionNumber": "X%Y",
        "StudyDescription": "HEAD",
    },
}


QUERY_SERIES = {"A1": ("A", "CT", 2), "A2": ("A", "MR", 1), "B1": ("B", "CT", 1)}


QUERY_SERIES |= {"C1": ("C", "MR", 1), "D1": ("D", "CR", 1)}


# series label -> RequestAttributesSequence items (AccessionNumber, RequestedProcedureID,
# ScheduledProcedureStepID, StudyInstanceUID); study C has none
QUERY_REQUESTS = {
    "A1": [("ACC100", "RP1", "SPS1", None), ("ACC101", "RP2", "SPS2", None)],
    "A2": [("ACC102", "RP3", "SPS3", None)],
    "B1": [("ACC_200", "RP1", "SPS9", "B")],
    "D1": [("X%Y", "RP%", None, None)],
}


_REQUEST_KEYS = ("AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID")


def indexed(db: Database, tmp_path: Path) -> Database:
    """Store the table's studies into ``db`` (also used by the findscu test)."""
    store = FileStore(tmp_path / "store", fsync=False)
    for series_label, (study, modality, count) in QUERY_SERIES.items():
        patient_id, name = QUERY_PATIENTS[study]
        for number in range(1, count + 1):
            ds = ct_dataset(
                study_uid=QUERY_UID[study],
                series_uid=QUERY_UID[series_label],
                patient_id=patient_id,
                patient_name=name,
                modality=modality,
                instance_number=number,
            )
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SeriesDescription = series_label
            ds.ReferringPhysicianName = "WHO^DR" if study == "A" else "OTHER^DR"
            for keyword, value in QUERY_STUDIES[study].items():
                setattr(ds, keyword, value)
            if series_label in QUERY_REQUESTS:
                ds.RequestAttributesSequence = [
                    _request_item(*values) for values in QUERY_REQUESTS[series_label]
                ]
            result = store_instance(
                db,
                store,
                part10=to_bytes(ds),
                source=Source(calling_ae_title="TEST"),
                policy=IngestPolicy(),
            )
            assert result.outcome is StoreOutcome.STORED
    return db


def _request_item(*values: str | None) -> Dataset:
    item = Dataset()
    for keyword, value in zip(_REQUEST_KEYS, values, strict=False):
        if value is not None:
            setattr(item, keyword, value)
    if values[3] is not None:
        item.StudyInstanceUID = QUERY_UID[values[3]]
    return item


QUERY_STUDY_CASES = [
    # PN: case-insensitive, wildcards, non-ASCII (C.2.2.2.1, C.2.2.2.4)
    ({"PatientName": "DOE^JANE"}, {"A"}),
    ({"PatientName": "doe^jane"}, {"A"}),
    ({"PatientName": "doe*"}, {"A", "B"}),
    ({"PatientName": "D?E^J*"}, {"A", "B"}),
    ({"PatientName": "*JOHN"}, {"B"}),
    ({"PatientName": "διονυσιος"}, {"C"}),
    ({"PatientName": "ΔΙΟΝΥΣΙΟΣ"}, {"C"}),
    ({"PatientName": "Διον*"}, {"C"}),
    ({"PatientName": "O'NEIL^ANN"}, {"D"}),
    ({"PatientName": "DOE"}, set()),  # single value: the whole name, not a prefix
    # a value with no "=" matches any one component group (alphabetic, ideographic...)
    ({"PatientName": "διον^τεστ"}, {"C"}),
    ({"PatientName": "ΔΙΟΝ*"}, {"C"}),
    ({"PatientName": "Διονυσιος=ΔΙΟΝ^ΤΕΣΤ"}, {"C"}),
    ({"PatientName": "Διονυσιος=ΨΩ"}, set()),
    # several values: any of them (backslash-separated)
    ({"PatientID": "PAT1\\PAT4"}, {"A", "D"}),
    ({"PatientName": "doe^jane\\O'N*"}, {"A", "D"}),
    # other strings: case-sensitive single value
    ({"StudyDescription": "CT CHEST"}, {"A"}),
    ({"StudyDescription": "ct chest"}, {"C"}),
    ({"StudyDescription": "ct*"}, {"C"}),
    ({"StudyDescription": "*CHEST"}, {"A"}),
    ({"PatientID": "PAT1"}, {"A"}),
    ({"PatientID": "pat1"}, set()),
    ({"ReferringPhysicianName": "WHO^DR"}, {"A"}),
    # SQL LIKE's own characters are literal (never wildcards)
    ({"StudyDescription": "50%*"}, {"B"}),
    ({"StudyDescription": "5_*"}, set()),
    ({"AccessionNumber": "ACC_200"}, {"B"}),
    ({"AccessionNumber": "ACC_*"}, {"B"}),
    ({"AccessionNumber": "ACC?00"}, {"A", "C"}),
    ({"AccessionNumber": "X%Y"}, {"D"}),
    ({"AccessionNumber": "X?Y"}, {"D"}),
    ({"AccessionNumber": "X_Y"}, set()),
    # universal (C.2.2.2.3)
    ({"StudyDescription": ""}, {"A", "B", "C", "D"}),
    ({"StudyDescription": "*"}, {"A", "B", "C", "D"}),
    # DA single and ranges, open ends inclusive (C.2.2.2.5)
    ({"StudyDate": "20260105"}, {"A"}),
    ({"StudyDate": "2026.01.05"}, {"A"}),
    ({"StudyDate": "20260101-20260131"}, {"A", "C"}),
    ({"StudyDate": "20260105-20260110"}, {"A", "C"}),
    ({"StudyDate": "-20251231"}, {"B", "D"}),
    ({"StudyDate": "20260106-"}, {"C"}),
    ({"StudyDate": "20240101"}, set()),
    # TM at the precision the query gives, single value and ranges (C.2.2.2.5)
    ({"StudyTime": "1015"}, {"A"}),
    ({"StudyTime": "10"}, {"A"}),
    ({"StudyTime": "101501"}, set()),
    ({"StudyTime": "0900-1100"}, {"A", "B"}),
    ({"StudyTime": "-0930"}, {"B"}),
    ({"StudyTime": "1415-"}, {"C", "D"}),
    ({"StudyTime": "141530.25"}, {"C"}),
    ({"StudyTime": "14:15:30"}, {"C"}),
    # QUERY_UID list (C.2.2.2.2)
    ({"StudyInstanceUID": f"{QUERY_UID['A']}\\{QUERY_UID['C']}"}, {"A", "C"}),
    ({"StudyInstanceUID": QUERY_UID["B"]}, {"B"}),
    # ModalitiesInStudy: one of its values
    ({"ModalitiesInStudy": "MR"}, {"A", "C"}),
    ({"ModalitiesInStudy": "CT"}, {"A", "B"}),
    ({"ModalitiesInStudy": "CR"}, {"D"}),
    ({"ModalitiesInStudy": "C"}, set()),
    ({"ModalitiesInStudy": "CR\\US"}, {"D"}),
    ({"ModalitiesInStudy": "CT\\CR"}, {"A", "B", "D"}),
    # StudyDate + StudyTime together: one combined date-time range (C.2.2.2.5.1);
    # the time bounds hold on the first and last day, any time of day in between
    ({"StudyDate": "20251231-20260110", "StudyTime": "1200-1500"}, {"A", "C"}),
    ({"StudyDate": "-20260105", "StudyTime": "-1000"}, {"B", "D"}),
    ({"StudyDate": "20260105-", "StudyTime": "1100-"}, {"C"}),
    ({"StudyDate": "20260105-", "StudyTime": "1015"}, {"A", "C"}),
    ({"StudyDate": "20251231-20260105", "StudyTime": "0930-1015"}, {"A", "B"}),
    ({"StudyDate": "20251231-20260105", "StudyTime": "0931-1014"}, set()),
    ({"StudyDate": "20260105", "StudyTime": "1015"}, {"A"}),
    ({"StudyDate": "20260105", "StudyTime": "1100-"}, set()),
    ({"StudyDate": "20240101-20260131", "StudyTime": "2300-"}, {"A", "B", "C", "D"}),
    # keys combine with AND
    ({"PatientName": "doe*", "StudyDate": "20260101-"}, {"A"}),
    ({"PatientName": "doe*", "ModalitiesInStudy": "CT", "StudyDate": "-20251231"}, {"B"}),
]


# PS3.4 C.2.2.2.6: the query item's keys must all match ONE stored item
QUERY_SEQUENCE_CASES: list[tuple[dict[str, str] | None, set[str]]] = [
    ({"AccessionNumber": "ACC100"}, {"A"}),
    ({"AccessionNumber": "ACC100", "RequestedProcedureID": "RP1"}, {"A"}),
    ({"AccessionNumber": "ACC100", "RequestedProcedureID": "RP2"}, set()),  # two items
    ({"AccessionNumber": "ACC102", "ScheduledProcedureStepID": "SPS3"}, {"A"}),  # 2nd series
    ({"RequestedProcedureID": "RP1"}, {"A", "B"}),
    ({"AccessionNumber": "acc100"}, set()),  # case-sensitive
    ({"AccessionNumber": "ACC10?"}, {"A"}),
    ({"AccessionNumber": "ACC*"}, {"A", "B"}),
    ({"AccessionNumber": "ACC_*"}, {"B"}),  # LIKE's _ is literal
    ({"RequestedProcedureID": "RP_"}, set()),
    ({"RequestedProcedureID": "RP%"}, {"D"}),
    ({"RequestedProcedureID": "RP?"}, {"A", "B", "D"}),
    ({"AccessionNumber": "ACC100\\X%Y"}, {"A", "D"}),
    ({"StudyInstanceUID": QUERY_UID["B"]}, {"B"}),
    ({"StudyInstanceUID": f"{QUERY_UID['A']}\\{QUERY_UID['B']}"}, {"B"}),
    ({"ScheduledProcedureStepID": "SPS9", "StudyInstanceUID": QUERY_UID["A"]}, set()),
    # universal: zero-length sequence, empty item, empty or * values
    (None, {"A", "B", "C", "D"}),
    ({}, {"A", "B", "C", "D"}),
    ({"AccessionNumber": ""}, {"A", "B", "C", "D"}),
    ({"AccessionNumber": "*"}, {"A", "B", "C", "D"}),
]


# --------------------------------------------------------------------------- the person-name table

# deterministic UIDs: they appear in test ids, the same in every process
PN_UID = {label: generate_uid(entropy_srcs=["test_pn_matching", label]) for label in "ABC"}


PN_SERIES_UID = {
    label: generate_uid(entropy_srcs=["test_pn_matching", label]) for label in ("A1", "A2", "B1")
}


YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"


# study label -> (PatientID, PatientName, ReferringPhysicianName, NameOfPhysiciansReadingStudy)
PN_STUDIES: dict[str, tuple[str, str, str | None, list[str] | None]] = {
    "A": ("PN1", "Müller^Hans", "García^José", ["Wong^Anna", YAMADA]),
    "B": ("PN2", "DOE^JANE", "GARCIA^JOSE^^", ["SMITH^JOHN"]),
    "C": ("PN3", "doe^john", None, None),  # no physicians at all
}


# series label -> (study, PerformingPhysicianName)
PN_SERIES: dict[str, tuple[str, str | None]] = {
    "A1": ("A", "Smith^John^^^"),
    "A2": ("A", "Koch^Eva\\ΣΩΚΡΆΤΗΣ^ΠΑΠΑΔΌΠΟΥΛΟΣ"),
    "B1": ("B", None),
}


PN_SERIES_OF_STUDY = {"C": "C1"}


PN_STUDY_CASES: list[tuple[dict[str, str], set[str]]] = [
    # ReferringPhysicianName: was case-sensitive before the PN rule covered it
    ({"ReferringPhysicianName": "García^José"}, {"A"}),
    ({"ReferringPhysicianName": "garcía^josé"}, {"A"}),
    ({"ReferringPhysicianName": "GARCÍA^JOSÉ"}, {"A"}),
    ({"ReferringPhysicianName": "garcia^jose"}, {"B"}),  # accents are letters
    ({"ReferringPhysicianName": "Garcia^Jose^"}, {"B"}),  # trailing empty components
    ({"ReferringPhysicianName": "gar*"}, {"A", "B"}),
    ({"ReferringPhysicianName": "G?RC?A^*"}, {"A", "B"}),
    ({"ReferringPhysicianName": "garcía"}, set()),  # a whole group, not a prefix
    ({"ReferringPhysicianName": "garcía^josé\\nobody^x"}, {"A"}),
    ({"ReferringPhysicianName": ""}, {"A", "B", "C"}),
    ({"ReferringPhysicianName": "*"}, {"A", "B", "C"}),
    # NameOfPhysiciansReadingStudy: multi-valued, one value with three groups
    ({"NameOfPhysiciansReadingStudy": "WONG^ANNA"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "yamada^tarou"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "山田^太郎"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "やまだ^*"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "YAMADA^TAROU=山田^太郎=やまだ^たろう"}, {"A"}),
    ({"NameOfPhysiciansReadingStudy": "Yamada^Tarou=山田^太郎"}, set()),
    ({"NameOfPhysiciansReadingStudy": "smith^john"}, {"B"}),
    ({"NameOfPhysiciansReadingStudy": "s*"}, {"B"}),
    ({"NameOfPhysiciansReadingStudy": "wong^anna\\SMITH^JOHN"}, {"A", "B"}),
    ({"NameOfPhysiciansReadingStudy": ""}, {"A", "B", "C"}),
    # PatientName: the rule it always had
    ({"PatientName": "MÜLLER^HANS"}, {"A"}),
    ({"PatientName": "Mu\u0308ller^hans"}, {"A"}),  # decomposed ü
    ({"PatientName": "doe^jane"}, {"B"}),
    ({"PatientName": "DOE*"}, {"B", "C"}),
    # keys of series below the study: a study matches when one of its series does
    # (the HTTP search; C-FIND refuses a key below the query level)
]


PN_SERIES_CASES: list[tuple[dict[str, str], set[str]]] = [
    ({"PerformingPhysicianName": "SMITH^JOHN"}, {"A1"}),
    ({"PerformingPhysicianName": "smith^john^"}, {"A1"}),
    ({"PerformingPhysicianName": "koch^eva"}, {"A2"}),
    ({"PerformingPhysicianName": "σωκράτης^παπαδόπουλος"}, {"A2"}),  # final sigma
    ({"PerformingPhysicianName": "Σωκ*"}, {"A2"}),
    ({"PerformingPhysicianName": "*^JOHN"}, {"A1"}),
    ({"PerformingPhysicianName": "k*\\smith^john"}, {"A1", "A2"}),
    ({"PerformingPhysicianName": "eva"}, set()),
    ({"PerformingPhysicianName": ""}, {"A1", "A2", "B1", "C1"}),
    ({"PerformingPhysicianName": "koch^eva", "ReferringPhysicianName": "GARCÍA^JOSÉ"}, {"A2"}),
]


def store_named(db: Database, store: FileStore) -> None:
    """Store the table's studies (also used by the C-FIND and HTTP tests)."""
    series = [(label, study, performer) for label, (study, performer) in PN_SERIES.items()]
    series += [(label, study, None) for study, label in PN_SERIES_OF_STUDY.items()]
    for series_label, study, performer in series:
        patient_id, patient_name, referring, readers = PN_STUDIES[study]
        ds = ct_dataset(
            study_uid=PN_UID[study],
            series_uid=PN_SERIES_UID.get(series_label)
            or generate_uid(entropy_srcs=["test_pn_matching", series_label]),
            patient_id=patient_id,
            patient_name=patient_name,
        )
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SeriesDescription = series_label
        if referring is not None:
            ds.ReferringPhysicianName = referring
        if readers is not None:
            ds.NameOfPhysiciansReadingStudy = readers
        if performer is not None:
            ds.PerformingPhysicianName = performer.split("\\")
        result = store_instance(
            db,
            store,
            part10=to_bytes(ds),
            source=Source(calling_ae_title="TEST"),
            policy=IngestPolicy(),
        )
        assert result.outcome is StoreOutcome.STORED, result.reason


# ---------------------------------------------------------------------- retrieve peers and studies

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

STORAGE_CLASSES = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


@dataclass
class Received:
    transfer_syntax: str
    raw: bytes  # the data set as it came over the wire
    dataset: Dataset


class Destination:
    """A storage SCP: the transfer syntaxes it accepts per SOP class (in its
    order of preference), and the status it answers per instance."""

    def __init__(
        self,
        syntaxes: list[str] | None = None,
        *,
        per_class: dict[str, list[str]] | None = None,
        refuse: set[str] | None = None,
        ae_title: str = "DEST",
    ) -> None:
        self.port = free_port()
        self.refuse = refuse or set()
        self.refuse_all = False
        self.received: dict[str, Received] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for uid in STORAGE_CLASSES:
            # None: every syntax pynetdicom knows, in its order (uncompressed first)
            chosen = (per_class or {}).get(uid, syntaxes)
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES if chosen is None else chosen)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )

    def _on_store(self, event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        uid = str(dataset.SOPInstanceUID)
        with self._lock:
            self.received[uid] = Received(
                str(event.context.transfer_syntax), event.request.DataSet.getvalue(), dataset
            )
        return 0xA700 if self.refuse_all or uid in self.refuse else 0x0000

    def stop(self) -> None:
        self._server.shutdown()


class StallingPeer:
    """A storage SCP that accepts every CT context, then stops reading at the
    first P-DATA-TF until closed (``stalled`` is set then): with its small
    receive buffer, a large data set fills the socket buffers of both ends and
    the sender's DUL thread blocks in ``send()``."""

    def __init__(self, ae_title: str = "STALLER") -> None:
        self.port = free_port()
        self.stalled = threading.Event()
        self._release = threading.Event()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, self._small_buffer), (evt.EVT_PDU_RECV, self._stop)],
        )

    def _small_buffer(self, event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def _stop(self, event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            self.stalled.set()
            self._release.wait()  # on the peer's reader thread: nothing more is read

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()


def pydicom_testfile(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name}: neither in pydicom nor in pydicom-data"
    return Path(str(path))


def compressed_study(
    tmp_path: Path, names: list[str], *, patient_id: str = "TX1", study_uid: str | None = None
) -> tuple[str, dict[str, str]]:
    """The files as one study of one patient (new UIDs, syntax and pixels
    untouched): the StudyInstanceUID and SOP Instance UID -> file name."""
    study_uid = study_uid or generate_uid()
    folder = tmp_path / f"in-{study_uid}"
    folder.mkdir()
    names_by_uid = {}
    for index, name in enumerate(names):
        ds = pydicom.dcmread(pydicom_testfile(name))
        ds.PatientID = patient_id
        ds.PatientName = "TRANSCODE^TEST"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
        names_by_uid[str(ds.SOPInstanceUID)] = name
    return study_uid, names_by_uid


def import_study(node: Node, tmp_path: Path) -> None:
    assert node.db is not None and node.store is not None
    files = sorted(tmp_path.glob("in-*/*.dcm"))
    summary = import_files(
        node.db, node.store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT
    )
    assert summary.ok and summary.total == len(files), summary.describe()


def stored_files(node: Node) -> dict[str, tuple[str, Path]]:
    """SOP Instance UID -> (stored transfer syntax, file)."""
    assert node.db is not None and node.store is not None
    with node.db.read() as session:
        rows = session.execute(
            select(
                DicomInstance.sop_instance_uid,
                DicomInstance.transfer_syntax_uid,
                DicomInstance.file_path,
            )
        ).all()
    return {uid: (ts, node.store.absolute(path)) for uid, ts, path in rows}


def stored_dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def retrieve_identifier(level: str, **keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def export_audits(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "instances_exported")
                .order_by(AuditEvent.id)
            )
        )


# --------------------------------------------- service-level reporting tests (no server)
# users, a complete matched study whose reading item a radiologist holds, and a
# report driven to a given state through the services

DEADLINE_MINUTES = 60


def add_user(db: Database, role: Role) -> Principal:
    n = next(_numbers)
    with db.unit_of_work() as session:
        user = User(username=f"{role.value}-{n}", password_hash="x", role=role.value)
        session.add(user)
        session.flush()
        return Principal(user_id=user.id, username=user.username, role=role)


@dataclass(frozen=True)
class Study:
    study_id: int
    order_id: int
    reading_item_id: int


def claimed_study(
    db: Database,
    holder: Principal,
    *,
    referring_physician_id: int | None = None,
    requested_by_id: int | None = None,
) -> Study:
    """A complete, matched study of a performed order, its reading item claimed
    by ``holder``."""
    n = next(_numbers)
    with db.unit_of_work() as session:
        patient = Patient(patient_id=f"RS{n}", patient_name=f"PATIENT^{n}")
        order = ImagingRequest(
            patient_id=f"RS{n}",
            patient_name=f"PATIENT^{n}",
            accession_number=f"RSA{n}",
            status="performed",
            requested_modality="CT",
            referring_physician_id=referring_physician_id,
            requested_by_id=requested_by_id,
        )
        session.add_all([patient, order])
        session.flush()
        study = DicomStudy(
            study_instance_uid=generate_uid(),
            patient_pk=patient.id,
            imaging_request_id=order.id,
            accession_number=f"RSA{n}",
            modality_type="CT",
            metadata_status="matched",
            status="reading",
            completeness="complete",
        )
        session.add(study)
        session.flush()
        item = WorklistItem(
            imaging_request_id=order.id,
            dicom_study_id=study.id,
            queue_type="reading",
            status="claimed",
            assigned_to_id=holder.user_id,
            claimed_at=datetime.now(UTC),
            priority="routine",
            priority_rank=2,
            due_at=datetime.now(UTC) + timedelta(hours=4),
        )
        session.add(item)
        session.flush()
        return Study(study.id, order.id, item.id)


def new_report(
    db: Database, study: Study, author: Principal, *, critical_flag: bool = False
) -> int:
    with db.unit_of_work() as session:
        return create_report(
            session,
            study_id=study.study_id,
            findings="Clear lungs.",
            impression="Normal.",
            critical_flag=critical_flag,
            principal=author,
            deadline_minutes=DEADLINE_MINUTES,
        ).id


def submit(session: Session, report_id: int, author: Principal) -> None:
    submit_report(session, report_id=report_id, principal=author, deadline_minutes=DEADLINE_MINUTES)


def finalize(session: Session, report_id: int, reviewer: Principal) -> None:
    finalize_report(session, report_id=report_id, principal=reviewer, allow_self_review=False)


def amend(session: Session, report_id: int, writer: Principal) -> None:
    add_addendum(
        session,
        report_id=report_id,
        kind=VersionKind.ADDENDUM,
        principal=writer,
        impression="Normal. Addendum: small nodule.",
    )


def signed_report(db: Database, study: Study, author: Principal, reviewer: Principal) -> int:
    report_id = new_report(db, study, author)
    with db.unit_of_work() as session:
        submit(session, report_id, author)
    with db.unit_of_work() as session:
        finalize(session, report_id, reviewer)
    return report_id
