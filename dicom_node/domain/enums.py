"""The closed vocabularies of the domain (names from the brief and
docs/domain.md#entities-and-identifiers)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SCHEDULER = "scheduler"
    TECHNOLOGIST = "technologist"
    RADIOLOGIST = "radiologist"
    REFERRING_PHYSICIAN = "referring_physician"
    AUDITOR = "auditor"


class Priority(StrEnum):
    STAT = "stat"
    URGENT = "urgent"
    ROUTINE = "routine"


class RequestStatus(StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    PERFORMED = "performed"
    DISCONTINUED = "discontinued"
    CANCELLED = "cancelled"


class StudyStatus(StrEnum):
    QUEUED = "queued"
    ACQUIRED = "acquired"
    READING = "reading"
    REPORTED = "reported"


class MetadataStatus(StrEnum):
    PENDING = "pending"
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    CONFLICT = "conflict"
    CORRECTED = "corrected"
    REJECTED = "rejected"


class Completeness(StrEnum):
    """Whether a study's acquisition is over, and what proved it (ingest issue)."""

    RECEIVING = "receiving"
    QUIET = "quiet"
    COMPLETE = "complete"


class CompletenessEvidence(StrEnum):
    MPPS = "mpps"
    STORAGE_COMMITMENT = "storage_commitment"
    STABILITY_TIMER = "stability_timer"
    MANUAL = "manual"


class ModalityStatus(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class QueueType(StrEnum):
    ACQUISITION = "acquisition"
    READING = "reading"
    REVIEW = "review"
    CRITICAL_COMM = "critical_comm"
    RECONCILIATION = "reconciliation"


class WorklistStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# a work item still to be done (waiting, or held by someone)
OPEN_WORKLIST_STATUSES = (WorklistStatus.PENDING.value, WorklistStatus.CLAIMED.value)


class ReportStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    FINAL = "final"
    REVISED = "revised"


class MppsStatus(StrEnum):
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


class AuditOutcome(StrEnum):
    """PS3.15 A.5.3 EventOutcomeIndicator, by name."""

    SUCCESS = "success"
    MINOR_FAILURE = "minor_failure"
    SERIOUS_FAILURE = "serious_failure"
    MAJOR_FAILURE = "major_failure"
