"""The demo data set: one definition read by ``dicom-node demo`` (orders) and by
``sample_dicom/generate.py`` (images), so accession numbers and UIDs always agree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from dicom_node.domain.enums import Priority, Role

# Fixed namespace: the same names give the same UIDs on every machine.
_DEMO_NAMESPACE = uuid.UUID("6f1c1c1e-8f0e-4d43-9a2c-2f1e5d0b7a10")


def demo_uid(*parts: str) -> str:
    """A deterministic UID under 2.25 (PS3.5 B.2) for demo objects."""
    return f"2.25.{uuid.uuid5(_DEMO_NAMESPACE, '/'.join(parts)).int}"


@dataclass(frozen=True)
class DemoSeries:
    number: int
    description: str
    instances: int


@dataclass(frozen=True)
class DemoStudy:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    specific_character_set: str
    accession_number: str
    modality: str
    modality_ae_title: str
    description: str
    body_part: str
    priority: Priority
    series: tuple[DemoSeries, ...]
    # False: images arrive with no order behind them (a reconciliation case)
    ordered: bool = True

    @property
    def study_instance_uid(self) -> str:
        return demo_uid("study", self.accession_number)

    def series_instance_uid(self, series: DemoSeries) -> str:
        return demo_uid("series", self.accession_number, str(series.number))

    def sop_instance_uid(self, series: DemoSeries, instance_number: int) -> str:
        return demo_uid("instance", self.accession_number, str(series.number), str(instance_number))


@dataclass(frozen=True)
class DemoModality:
    ae_title: str
    name: str
    type: str
    station_name: str
    center_code: str


@dataclass(frozen=True)
class DemoCenter:
    code: str
    name: str
    location: str
    contact_number: str


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: Role
    display_name: str
    specialty: str | None = None


DEMO_CENTERS = (
    DemoCenter("MAIN", "Main Hospital Imaging", "Building A, level 1", "+1 555 0100"),
    DemoCenter("NORTH", "North Outpatient Imaging", "12 North Road", "+1 555 0200"),
)

DEMO_MODALITIES = (
    DemoModality("CT_MAIN_1", "CT scanner 1", "CT", "CTMAIN1", "MAIN"),
    DemoModality("MR_NORTH_1", "MR scanner 1", "MR", "MRNORTH1", "NORTH"),
)

# one user per role, so every screen and permission can be tried
DEMO_USERS = (
    DemoUser("demo.admin", Role.ADMIN, "Ada Admin"),
    DemoUser("demo.scheduler", Role.SCHEDULER, "Sam Scheduler"),
    DemoUser("demo.tech", Role.TECHNOLOGIST, "Terry Technologist"),
    DemoUser("demo.rad1", Role.RADIOLOGIST, "Dr Rae Reader", "neuroradiology"),
    DemoUser("demo.rad2", Role.RADIOLOGIST, "Dr Bo Body", "body imaging"),
    # a referring physician's display name is their DICOM name (Family^Given^^Prefix):
    # an order naming them in ReferringPhysicianName is linked to them
    DemoUser("demo.referrer", Role.REFERRING_PHYSICIAN, "Ferrer^Ray^^Dr", "internal medicine"),
    DemoUser("demo.auditor", Role.AUDITOR, "Audrey Auditor"),
)

DEMO_STUDIES = (
    DemoStudy(
        patient_id="DEMO0001",
        patient_name="DOE^JANE",
        birth_date="19700101",
        sex="F",
        specific_character_set="ISO_IR 100",
        accession_number="DEMOACC0001",
        modality="CT",
        modality_ae_title="CT_MAIN_1",
        description="CT CHEST WITH CONTRAST",
        body_part="CHEST",
        priority=Priority.URGENT,
        series=(DemoSeries(1, "Scout", 2), DemoSeries(2, "Axial 5mm", 6)),
    ),
    DemoStudy(
        patient_id="DEMO0002",
        patient_name="SMITH^JOHN^A",
        birth_date="19551231",
        sex="M",
        specific_character_set="ISO_IR 100",
        accession_number="DEMOACC0002",
        modality="MR",
        modality_ae_title="MR_NORTH_1",
        description="MR BRAIN WITHOUT CONTRAST",
        body_part="HEAD",
        priority=Priority.ROUTINE,
        series=(DemoSeries(1, "T1 SAG", 4), DemoSeries(2, "T2 AX", 4), DemoSeries(3, "FLAIR", 4)),
    ),
    DemoStudy(
        patient_id="DEMO0003",
        patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう",
        birth_date="19821103",
        sex="M",
        specific_character_set="ISO_IR 192",
        accession_number="DEMOACC0003",
        modality="CT",
        modality_ae_title="CT_MAIN_1",
        description="CT HEAD",
        body_part="HEAD",
        priority=Priority.STAT,
        series=(DemoSeries(1, "Axial brain", 5), DemoSeries(2, "Bone window", 3)),
    ),
    DemoStudy(
        patient_id="DEMO0004",
        patient_name="MÜLLER^HANS",
        birth_date="19640229",
        sex="M",
        specific_character_set="ISO_IR 100",
        accession_number="DEMOACC0099",
        modality="CT",
        modality_ae_title="CT_MAIN_1",
        description="CT ABDOMEN",
        body_part="ABDOMEN",
        priority=Priority.ROUTINE,
        series=(DemoSeries(1, "Axial", 3),),
        ordered=False,
    ),
)
