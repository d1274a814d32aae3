"""A study's metadata by hand: corrections and rejection (withdrawal).

Corrections change the index, never the stored files: an instance file stays
byte-identical to what the modality sent, and the audit trail keeps the old and
new values (docs/domain.md#study-metadata-states: matched -> corrected, old values kept in the
audit diff). A rejection withdraws the study from C-FIND, retrieve and search,
never deletes it, and cancels its open work items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    PN,
    DicomSeries,
    DicomStudy,
    Patient,
)
from dicom_node.db.types import utcnow
from dicom_node.db.upsert import insert_ignoring_conflict
from dicom_node.domain.audit import Subject, instances_accessed_event
from dicom_node.domain.enums import (
    MetadataStatus,
    QueueType,
    WorklistStatus,
)
from dicom_node.domain.errors import Conflict, InvalidValue, NotFound
from dicom_node.domain.names import fold_person_name
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import STUDY_METADATA
from dicom_node.domain.vr import (
    MAX_LENGTH,
    PATIENT_SEXES,
    check_text,
    is_calendar_date,
    is_code_string,
)
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.query.studies import StudySummary, study_summary
from dicom_node.services.workflow.work_items import close_items

# --------------------------------------------------------------------------- corrections

PATIENT_FIELDS = ("patient_name", "patient_birth_date", "patient_sex")
IDENTITY_FIELDS = ("patient_id", "issuer_of_patient_id")
STUDY_FIELDS = (
    "accession_number",
    "study_description",
    "body_part_examined",
    "referring_physician_name",
)
CORRECTABLE = IDENTITY_FIELDS + PATIENT_FIELDS + STUDY_FIELDS

# the VR of each correctable text field, which bounds its length (domain/vr.py)
_VR = {
    "patient_id": "LO",
    "issuer_of_patient_id": "LO",
    "patient_name": "PN",
    "accession_number": "SH",
    "study_description": "LO",
    "body_part_examined": "CS",
    "referring_physician_name": "PN",
}


def _clean(field: str, value: str | None) -> str | None:
    """The corrected value as the index stores it (None clears it); or InvalidValue."""
    text = (value or "").strip()
    check_text(field, text)
    if not text:
        if field == "patient_id":
            raise InvalidValue("patient_id cannot be empty", field=field)
        return "" if field == "issuer_of_patient_id" else None
    if "\\" in text:
        raise InvalidValue(f"{field}: one value only (no backslash)", field=field)
    limit = MAX_LENGTH[_VR[field]] if field in _VR else None
    if limit is not None and len(text) > limit:
        raise InvalidValue(f"{field}: at most {limit} characters", field=field)
    if field == "patient_birth_date" and not is_calendar_date(text):
        raise InvalidValue("patient_birth_date: a DA value, YYYYMMDD", field=field)
    if field == "patient_sex" and text not in PATIENT_SEXES:
        raise InvalidValue("patient_sex: M, F or O", field=field)
    if field == "body_part_examined" and not is_code_string(text):
        raise InvalidValue("body_part_examined: a CS value (A-Z, 0-9, space, _)", field=field)
    return text


def correct_study(
    session: Session,
    *,
    principal: Principal,
    study_id: int,
    changes: Mapping[str, str | None],
    reason: str,
    source_address: str | None,
) -> StudySummary:
    """Correct the indexed metadata of a study; audited with before and after.

    - Patient name, birth date and sex belong to the patient: they are corrected
      on the patient record the study belongs to (all of that patient's studies
      show the corrected values).
    - A new PatientID (or issuer) moves the study to that patient: the record is
      renamed when the study is its only one, else the study moves to the
      existing record of that ID or a new one copied from the old. Moving onto an
      existing patient whose name, birth date or sex disagree with values given
      in the same correction is refused (409): two patients are never merged
      silently.
    - metadata_status matched -> corrected; pending, unmatched and conflict keep
      their status (reconciliation decides those); a rejected study is 409.
    - Stored files are not rewritten. A correction that changes nothing is
      answered with the study as it is and writes no audit event.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidValue("a correction needs a reason", field="reason")
    check_text("reason", reason, allow_newlines=True)
    unknown = sorted(set(changes) - set(CORRECTABLE))
    if unknown:
        raise InvalidValue(f"{unknown[0]} cannot be corrected", field=unknown[0])
    wanted = {field: _clean(field, value) for field, value in changes.items()}

    study = session.scalar(select(DicomStudy).where(DicomStudy.id == study_id).with_for_update())
    if study is None:
        raise NotFound(f"no study {study_id}")
    if study.metadata_status == MetadataStatus.REJECTED.value:
        raise Conflict("a rejected study cannot be corrected", current=study.metadata_status)
    patient = session.scalar(
        select(Patient).where(Patient.id == study.patient_pk).with_for_update()
    )
    assert patient is not None  # foreign key
    before = _effective(study, patient)
    changed = {field: value for field, value in wanted.items() if before[field] != value}
    if not changed:
        return study_summary(study, patient)

    moved: dict[str, Any] = {}
    if any(field in changed for field in IDENTITY_FIELDS):
        patient, moved = _move_to_patient(session, study, patient, wanted)
    for field in PATIENT_FIELDS:
        if field in changed:
            setattr(patient, field, changed[field])
            if field == "patient_name":
                name = changed[field]
                patient.patient_name_folded = fold_person_name(name)[: PN.length] if name else None
    for field in STUDY_FIELDS:
        if field in changed:
            setattr(study, field, changed[field])
    if "body_part_examined" in changed:
        # C-FIND matches BodyPartExamined at series level: keep the two in step
        session.execute(
            update(DicomSeries)
            .where(DicomSeries.study_pk == study.id)
            .values(body_part_examined=changed["body_part_examined"])
        )
    status_before = study.metadata_status
    # matched -> corrected; a pending, unmatched or conflict study keeps its
    # status (docs/domain.md#study-metadata-states)
    if STUDY_METADATA.allows("correct", status_before):
        study.metadata_status = STUDY_METADATA.target("correct").value
    # also a patient-only correction puts the study in the change feed
    study.updated_at = utcnow()
    session.flush()

    after = _effective(study, patient)
    diff_before = {field: before[field] for field in CORRECTABLE if before[field] != after[field]}
    diff_after = {field: after[field] for field in diff_before}
    if study.metadata_status != status_before:
        diff_before["metadata_status"] = status_before
        diff_after["metadata_status"] = study.metadata_status
    others = session.scalar(
        select(func.count(DicomStudy.id)).where(
            DicomStudy.patient_pk == patient.id, DicomStudy.id != study.id
        )
    )
    details: dict[str, Any] = {
        "before": diff_before,
        "after": diff_after,
        "other_studies_of_patient": int(others or 0),
        "files_rewritten": False,
    }
    if moved:
        details["patient_move"] = moved
    record_audit_event(
        session,
        instances_accessed_event(
            "study_corrected",
            user_actor(principal, source_address),
            study.id,
            Subject(patient.patient_id, study.study_instance_uid, study.accession_number),
            reason=reason,
            details=details,
        ),
    )
    return study_summary(study, patient)


def _effective(study: DicomStudy, patient: Patient) -> dict[str, str | None]:
    """The correctable values as the study shows them now."""
    values: dict[str, str | None] = {field: getattr(patient, field) for field in IDENTITY_FIELDS}
    values |= {field: getattr(patient, field) for field in PATIENT_FIELDS}
    values |= {field: getattr(study, field) for field in STUDY_FIELDS}
    return values


def _move_to_patient(
    session: Session, study: DicomStudy, old: Patient, wanted: Mapping[str, str | None]
) -> tuple[Patient, dict[str, Any]]:
    """The patient record the study belongs to under its corrected identity."""
    new_id = wanted.get("patient_id") or old.patient_id
    new_issuer = wanted.get("issuer_of_patient_id", old.issuer_of_patient_id) or ""
    move = {
        "from": {"patient_pk": old.id, "patient_id": old.patient_id},
        "to": {"patient_id": new_id, "issuer_of_patient_id": new_issuer},
    }
    alone = not session.scalar(
        select(func.count(DicomStudy.id)).where(
            DicomStudy.patient_pk == old.id, DicomStudy.id != study.id
        )
    )
    if alone and _find_patient(session, new_id, new_issuer) is None:
        try:
            # a savepoint: a receiver may create that patient at this very moment
            with session.begin_nested():
                old.patient_id = new_id
                old.issuer_of_patient_id = new_issuer
                session.flush()
            return old, move | {"how": "renamed", "patient_pk": old.id}
        except IntegrityError:
            session.refresh(old)
    created = insert_ignoring_conflict(
        session,
        Patient,
        {
            "patient_id": new_id,
            "issuer_of_patient_id": new_issuer,
            "patient_name": old.patient_name,
            "patient_name_folded": old.patient_name_folded,
            "patient_birth_date": old.patient_birth_date,
            "patient_sex": old.patient_sex,
        },
        unique=["patient_id", "issuer_of_patient_id"],
    )
    target = _find_patient(session, new_id, new_issuer, lock=True)
    assert target is not None
    if created is None:
        clashes = [
            field
            for field in PATIENT_FIELDS
            if field in wanted and getattr(target, field) not in (None, wanted[field])
        ]
        if clashes:
            raise Conflict(
                f"patient {new_id!r} already exists with another {clashes[0]}: correct "
                "that patient's demographics first, or move the study without them",
                existing={field: getattr(target, field) for field in PATIENT_FIELDS}
                | {"patient_id": target.patient_id},
            )
    study.patient_pk = target.id
    how = "created" if created is not None else "joined_existing"
    moved = move | {"how": how, "patient_pk": target.id}
    if alone and _remove_patient_if_empty(session, old):
        moved["removed_patient_pk"] = old.id
    return target, moved


def _remove_patient_if_empty(session: Session, patient: Patient) -> bool:
    """Remove the patient record a correction left without studies (a stray row
    under the old PatientID). A receiver may be adding a study for that patient
    at this very moment: then the row stays (a savepoint; the foreign key
    refuses the delete, or the new study waits for this commit)."""
    session.flush()
    if session.scalar(select(func.count(DicomStudy.id)).where(DicomStudy.patient_pk == patient.id)):
        return False
    try:
        with session.begin_nested():
            # Core, not session.delete: no ORM cascade over a stale studies list
            session.execute(delete(Patient).where(Patient.id == patient.id))
    except IntegrityError:
        return False
    return True


def _find_patient(
    session: Session, patient_id: str, issuer: str, *, lock: bool = False
) -> Patient | None:
    statement = select(Patient).where(
        Patient.patient_id == patient_id, Patient.issuer_of_patient_id == issuer
    )
    if lock:
        statement = statement.with_for_update()
    return session.scalar(statement)


# --------------------------------------------------------------------------- rejection


def reject_study(
    session: Session,
    *,
    principal: Principal,
    study_id: int,
    reason: str,
    source_address: str | None,
) -> StudySummary:
    """metadata_status -> rejected: withdrawn from C-FIND and search, never deleted
    (files and index rows stay; GET by id still shows it). Audited with the reason.
    The study's open worklist items (every queue) are cancelled, each audited."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidValue("a rejection needs a reason", field="reason")
    check_text("reason", reason, allow_newlines=True)
    study = session.scalar(select(DicomStudy).where(DicomStudy.id == study_id).with_for_update())
    if study is None:
        raise NotFound(f"no study {study_id}")
    if study.metadata_status == MetadataStatus.REJECTED.value:
        raise Conflict("the study is already rejected", current=study.metadata_status)
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    before = {
        "metadata_status": study.metadata_status,
        "released_to_reading": study.released_to_reading,
    }
    study.metadata_status = STUDY_METADATA.require("reject", study.metadata_status).value
    study.released_to_reading = False  # withdrawn: nothing to read
    study.release_priority = None
    session.flush()
    record_audit_event(
        session,
        instances_accessed_event(
            "study_rejected",
            user_actor(principal, source_address),
            study.id,
            Subject(patient.patient_id, study.study_instance_uid, study.accession_number),
            reason=reason,
            details={
                "before": before,
                "after": {"metadata_status": study.metadata_status, "released_to_reading": False},
            },
        ),
    )
    for queue in QueueType:
        close_items(
            session,
            study_id=study.id,
            queue=queue,
            to=WorklistStatus.CANCELLED,
            actor=user_actor(principal, source_address),
            reason=f"study rejected: {reason}",
        )
    return study_summary(study, patient)
