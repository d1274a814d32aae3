"""Matching received images to orders (docs/domain.md#matching-images-to-orders "Matching images to
orders")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dicom_node.domain.enums import Priority
from dicom_node.domain.names import fold_person_name


@dataclass(frozen=True, slots=True)
class Demographics:
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None


def demographic_mismatches(order: Demographics, received: Demographics) -> list[str]:
    """Names of the attributes that disagree; empty when the images fit the order.

    A value missing on either side is not a disagreement: modalities often leave
    optional attributes empty. The issuer only counts when both sides carry one.
    Names compare case-insensitively on the first (alphabetic) component group,
    the one every system fills in.
    """
    mismatches = []
    if order.patient_id != received.patient_id:
        mismatches.append("PatientID")
    if (
        order.issuer_of_patient_id
        and received.issuer_of_patient_id
        and order.issuer_of_patient_id != received.issuer_of_patient_id
    ):
        mismatches.append("IssuerOfPatientID")
    if order.patient_name and received.patient_name:
        ours = fold_person_name(order.patient_name.split("=")[0]).rstrip("^ ")
        theirs = fold_person_name(received.patient_name.split("=")[0]).rstrip("^ ")
        if ours != theirs:
            mismatches.append("PatientName")
    if order.birth_date and received.birth_date and order.birth_date != received.birth_date:
        mismatches.append("PatientBirthDate")
    if order.sex and received.sex and order.sex != received.sex:
        mismatches.append("PatientSex")
    return mismatches


PRIORITY_RANK = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Reading turnaround targets by priority (docs/domain.md#sla-by-priority: STAT 1 h, urgent 12
    h)."""

    stat_minutes: int = 60
    urgent_minutes: int = 720
    routine_minutes: int = 1440

    def due(self, priority: Priority, start: datetime) -> datetime:
        minutes = {
            Priority.STAT: self.stat_minutes,
            Priority.URGENT: self.urgent_minutes,
            Priority.ROUTINE: self.routine_minutes,
        }[priority]
        return start + timedelta(minutes=minutes)
