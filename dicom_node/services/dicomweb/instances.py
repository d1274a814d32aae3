"""Which stored instances a DICOMweb read names, and the audit of reading them.

WADO-RS, its metadata, frames, bulk data and rendered resources all start
here: the instances of one study (or one series, or one instance) that the
principal may see, as held for retrieve (a rejected study is withdrawn, a
quarantined instance is not part of the study it arrived under: the same rules
as C-MOVE and C-GET, ``db/query.py compile_query``). A study outside the
visibility rule (``services/access/visibility.py``) is answered exactly as a
study that does not exist, so a referring physician cannot learn that it does.

Every UID from the URL is validated before it reaches SQL or a file path.

Reads are audited per study and per request (one 110103 with the number of
instances), not per instance: a viewer fetching a 2,000-image study makes
one event, not 2,000.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient
from dicom_node.domain.audit import Subject, instances_accessed_event
from dicom_node.domain.enums import MetadataStatus
from dicom_node.domain.errors import InvalidValue, NotFound
from dicom_node.domain.permissions import Principal
from dicom_node.domain.vr import is_valid_uid
from dicom_node.services.access.visibility import study_condition
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import user_actor


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance a DICOMweb read returns, and where its file lies."""

    study_pk: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    file_path: str  # relative to the store (FileStore.absolute)
    file_size: int
    # for the audit event: the study's patient and accession
    patient_id: str | None
    accession_number: str | None


def checked_uid(value: str, name: str) -> str:
    """A UID from the URL, or InvalidValue (400): nothing else reaches SQL or a path."""
    if not is_valid_uid(value):
        raise InvalidValue(f"{name} is not a valid UID")
    return value


def visible_instances(
    session: Session,
    principal: Principal,
    *,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[StoredInstance]:
    """The held instances of the study (series, instance) that ``principal`` may
    see, in series then instance number order. NotFound when there are none
    (or the study is not the principal's to see); InvalidValue for a bad UID."""
    checked_uid(study_uid, "StudyInstanceUID")
    statement = (
        select(
            DicomStudy.id,
            DicomStudy.study_instance_uid,
            DicomSeries.series_instance_uid,
            DicomInstance.sop_instance_uid,
            DicomInstance.sop_class_uid,
            DicomInstance.transfer_syntax_uid,
            DicomInstance.instance_number,
            DicomInstance.file_path,
            DicomInstance.file_size,
            Patient.patient_id,
            DicomStudy.accession_number,
        )
        .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
        .join(DicomStudy, DicomSeries.study_pk == DicomStudy.id)
        .join(Patient, DicomStudy.patient_pk == Patient.id)
        .where(
            DicomStudy.study_instance_uid == study_uid,
            DicomStudy.metadata_status != MetadataStatus.REJECTED.value,
            DicomInstance.quarantined.is_(False),
            study_condition(principal),
        )
    )
    what = "study"
    if series_uid is not None:
        statement = statement.where(
            DicomSeries.series_instance_uid == checked_uid(series_uid, "SeriesInstanceUID")
        )
        what = "series"
    if sop_uid is not None:
        statement = statement.where(
            DicomInstance.sop_instance_uid == checked_uid(sop_uid, "SOPInstanceUID")
        )
        what = "instance"
    statement = statement.order_by(
        DicomSeries.series_number.asc().nulls_last(),
        DicomSeries.id,
        DicomInstance.instance_number.asc().nulls_last(),
        DicomInstance.id,
    )
    rows = session.execute(statement).all()
    if not rows:
        raise NotFound(f"no such {what}")
    return [StoredInstance(*row) for row in rows]


def record_instances_accessed(
    db: Database,
    principal: Principal,
    instances: Iterable[StoredInstance],
    *,
    action: str,
    source_address: str | None,
    details: dict[str, object] | None = None,
) -> None:
    """One 110103 Instances Accessed per study among ``instances`` (with how many
    of its instances were read), in one transaction, committed before the caller
    sends the first byte: a disclosure is never unaudited."""
    counts: Counter[int] = Counter()
    first: dict[int, StoredInstance] = {}
    for instance in instances:
        counts[instance.study_pk] += 1
        first.setdefault(instance.study_pk, instance)
    if not counts:
        return
    actor = user_actor(principal, source_address)
    with db.unit_of_work() as session:
        for study_pk, count in counts.items():
            instance = first[study_pk]
            record_audit_event(
                session,
                instances_accessed_event(
                    action,
                    actor,
                    study_pk,
                    Subject(
                        instance.patient_id,
                        instance.study_instance_uid,
                        instance.accession_number,
                    ),
                    details={"instances": count, **(details or {})},
                ),
            )
