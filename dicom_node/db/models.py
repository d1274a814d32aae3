"""SQLAlchemy models: the brief's entities plus the DICOM index and workflow records.

Field names follow the brief (snake_case). What must never break is enforced by
the database: unique UIDs, accession per issuer, usernames, foreign keys, and
(in the migration) triggers that make ``audit_events`` append-only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column, relationship

from dicom_node.db.types import UTCDateTime, utcnow
from dicom_node.domain.api_keys import UserKind
from dicom_node.domain.enums import (
    AuditOutcome,
    Completeness,
    MetadataStatus,
    ModalityStatus,
    MppsStatus,
    Priority,
    QueueType,
    ReportStatus,
    RequestStatus,
    Role,
    StudyStatus,
    WorklistStatus,
)
from dicom_node.domain.names import fold_person_name
from dicom_node.domain.vr import MAX_LENGTH

# Deterministic constraint names so alembic migrations are portable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# DICOM values: each column as wide as its VR's maximum length (domain/vr.py).
UID = String(MAX_LENGTH["UI"])
LO = String(MAX_LENGTH["LO"])
SH = String(MAX_LENGTH["SH"])
CS = String(MAX_LENGTH["CS"])
PN = String(MAX_LENGTH["PN"])
AE = String(MAX_LENGTH["AE"])
ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrement needs INTEGER


# ------------------------------------------------------------------ person names

# Column.info key of a folded copy: the PN column it copies
_FOLDS = "folds"


def folded_name(name: str | None) -> str | None:
    """A PN column's value as its folded copy holds it (domain/names.py).

    Casefolding can lengthen a name ("ß" -> "ss"): the copy is cut to its
    column, the name itself is kept whole."""
    return None if name is None else fold_person_name(name)[: PN.length]


def folded_copy_of(source: str, *, index: bool = False) -> MappedColumn[Any]:
    """The case-folded copy of the PN column ``source`` of the same table, which
    every PN key is matched on (db/query.py). Kept in step here, so no writer
    has to: filled on INSERT from the row's ``source`` (ORM or Core, e.g.
    ingest's INSERT ... ON CONFLICT), and on every ORM assignment to ``source``
    (``_keep_folded_copies``). A Core UPDATE of ``source`` must set it too."""

    def on_insert(context: DefaultExecutionContext) -> str | None:
        # the row's values as this INSERT binds them (SQLAlchemy leaves it untyped)
        values: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
        return folded_name(values.get(source))

    return mapped_column(PN, default=on_insert, index=index, info={_FOLDS: source})


def folded_copy(column: Any) -> Any:
    """The folded copy (``<name>_folded``) of a PN column of a model, e.g.
    ``folded_copy(Patient.patient_name)``; LookupError if it has none."""
    owner, key = getattr(column, "class_", None), getattr(column, "key", None)
    copy = getattr(owner, f"{key}_folded", None) if owner is not None else None
    columns = getattr(getattr(copy, "property", None), "columns", None) or []
    if not columns or columns[0].info.get(_FOLDS) != key:
        raise LookupError(f"{column} has no folded copy: PN columns need one (folded_copy_of)")
    return copy


def _enum_check(column: str, values: type[Any]) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- people


class User(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = (_enum_check("role", Role), _enum_check("kind", UserKind))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(128))
    specialty: Mapped[str | None] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # a lead radiologist may reassign reading work, like an admin
    is_lead: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(
        String(16), default=UserKind.PERSON.value, server_default=UserKind.PERSON.value
    )


class ApiToken(Base):
    """A bearer token of the HTTP API. Only its SHA-256 is stored: a copy of the
    database does not let anyone sign in. Revocable (sign-out) and shared by every
    node on one database, which a signed stateless token would not be."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """A service account's API key (services/access/api_keys.py). Only its
    SHA-256 is stored (the key is 256 random bits: no slow hash needed);
    ``prefix`` is its first characters, enough to recognise it in a list or a
    leak report. ``scopes`` (space-separated, domain/scopes.py) narrow what the
    account's role allows. ``last_used_at`` is written at most once per
    interval, with the audit event of the use, not on every request."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(256))
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # None: made on the node's host (dicom-node service-account key)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_from: Mapped[str | None] = mapped_column(String(64))


class ImagingCenter(Timestamped, Base):
    __tablename__ = "imaging_centers"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    location: Mapped[str | None] = mapped_column(String(256))
    contact_number: Mapped[str | None] = mapped_column(String(64))

    modalities: Mapped[list[Modality]] = relationship(back_populates="imaging_center")


class Modality(Timestamped, Base):
    """A device (or its DICOM AE) at a center; ``type`` is the DICOM Modality code."""

    __tablename__ = "modalities"
    __table_args__ = (_enum_check("status", ModalityStatus),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    imaging_center_id: Mapped[int] = mapped_column(ForeignKey("imaging_centers.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(CS)
    dicom_ae_title: Mapped[str] = mapped_column(AE, unique=True)
    station_name: Mapped[str | None] = mapped_column(SH)
    status: Mapped[str] = mapped_column(String(16), default=ModalityStatus.ACTIVE.value)

    imaging_center: Mapped[ImagingCenter] = relationship(back_populates="modalities")


# --------------------------------------------------------------------------- orders


class ImagingRequest(Timestamped, Base):
    """The order. Accession and StudyInstanceUID are assigned once, at scheduling."""

    __tablename__ = "imaging_requests"
    __table_args__ = (
        UniqueConstraint("accession_number", "accession_issuer"),
        _enum_check("status", RequestStatus),
        _enum_check("priority", Priority),
        Index("ix_imaging_requests_patient", "patient_id", "issuer_of_patient_id"),
        Index("ix_imaging_requests_status_scheduled_at", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    patient_id: Mapped[str] = mapped_column(LO)
    issuer_of_patient_id: Mapped[str] = mapped_column(LO, default="")
    patient_name: Mapped[str] = mapped_column(PN)
    patient_name_folded: Mapped[str] = folded_copy_of("patient_name", index=True)
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(CS)
    accession_number: Mapped[str | None] = mapped_column(SH)
    accession_issuer: Mapped[str] = mapped_column(LO, default="")
    study_instance_uid: Mapped[str | None] = mapped_column(UID, unique=True)
    requested_procedure_id: Mapped[str | None] = mapped_column(SH)
    scheduled_procedure_step_id: Mapped[str | None] = mapped_column(SH)
    study_description: Mapped[str | None] = mapped_column(LO)
    requested_modality: Mapped[str | None] = mapped_column(CS)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.ROUTINE.value)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.REQUESTED.value)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    # the referring physician as a user of the node (services/access/visibility.py):
    # set by the scheduler from the user list, or matched from the DICOM name
    referring_physician_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    referring_physician_name: Mapped[str | None] = mapped_column(PN)
    referring_physician_name_folded: Mapped[str | None] = folded_copy_of("referring_physician_name")
    # RequestingPhysician (0032,1032) and the step's ScheduledPerformingPhysicianName
    # (0040,0006), answered and matched by the Modality Worklist
    requesting_physician: Mapped[str | None] = mapped_column(PN)
    requesting_physician_folded: Mapped[str | None] = folded_copy_of("requesting_physician")
    scheduled_performing_physician_name: Mapped[str | None] = mapped_column(PN)
    scheduled_performing_physician_name_folded: Mapped[str | None] = folded_copy_of(
        "scheduled_performing_physician_name"
    )
    imaging_center_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_centers.id"))
    scheduled_modality_id: Mapped[int | None] = mapped_column(ForeignKey("modalities.id"))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clinical_indication: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # Turnaround timestamps (docs/domain.md#turnaround-timestamps): when each step actually
    # happened.
    scheduled_on: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exam_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exam_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    studies: Mapped[list[DicomStudy]] = relationship(back_populates="imaging_request")


# --------------------------------------------------------------------------- DICOM index


class Patient(Timestamped, Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    patient_id: Mapped[str] = mapped_column(LO)
    issuer_of_patient_id: Mapped[str] = mapped_column(LO, default="")
    patient_name: Mapped[str | None] = mapped_column(PN)
    # casefolded copy: PN matching is case-insensitive and SQL upper() is ASCII-only
    patient_name_folded: Mapped[str | None] = folded_copy_of("patient_name", index=True)
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(CS)

    studies: Mapped[list[DicomStudy]] = relationship(back_populates="patient")


class DicomStudy(Timestamped, Base):
    __tablename__ = "dicom_studies"
    __table_args__ = (
        _enum_check("metadata_status", MetadataStatus),
        _enum_check("status", StudyStatus),
        _enum_check("completeness", Completeness),
        Index("ix_dicom_studies_study_date", "study_date"),
        Index("ix_dicom_studies_accession", "accession_number"),
        Index("ix_dicom_studies_completeness", "completeness", "last_received_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    imaging_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_requests.id"), index=True
    )
    accession_number: Mapped[str | None] = mapped_column(SH)
    accession_issuer: Mapped[str] = mapped_column(LO, default="")
    study_id: Mapped[str | None] = mapped_column(SH)
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    # StudyTime as HHMMSS.FFFFFF, comparable as text: what TM range matching uses
    study_time_norm: Mapped[str | None] = mapped_column(String(13))
    study_description: Mapped[str | None] = mapped_column(LO)
    referring_physician_name: Mapped[str | None] = mapped_column(PN)
    referring_physician_name_folded: Mapped[str | None] = folded_copy_of("referring_physician_name")
    # multi-valued PN (VM 1-n): the values as sent, backslash-separated
    name_of_physicians_reading_study: Mapped[str | None] = mapped_column(PN)
    name_of_physicians_reading_study_folded: Mapped[str | None] = folded_copy_of(
        "name_of_physicians_reading_study"
    )
    body_part_examined: Mapped[str | None] = mapped_column(CS)
    modality_type: Mapped[str | None] = mapped_column(CS)
    modalities_in_study: Mapped[str | None] = mapped_column(String(128))
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    performed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pacs_location: Mapped[str | None] = mapped_column(String(256))
    metadata_status: Mapped[str] = mapped_column(String(16), default=MetadataStatus.PENDING.value)
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.QUEUED.value)
    completeness: Mapped[str] = mapped_column(String(16), default=Completeness.RECEIVING.value)
    completeness_evidence: Mapped[str | None] = mapped_column(String(32))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_to_reading: Mapped[bool] = mapped_column(Boolean, default=False)
    # the reading priority of a study released before any order claims it
    release_priority: Mapped[str | None] = mapped_column(String(16))

    patient: Mapped[Patient] = relationship(back_populates="studies")
    imaging_request: Mapped[ImagingRequest | None] = relationship(back_populates="studies")
    series: Mapped[list[DicomSeries]] = relationship(back_populates="study")


class DicomSeries(Timestamped, Base):
    __tablename__ = "dicom_series"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(CS, index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(LO)
    body_part_examined: Mapped[str | None] = mapped_column(CS)
    station_name: Mapped[str | None] = mapped_column(SH)
    # multi-valued PN (VM 1-n): the values as sent, backslash-separated
    performing_physician_name: Mapped[str | None] = mapped_column(PN)
    performing_physician_name_folded: Mapped[str | None] = folded_copy_of(
        "performing_physician_name"
    )
    series_date: Mapped[str | None] = mapped_column(String(8))
    series_time: Mapped[str | None] = mapped_column(String(16))
    series_time_norm: Mapped[str | None] = mapped_column(String(13))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[DicomStudy] = relationship(back_populates="series")
    instances: Mapped[list[DicomInstance]] = relationship(back_populates="series")


class DicomInstance(Base):
    __tablename__ = "dicom_instances"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("dicom_series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    # relative to the store root, built only from validated UIDs
    file_path: Mapped[str] = mapped_column(String(512))
    file_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae_title: Mapped[str | None] = mapped_column(AE)
    source_address: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    request_attributes: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    # The PatientID the instance carried; differs from the study's patient when the
    # instance arrived under a known StudyInstanceUID for another patient.
    received_patient_id: Mapped[str | None] = mapped_column(LO)
    # held in the study but flagged: never merged into another patient's study
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)

    series: Mapped[DicomSeries] = relationship(back_populates="instances")


class HeldSyntax(Base):
    """A (SOP class, transfer syntax) pair the store has held: written with the
    first instance of the pair (db/held_syntaxes.py), never removed, read by
    the C-GET acceptor (scp/get_negotiation.py). The primary key is the index
    of its one query (by SOP class)."""

    __tablename__ = "held_syntaxes"

    sop_class_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID, primary_key=True)


# --------------------------------------------------------------------------- MPPS


class PerformedProcedureStep(Timestamped, Base):
    __tablename__ = "performed_procedure_steps"
    __table_args__ = (_enum_check("status", MppsStatus),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    imaging_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_requests.id"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    accession_number: Mapped[str | None] = mapped_column(SH)
    performed_station_ae_title: Mapped[str | None] = mapped_column(AE)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    discontinuation_reason: Mapped[str | None] = mapped_column(Text)
    # SeriesInstanceUID -> list of SOPInstanceUIDs the modality says it made
    performed_series: Mapped[dict[str, list[str]] | None] = mapped_column(JSON)
    calling_ae_title: Mapped[str | None] = mapped_column(AE)


# --------------------------------------------------------------------------- reading


class WorklistItem(Timestamped, Base):
    __tablename__ = "worklist_items"
    __table_args__ = (
        _enum_check("queue_type", QueueType),
        _enum_check("status", WorklistStatus),
        _enum_check("priority", Priority),
        Index("ix_worklist_items_queue", "queue_type", "status", "priority_rank", "due_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    imaging_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_requests.id"), index=True
    )
    dicom_study_id: Mapped[int | None] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    # an unscheduled exam to reconcile: the MPPS that reported it
    performed_procedure_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("performed_procedure_steps.id")
    )
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    queue_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=WorklistStatus.PENDING.value)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.ROUTINE.value)
    # 0 = stat, 1 = urgent, 2 = routine: sorts the reading queue in one index
    priority_rank: Mapped[int] = mapped_column(Integer, default=2)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    overdue: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notes: Mapped[str | None] = mapped_column(Text)
    # compare-and-set version: a claim succeeds only against the version it read
    version: Mapped[int] = mapped_column(Integer, default=1)


class Report(Timestamped, Base):
    """The current state of a report; every submitted text lives in ReportVersion."""

    __tablename__ = "reports"
    __table_args__ = (_enum_check("status", ReportStatus),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    dicom_study_id: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    radiologist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.DRAFT.value)
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    critical_flag: Mapped[bool] = mapped_column(Boolean, default=False)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    preliminary_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_addendum_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    versions: Mapped[list[ReportVersion]] = relationship(
        back_populates="report", order_by="ReportVersion.version"
    )


class ReportVersion(Base):
    """An immutable snapshot: preliminary, final, addendum or correction."""

    __tablename__ = "report_versions"
    __table_args__ = (UniqueConstraint("report_id", "version"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # preliminary | final | addendum | correction
    status: Mapped[str] = mapped_column(String(16))
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    report: Mapped[Report] = relationship(back_populates="versions")


class CriticalResultCommunication(Base):
    """Who told whom about a critical finding, how, when, and whether it was acknowledged."""

    __tablename__ = "critical_communications"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    finding: Mapped[str] = mapped_column(Text)
    identified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    communicated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    communicated_to: Mapped[str | None] = mapped_column(String(256))
    method: Mapped[str | None] = mapped_column(String(32))
    communicated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# --------------------------------------------------------------------------- change feed


class ChangeLogEntry(Base):
    """One change to an order, study, worklist item or report, in commit order.

    Written in the transaction of the change itself (services/query/changes.py), so
    the feed and the data never disagree. ``seq`` is the feed position a client
    resumes from; the payload carries ids and states, not patient data.
    """

    __tablename__ = "change_log"

    seq: Mapped[int] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))  # created | updated | deleted
    # the order behind the change, if any (a report's: only once final): a
    # referring physician sees the entry while the visibility rule lets them see
    # that order (services/access/visibility.py), decided when the feed is read
    order_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# --------------------------------------------------------------------------- audit


class AuditEvent(Base):
    """Append-only (no update or delete path; database triggers refuse both, and
    on PostgreSQL the node's role may only INSERT and SELECT), and hash-chained:
    ``row_hash`` covers the row and ``prev_hash``, the ``row_hash`` of the row
    before it (domain/audit_chain.py). ``prev_hash`` is unique: the chain
    cannot fork. Written by services/audit/record.py only."""

    __tablename__ = "audit_events"
    __table_args__ = (
        _enum_check("outcome", AuditOutcome),
        Index("ix_audit_events_timestamp", "timestamp"),
        Index("ix_audit_events_target", "target_class", "target_id"),
        Index("ix_audit_events_patient", "patient_id"),
        UniqueConstraint("prev_hash"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    event_code: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str | None] = mapped_column(String(32))
    source_address: Mapped[str | None] = mapped_column(String(64))
    target_class: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    patient_id: Mapped[str | None] = mapped_column(LO)
    study_instance_uid: Mapped[str | None] = mapped_column(UID)
    accession_number: Mapped[str | None] = mapped_column(SH)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


# --------------------------------------------------------------------------- sign-in


class SignInSource(Base):
    """Sign-in failures of one account from one source address (services/access/auth.py).

    The lock-out is per (account, address), so failures sent from elsewhere do
    not lock the account's owner out at their workstation; ``last_success_at``
    marks an address the account signed in from, which the account-wide lock
    (``users.locked_until``, at a higher threshold) does not apply to.
    """

    __tablename__ = "sign_in_sources"
    __table_args__ = (
        UniqueConstraint(
            "user_id", "source_address", name="uq_sign_in_sources_user_id_source_address"
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    source_address: Mapped[str] = mapped_column(String(64))
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# --------------------------------------------------------------------------- folded copies


def _keep_folded_copies() -> None:
    """Every ORM assignment to a PN column that has a folded copy refolds the
    copy (corrections, order edits, reconciliation: no writer does it itself)."""
    for mapper in Base.registry.mappers:
        for column in mapper.columns:
            source = column.info.get(_FOLDS)
            if source is not None:
                event.listen(getattr(mapper.class_, source), "set", _refolding(column.key))


def _refolding(copy: str) -> Callable[[Any, str | None, Any, Any], None]:
    def refold(target: Any, value: str | None, _old: Any, _initiator: Any) -> None:
        setattr(target, copy, folded_name(value))

    return refold


_keep_folded_copies()
