"""Duplicate order prevention: an open order of the same patient for the same
modality and procedure, created shortly before, is found before a new one is
made (HTTP and reconciliation alike), and an override is audited."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dicom_node.db.models import ImagingRequest
from dicom_node.domain.audit import order_event
from dicom_node.domain.enums import RequestStatus
from dicom_node.domain.permissions import Principal
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import order_subject, user_actor

OPEN_STATUSES = (RequestStatus.REQUESTED, RequestStatus.SCHEDULED, RequestStatus.IN_PROGRESS)


def _fold_procedure(value: str | None) -> str:
    """Case- and spacing-insensitive form of a procedure description."""
    return " ".join(unicodedata.normalize("NFC", value or "").casefold().split())


def lock_patient_orders(session: Session, patient_id: str, issuer: str) -> None:
    """Serialise order creation per patient on PostgreSQL, so two concurrent
    requests (a new order, an order made from a study) cannot both pass the
    duplicate check (SQLite has one writer)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"order-duplicates|{issuer}|{patient_id}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def find_duplicate_order(
    session: Session,
    *,
    patient_id: str,
    issuer_of_patient_id: str,
    requested_modality: str,
    study_description: str,
    window: timedelta,
    now: datetime,
) -> ImagingRequest | None:
    """The newest open order of this patient for the same modality and procedure
    (case-insensitive) created within ``window`` before ``now``; None if the
    window is zero."""
    if window <= timedelta(0):
        return None
    candidates = session.scalars(
        select(ImagingRequest)
        .where(
            ImagingRequest.patient_id == patient_id,
            ImagingRequest.issuer_of_patient_id == issuer_of_patient_id,
            ImagingRequest.requested_modality == requested_modality,
            ImagingRequest.status.in_([status.value for status in OPEN_STATUSES]),
            ImagingRequest.created_at >= now - window,
        )
        .order_by(ImagingRequest.created_at.desc(), ImagingRequest.id.desc())
    ).all()
    wanted = _fold_procedure(study_description)
    return next((c for c in candidates if _fold_procedure(c.study_description) == wanted), None)


def audit_duplicate_forced(
    session: Session,
    order: ImagingRequest,
    existing: ImagingRequest,
    *,
    reason: str,
    principal: Principal,
    source_address: str | None,
) -> None:
    """An order made despite an open one of the same patient: its own event, so
    an auditor can list every override, wherever it was made."""
    record_audit_event(
        session,
        order_event(
            "order_duplicate_forced",
            user_actor(principal, source_address),
            order.id,
            order_subject(order),
            reason=reason,
            details={"existing_order_id": existing.id, "new_order_id": order.id},
        ),
    )
