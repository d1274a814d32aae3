"""Initial schema: the brief's entities, the DICOM index, append-only audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 06:28:42.688127
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imaging_centers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("location", sa.String(length=256), nullable=True),
        sa.Column("contact_number", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_centers")),
        sa.UniqueConstraint("code", name=op.f("uq_imaging_centers_code")),
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=True),
        sa.Column("patient_name_folded", sa.String(length=324), nullable=True),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint(
            "patient_id",
            "issuer_of_patient_id",
            name=op.f("uq_patients_patient_id_issuer_of_patient_id"),
        ),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patients_patient_name_folded"), ["patient_name_folded"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=True),
        sa.Column("specialty", sa.String(length=128), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("failed_sign_ins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'scheduler', 'technologist', 'radiologist', 'referring_physician', 'auditor')",
            name=op.f("ck_users_role_allowed"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_code", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column(
            "actor_user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.Column("target_class", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=128), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('success', 'minor_failure', 'serious_failure', 'major_failure')",
            name=op.f("ck_audit_events_outcome_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_user_id"], ["users.id"], name=op.f("fk_audit_events_actor_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_actor_user_id"), ["actor_user_id"], unique=False
        )
        batch_op.create_index("ix_audit_events_patient", ["patient_id"], unique=False)
        batch_op.create_index("ix_audit_events_target", ["target_class", "target_id"], unique=False)
        batch_op.create_index("ix_audit_events_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "modalities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "imaging_center_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("dicom_ae_title", sa.String(length=16), nullable=False),
        sa.Column("station_name", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'maintenance', 'retired')",
            name=op.f("ck_modalities_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["imaging_center_id"],
            ["imaging_centers.id"],
            name=op.f("fk_modalities_imaging_center_id_imaging_centers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_modalities")),
        sa.UniqueConstraint("dicom_ae_title", name=op.f("uq_modalities_dicom_ae_title")),
    )
    with op.batch_alter_table("modalities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_modalities_imaging_center_id"), ["imaging_center_id"], unique=False
        )

    op.create_table(
        "imaging_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_name_folded", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("accession_issuer", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("requested_procedure_id", sa.String(length=16), nullable=True),
        sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("requested_modality", sa.String(length=16), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "requested_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=True),
        sa.Column(
            "imaging_center_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "scheduled_modality_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clinical_indication", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("scheduled_on", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exam_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exam_completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "priority IN ('stat', 'urgent', 'routine')",
            name=op.f("ck_imaging_requests_priority_allowed"),
        ),
        sa.CheckConstraint(
            "status IN ('requested', 'scheduled', 'in_progress', 'performed', 'discontinued', 'cancelled')",
            name=op.f("ck_imaging_requests_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["imaging_center_id"],
            ["imaging_centers.id"],
            name=op.f("fk_imaging_requests_imaging_center_id_imaging_centers"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_imaging_requests_requested_by_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_modality_id"],
            ["modalities.id"],
            name=op.f("fk_imaging_requests_scheduled_modality_id_modalities"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_requests")),
        sa.UniqueConstraint(
            "accession_number",
            "accession_issuer",
            name=op.f("uq_imaging_requests_accession_number_accession_issuer"),
        ),
        sa.UniqueConstraint(
            "study_instance_uid", name=op.f("uq_imaging_requests_study_instance_uid")
        ),
    )
    with op.batch_alter_table("imaging_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_imaging_requests_patient", ["patient_id", "issuer_of_patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_requests_patient_name_folded"),
            ["patient_name_folded"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_requests_requested_by_id"), ["requested_by_id"], unique=False
        )
        batch_op.create_index(
            "ix_imaging_requests_status_scheduled_at", ["status", "scheduled_at"], unique=False
        )

    op.create_table(
        "dicom_studies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "patient_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "imaging_request_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("accession_issuer", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=16), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=True),
        sa.Column("body_part_examined", sa.String(length=16), nullable=True),
        sa.Column("modality_type", sa.String(length=16), nullable=True),
        sa.Column("modalities_in_study", sa.String(length=128), nullable=True),
        sa.Column("series_count", sa.Integer(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("performed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pacs_location", sa.String(length=256), nullable=True),
        sa.Column("metadata_status", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("completeness", sa.String(length=16), nullable=False),
        sa.Column("completeness_evidence", sa.String(length=32), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_to_reading", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "completeness IN ('receiving', 'quiet', 'complete')",
            name=op.f("ck_dicom_studies_completeness_allowed"),
        ),
        sa.CheckConstraint(
            "metadata_status IN ('pending', 'matched', 'unmatched', 'conflict', 'corrected', 'rejected')",
            name=op.f("ck_dicom_studies_metadata_status_allowed"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'acquired', 'reading', 'reported')",
            name=op.f("ck_dicom_studies_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["imaging_request_id"],
            ["imaging_requests.id"],
            name=op.f("fk_dicom_studies_imaging_request_id_imaging_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name=op.f("fk_dicom_studies_patient_pk_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_studies")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_dicom_studies_study_instance_uid")),
    )
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_studies_accession", ["accession_number"], unique=False)
        batch_op.create_index(
            "ix_dicom_studies_completeness", ["completeness", "last_received_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dicom_studies_imaging_request_id"), ["imaging_request_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dicom_studies_patient_pk"), ["patient_pk"], unique=False
        )
        batch_op.create_index("ix_dicom_studies_study_date", ["study_date"], unique=False)

    op.create_table(
        "performed_procedure_steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "imaging_request_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("performed_station_ae_title", sa.String(length=16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discontinuation_reason", sa.Text(), nullable=True),
        sa.Column("performed_series", sa.JSON(), nullable=True),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED')",
            name=op.f("ck_performed_procedure_steps_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["imaging_request_id"],
            ["imaging_requests.id"],
            name=op.f("fk_performed_procedure_steps_imaging_request_id_imaging_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performed_procedure_steps")),
        sa.UniqueConstraint(
            "sop_instance_uid", name=op.f("uq_performed_procedure_steps_sop_instance_uid")
        ),
    )
    with op.batch_alter_table("performed_procedure_steps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_performed_procedure_steps_imaging_request_id"),
            ["imaging_request_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_performed_procedure_steps_study_instance_uid"),
            ["study_instance_uid"],
            unique=False,
        )

    op.create_table(
        "dicom_series",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=True),
        sa.Column("body_part_examined", sa.String(length=16), nullable=True),
        sa.Column("station_name", sa.String(length=16), nullable=True),
        sa.Column("series_date", sa.String(length=8), nullable=True),
        sa.Column("series_time", sa.String(length=16), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["dicom_studies.id"], name=op.f("fk_dicom_series_study_pk_dicom_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_series")),
        sa.UniqueConstraint(
            "series_instance_uid", name=op.f("uq_dicom_series_series_instance_uid")
        ),
    )
    with op.batch_alter_table("dicom_series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dicom_series_modality"), ["modality"], unique=False)
        batch_op.create_index(batch_op.f("ix_dicom_series_study_pk"), ["study_pk"], unique=False)

    op.create_table(
        "reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "dicom_study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "radiologist_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "reviewer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("impression", sa.Text(), nullable=False),
        sa.Column("critical_flag", sa.Boolean(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("preliminary_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_addendum_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'in_review', 'final', 'revised')",
            name=op.f("ck_reports_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["dicom_study_id"],
            ["dicom_studies.id"],
            name=op.f("fk_reports_dicom_study_id_dicom_studies"),
        ),
        sa.ForeignKeyConstraint(
            ["radiologist_id"], ["users.id"], name=op.f("fk_reports_radiologist_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["users.id"], name=op.f("fk_reports_reviewer_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reports_dicom_study_id"), ["dicom_study_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_reports_radiologist_id"), ["radiologist_id"], unique=False
        )

    op.create_table(
        "worklist_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "imaging_request_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column(
            "dicom_study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "assigned_to_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("queue_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue", sa.Boolean(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "priority IN ('stat', 'urgent', 'routine')",
            name=op.f("ck_worklist_items_priority_allowed"),
        ),
        sa.CheckConstraint(
            "queue_type IN ('acquisition', 'reading', 'review', 'critical_comm', 'reconciliation')",
            name=op.f("ck_worklist_items_queue_type_allowed"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'claimed', 'completed', 'cancelled')",
            name=op.f("ck_worklist_items_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["assigned_to_id"], ["users.id"], name=op.f("fk_worklist_items_assigned_to_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["dicom_study_id"],
            ["dicom_studies.id"],
            name=op.f("fk_worklist_items_dicom_study_id_dicom_studies"),
        ),
        sa.ForeignKeyConstraint(
            ["imaging_request_id"],
            ["imaging_requests.id"],
            name=op.f("fk_worklist_items_imaging_request_id_imaging_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worklist_items")),
    )
    with op.batch_alter_table("worklist_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worklist_items_assigned_to_id"), ["assigned_to_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_worklist_items_dicom_study_id"), ["dicom_study_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_worklist_items_imaging_request_id"), ["imaging_request_id"], unique=False
        )
        batch_op.create_index(
            "ix_worklist_items_queue",
            ["queue_type", "status", "priority_rank", "due_at"],
            unique=False,
        )

    op.create_table(
        "critical_communications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "report_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("finding", sa.Text(), nullable=False),
        sa.Column("identified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "communicated_by_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("communicated_to", sa.String(length=256), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=True),
        sa.Column("communicated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["communicated_by_id"],
            ["users.id"],
            name=op.f("fk_critical_communications_communicated_by_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_critical_communications_report_id_reports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_critical_communications")),
    )
    with op.batch_alter_table("critical_communications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_critical_communications_report_id"), ["report_id"], unique=False
        )

    op.create_table(
        "dicom_instances",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "series_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("file_path", sa.String(length=512), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_attributes", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["dicom_series.id"],
            name=op.f("fk_dicom_instances_series_pk_dicom_series"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_dicom_instances_sop_instance_uid")),
    )
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dicom_instances_series_pk"), ["series_pk"], unique=False
        )

    op.create_table(
        "report_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "report_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("impression", sa.Text(), nullable=False),
        sa.Column(
            "author_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "signed_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_report_versions_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_report_versions_report_id_reports")
        ),
        sa.ForeignKeyConstraint(
            ["signed_by_id"], ["users.id"], name=op.f("fk_report_versions_signed_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_versions")),
        sa.UniqueConstraint(
            "report_id", "version", name=op.f("uq_report_versions_report_id_version")
        ),
    )

    _make_audit_append_only()


def downgrade() -> None:
    _drop_audit_triggers()
    op.drop_table("report_versions")
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dicom_instances_series_pk"))

    op.drop_table("dicom_instances")
    with op.batch_alter_table("critical_communications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_critical_communications_report_id"))

    op.drop_table("critical_communications")
    with op.batch_alter_table("worklist_items", schema=None) as batch_op:
        batch_op.drop_index("ix_worklist_items_queue")
        batch_op.drop_index(batch_op.f("ix_worklist_items_imaging_request_id"))
        batch_op.drop_index(batch_op.f("ix_worklist_items_dicom_study_id"))
        batch_op.drop_index(batch_op.f("ix_worklist_items_assigned_to_id"))

    op.drop_table("worklist_items")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reports_radiologist_id"))
        batch_op.drop_index(batch_op.f("ix_reports_dicom_study_id"))

    op.drop_table("reports")
    with op.batch_alter_table("dicom_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dicom_series_study_pk"))
        batch_op.drop_index(batch_op.f("ix_dicom_series_modality"))

    op.drop_table("dicom_series")
    with op.batch_alter_table("performed_procedure_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_performed_procedure_steps_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_performed_procedure_steps_imaging_request_id"))

    op.drop_table("performed_procedure_steps")
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.drop_index("ix_dicom_studies_study_date")
        batch_op.drop_index(batch_op.f("ix_dicom_studies_patient_pk"))
        batch_op.drop_index(batch_op.f("ix_dicom_studies_imaging_request_id"))
        batch_op.drop_index("ix_dicom_studies_completeness")
        batch_op.drop_index("ix_dicom_studies_accession")

    op.drop_table("dicom_studies")
    with op.batch_alter_table("imaging_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_imaging_requests_status_scheduled_at")
        batch_op.drop_index(batch_op.f("ix_imaging_requests_requested_by_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_requests_patient_name_folded"))
        batch_op.drop_index("ix_imaging_requests_patient")

    op.drop_table("imaging_requests")
    with op.batch_alter_table("modalities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_modalities_imaging_center_id"))

    op.drop_table("modalities")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_timestamp")
        batch_op.drop_index("ix_audit_events_target")
        batch_op.drop_index("ix_audit_events_patient")
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_user_id"))

    op.drop_table("audit_events")
    op.drop_table("users")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_patient_name_folded"))

    op.drop_table("patients")
    op.drop_table("imaging_centers")


# AuditEvent is append-only down to the database: no UPDATE, DELETE (or TRUNCATE
# on PostgreSQL) succeeds, whatever the application code does.
_APPEND_ONLY_MESSAGE = "audit_events is append-only"


def _make_audit_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
        "END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def _drop_audit_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
