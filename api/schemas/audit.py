"""Audit events as the API shows them (read-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventPublic(BaseModel):
    id: int
    timestamp: datetime
    event_code: str
    action: str
    outcome: str
    actor: str | None
    actor_user_id: int | None
    actor_role: str | None
    source_address: str | None
    target_class: str | None
    target_id: str | None
    patient_id: str | None
    study_instance_uid: str | None
    accession_number: str | None
    reason: str | None
    details: dict[str, Any]
