"""Loading the demo data set: centers, modalities, users and scheduled orders."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingCenter, ImagingRequest, Modality
from dicom_node.domain.audit import Actor, SystemActor, order_event
from dicom_node.domain.demo import (
    DEMO_CENTERS,
    DEMO_MODALITIES,
    DEMO_STUDIES,
    DEMO_USERS,
    DemoUser,
)
from dicom_node.domain.enums import RequestStatus
from dicom_node.services.access.users import create_user, find_user
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject
from dicom_node.services.workflow.order_referrer import dicom_name


@dataclass
class DemoSummary:
    centers_created: list[str] = field(default_factory=list)
    modalities_created: list[str] = field(default_factory=list)
    users_created: list[DemoUser] = field(default_factory=list)
    orders_created: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"{len(self.centers_created)} centers",
            f"{len(self.modalities_created)} modalities",
            f"{len(self.users_created)} users",
            f"{len(self.orders_created)} scheduled orders",
        ]
        return "demo data loaded: " + ", ".join(parts) + " created (existing ones kept)"


def generate_demo_password() -> str:
    return secrets.token_urlsafe(12)


def load_demo(session: Session, *, password: str, actor: SystemActor) -> DemoSummary:
    """Create what is missing of the demo set; running it twice creates nothing new."""
    summary = DemoSummary()
    centers: dict[str, ImagingCenter] = {}
    for demo_center in DEMO_CENTERS:
        center = session.scalar(select(ImagingCenter).where(ImagingCenter.code == demo_center.code))
        if center is None:
            center = ImagingCenter(
                code=demo_center.code,
                name=demo_center.name,
                location=demo_center.location,
                contact_number=demo_center.contact_number,
            )
            session.add(center)
            summary.centers_created.append(demo_center.code)
        centers[demo_center.code] = center
    session.flush()

    modalities: dict[str, Modality] = {}
    for demo_modality in DEMO_MODALITIES:
        modality = session.scalar(
            select(Modality).where(Modality.dicom_ae_title == demo_modality.ae_title)
        )
        if modality is None:
            modality = Modality(
                imaging_center_id=centers[demo_modality.center_code].id,
                name=demo_modality.name,
                type=demo_modality.type,
                dicom_ae_title=demo_modality.ae_title,
                station_name=demo_modality.station_name,
            )
            session.add(modality)
            summary.modalities_created.append(demo_modality.ae_title)
        modalities[demo_modality.ae_title] = modality
    session.flush()

    for demo_user in DEMO_USERS:
        if find_user(session, demo_user.username) is None:
            create_user(
                session,
                username=demo_user.username,
                password=password,
                role=demo_user.role.value,
                display_name=demo_user.display_name,
                specialty=demo_user.specialty,
                actor=Actor.system(actor),
            )
            summary.users_created.append(demo_user)
    referrer = find_user(session, "demo.referrer")

    now = datetime.now(UTC)
    today_9am = datetime.combine(now.date(), time(9, 0), tzinfo=UTC)
    for index, study in enumerate(s for s in DEMO_STUDIES if s.ordered):
        exists = session.scalar(
            select(ImagingRequest.id).where(
                ImagingRequest.accession_number == study.accession_number
            )
        )
        if exists is not None:
            continue
        modality = modalities[study.modality_ae_title]
        order = ImagingRequest(
            patient_id=study.patient_id,
            patient_name=study.patient_name,
            patient_birth_date=study.birth_date,
            patient_sex=study.sex,
            accession_number=study.accession_number,
            study_instance_uid=study.study_instance_uid,
            requested_procedure_id=f"RP{index + 1:04d}",
            scheduled_procedure_step_id=f"SPS{index + 1:04d}",
            study_description=study.description,
            requested_modality=study.modality,
            priority=study.priority.value,
            status=RequestStatus.SCHEDULED.value,
            # placed by the demo referring physician and for them: they see it,
            # its study and its signed report (services/access/visibility.py)
            requested_by_id=referrer.id if referrer else None,
            referring_physician_id=referrer.id if referrer else None,
            referring_physician_name=dicom_name(referrer.display_name) if referrer else None,
            imaging_center_id=modality.imaging_center_id,
            scheduled_modality_id=modality.id,
            scheduled_at=today_9am + timedelta(minutes=30 * index),
            scheduled_on=now,
            clinical_indication="demo order",
        )
        session.add(order)
        session.flush()
        record_audit_event(
            session,
            order_event(
                "order_scheduled",
                Actor.system(actor),
                order.id,
                order_subject(order),
                details={"after": {"status": RequestStatus.SCHEDULED.value, "source": "demo"}},
            ),
        )
        summary.orders_created.append(study.accession_number)
    return summary
