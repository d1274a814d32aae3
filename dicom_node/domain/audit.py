"""Audit events (PS3.15 A.5): what the node records, independent of storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dicom_node.domain.enums import AuditOutcome


class AuditEventCode(StrEnum):
    """PS3.15 A.5.3 / CID 400 event IDs used by the node."""

    APPLICATION_ACTIVITY = "110100"
    AUDIT_LOG_USED = "110101"
    INSTANCES_ACCESSED = "110103"
    INSTANCES_TRANSFERRED = "110104"
    # DICOM Study Deleted: retention removed a study's instances
    STUDY_DELETED = "110105"
    EXPORT = "110106"
    ORDER_RECORD = "110109"
    PATIENT_RECORD = "110110"
    PROCEDURE_RECORD = "110111"
    QUERY = "110112"
    SECURITY_ALERT = "110113"
    USER_AUTHENTICATION = "110114"


class SecurityAlertType(StrEnum):
    """PS3.15 A.5.3.11 / CID 401 event type codes of a Security Alert (110113), kept
    in the event's ``details["event_type"]``."""

    # an association or request refused: the calling AE is not one the node knows
    NODE_AUTHENTICATION = "110126"
    # a known AE asked for what only another may do (an MPPS step it did not create)
    USE_OF_RESTRICTED_FUNCTION = "110132"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit event as the services describe it; the db layer persists it."""

    event_code: AuditEventCode
    action: str
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    actor: str | None = None
    actor_user_id: int | None = None
    actor_role: str | None = None
    source_address: str | None = None
    target_class: str | None = None
    target_id: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
