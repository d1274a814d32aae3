"""One instance's share of an ingest transaction: upsert patient, study, series;
insert the instance (or decide what a resend is); counters; match a new study
to its order. Everything its arrival writes (audit events, change-feed rows) is
written here, in the caller's transaction (index_writer.py runs each instance in
a SAVEPOINT of its batch).

The transaction first locks the study row (PostgreSQL ``FOR NO KEY UPDATE``;
SQLite's ``BEGIN IMMEDIATE`` serialises writers anyway), and only then reads
the instance and series rows, each in a statement of its own. A retention
purge holds the same row ``FOR UPDATE`` while it deletes the study's series
and instances: a C-STORE arriving meanwhile waits for it, then finds them gone
and stores the instance afresh (series created again). Had the rows been read
before the lock, a resend would be acknowledged as a duplicate of a row the
purge then deletes, and a new instance would be inserted into a deleted
series. ``NO KEY UPDATE`` is the lock the study counter update takes anyway,
so concurrent receivers of one study queue on it once, in one order, and never
upgrade a shared lock (two holders of ``FOR SHARE`` both updating the counters
would deadlock); unlike ``FOR UPDATE`` it lets other transactions insert rows
that refer to the study (work items, reports) meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, exists, select, update
from sqlalchemy.orm import Session

from dicom_node.db.changes import record_change
from dicom_node.db.held_syntaxes import record_held_syntax
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy, Patient
from dicom_node.db.upsert import insert_ignoring_conflict
from dicom_node.domain.audit import (
    Subject,
    TargetKind,
    patient_record_event,
    procedure_event,
    transfer_event,
)
from dicom_node.domain.dataset_header import InstanceHeader
from dicom_node.domain.enums import AuditOutcome, Completeness, MetadataStatus, StudyStatus
from dicom_node.domain.transitions import COMPLETENESS, STUDY_METADATA
from dicom_node.domain.vr import normalize_tm
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.ingest.results import (
    IngestPolicy,
    Source,
    StoreOutcome,
    per_instance_log,
)
from dicom_node.services.workflow.completeness import withdraw_from_reading
from dicom_node.services.workflow.matching import match_new_study
from dicom_node.storage import FileStore


@dataclass
class Indexed:
    outcome: StoreOutcome
    relative_path: str
    old_path: str | None = None
    new_study: bool = False
    audit_reason: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def needs_file(indexed: Indexed, store: FileStore) -> bool:
    """New content goes in; so does a resend of an indexed instance whose file is
    missing (a crash between commit and directory sync, or a lost disk): the
    resend restores it instead of being waved through as a duplicate."""
    if indexed.outcome in (StoreOutcome.STORED, StoreOutcome.REPLACED):
        return True
    if indexed.outcome is StoreOutcome.DUPLICATE and not store.exists(indexed.relative_path):
        per_instance_log.warning(
            (store.root, "restored"), "indexed instance file was missing; restored from the resend"
        )
        return True
    return False


@dataclass(frozen=True, slots=True)
class _Parents:
    """Where a new instance goes: its series and study, and what indexing them did."""

    series_pk: int
    study_pk: int
    completeness: str
    new_study: bool = False
    new_series: bool = False
    quarantined: bool = False


def index_instance(
    session: Session,
    header: InstanceHeader,
    digest: str,
    size: int,
    source: Source,
    policy: IngestPolicy,
    *,
    installs: bool,
) -> Indexed:
    """``installs``: this call has a new copy to install (False for a file indexed
    where it lies)."""
    now = datetime.now(UTC)
    connection = session.connection()
    # Lock first, then read (see the module docstring): the study row by its UID,
    # then, in a statement of its own so that it sees what committed while this
    # one waited, the instance, the series and whether the patient agrees.
    study = _lock_study(session, header.study_instance_uid)
    known = connection.execute(
        _SQL.resolve,
        {
            "sop_uid": header.sop_instance_uid,
            "series_uid": header.series_instance_uid,
            "study_pk": study.pk if study is not None else None,
            "patient_pk": study.patient_pk if study is not None else None,
            "patient_id": header.patient_id,
            "issuer": header.issuer_of_patient_id,
        },
    ).one()
    if known.instance_pk is not None:
        existing = session.get(DicomInstance, known.instance_pk)
        assert existing is not None
        return _index_resend(
            session, existing, header, digest, size, source, policy, installs=installs
        )

    same_patient = bool(known.same_patient)
    if study is not None and known.series_pk is not None and same_patient:
        # the common case: the series exists, in this study, for this patient
        parents = _Parents(int(known.series_pk), study.pk, study.completeness)
    else:
        # new series, new study, or the careful path (quarantine...)
        parents = _create_parents(session, header, source, now, study, same_patient=same_patient)
    relative = relative_path(header)
    inserted = insert_ignoring_conflict(
        session,
        DicomInstance,
        {
            "sop_instance_uid": header.sop_instance_uid,
            "series_pk": parents.series_pk,
            "sop_class_uid": header.sop_class_uid,
            "instance_number": header.instance_number,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "file_path": relative,
            "file_size": size,
            "sha256": digest,
            "calling_ae_title": source.calling_ae_title,
            "source_address": source.address,
            "received_at": now,
            "request_attributes": [
                {k: v for k, v in asdict(item).items() if v} for item in header.request_attributes
            ]
            or None,
            "received_patient_id": header.patient_id,
            "quarantined": parents.quarantined,
        },
        unique=["sop_instance_uid"],
    )
    if inserted is None:
        raise LostInsertRace()
    # in this transaction: the C-GET acceptor must never miss a pair (db/held_syntaxes.py)
    record_held_syntax(session, header.sop_class_uid, header.transfer_syntax_uid)

    if parents.quarantined:
        # Held (stored, indexed, flagged) but not merged: the other patient's study
        # keeps its counts and modalities until reconciliation decides.
        return Indexed(StoreOutcome.STORED, relative)
    # Counters move by atomic increments in this transaction: concurrent receivers
    # of one study (threads, processes, nodes) never lose an update.
    connection.execute(_SQL.count_series_instance, {"pk": parents.series_pk})
    connection.execute(
        _SQL.count_study_instance_in_new_series
        if parents.new_series
        else _SQL.count_study_instance,
        {"pk": parents.study_pk, "now": now},
    )
    if parents.new_series and header.modality:
        _add_modality(session, parents.study_pk, header.modality, new_study=parents.new_study)
    if parents.completeness == Completeness.COMPLETE.value:
        record_audit_event(
            session,
            procedure_event(
                "study_reopened",
                source.audit_actor(),
                TargetKind.STUDY,
                parents.study_pk,
                Subject(patient_id=header.patient_id, study_instance_uid=header.study_instance_uid),
                reason="an instance arrived after the study was complete",
                details={
                    "before": {"completeness": Completeness.COMPLETE.value},
                    "after": {"completeness": Completeness.RECEIVING.value},
                },
            ),
        )
        record_change(
            session,
            entity="study",
            entity_id=parents.study_pk,
            action="updated",
            payload={"completeness": Completeness.RECEIVING.value},
        )
    if parents.new_study:
        # the row was made by a Core statement, which the feed's ORM hooks do not see
        record_change(
            session,
            entity="study",
            entity_id=parents.study_pk,
            action="created",
            payload={
                "status": StudyStatus.ACQUIRED.value,
                "completeness": Completeness.RECEIVING.value,
            },
        )
        match_new_study(
            session,
            study_id=parents.study_pk,
            header=header,
            now=now,
            actor=source.audit_actor(),
        )
    return Indexed(StoreOutcome.STORED, relative, new_study=parents.new_study)


@dataclass(frozen=True, slots=True)
class _LockedStudy:
    """The study row as read under its lock: the completeness this transaction
    overwrites (a stability run cannot complete the study unnoticed meanwhile)."""

    pk: int
    patient_pk: int
    completeness: str


def _lock_study(session: Session, study_instance_uid: str) -> _LockedStudy | None:
    row = session.connection().execute(_SQL.study_locked, {"uid": study_instance_uid}).one_or_none()
    if row is None:
        return None
    return _LockedStudy(int(row.id), int(row.patient_pk), str(row.completeness))


def _create_parents(
    session: Session,
    header: InstanceHeader,
    source: Source,
    now: datetime,
    study: _LockedStudy | None,
    *,
    same_patient: bool,
) -> _Parents:
    """First instance of a series (or a patient mismatch, or a new study): upsert
    what is missing of patient, study, series. ``study``: the study row locked by
    ``index_instance``, None when there was none.

    An insert that wins returns its id and needs no further read; only a row that
    already existed is looked up.
    """
    if study is not None:
        patient_pk = study.patient_pk if same_patient else _upsert_patient(session, header)
        study_pk, study_patient_pk, new_study = study.pk, study.patient_pk, False
        completeness = study.completeness  # read under the lock
    else:
        patient_pk = _upsert_patient(session, header)
        study_pk, study_patient_pk, new_study, completeness = _upsert_study(
            session, header, patient_pk, now
        )
    quarantined = study_patient_pk != patient_pk
    if quarantined:
        _quarantine(session, study_pk, header, source)
    series_pk, new_series = _upsert_series(session, header, study_pk)
    return _Parents(
        series_pk,
        study_pk,
        completeness,
        new_study=new_study,
        new_series=new_series,
        quarantined=quarantined,
    )


class _SQL:
    """The per-instance statements, built once: parameters bound at execution."""

    _series = cast(Table, DicomSeries.__table__)
    _study = cast(Table, DicomStudy.__table__)
    _patient = cast(Table, Patient.__table__)
    _instance = cast(Table, DicomInstance.__table__)
    # The lock every ingest transaction takes first. One table only: a join would
    # hand back the other tables' rows as they were before the wait.
    # FOR NO KEY UPDATE is PostgreSQL's; SQLite's BEGIN IMMEDIATE already
    # serialises writers (and SQLAlchemy leaves the clause out there).
    study_locked = (
        select(_study.c.id, _study.c.patient_pk, _study.c.completeness)
        .where(_study.c.study_instance_uid == bindparam("uid"))
        .with_for_update(key_share=True)
    )
    # Read after the lock, in one round trip: the instance (a resend?), the series
    # in this study, and whether the study's patient is the header's.
    resolve = select(
        select(_instance.c.id)
        .where(_instance.c.sop_instance_uid == bindparam("sop_uid"))
        .scalar_subquery()
        .label("instance_pk"),
        select(_series.c.id)
        .where(
            _series.c.series_instance_uid == bindparam("series_uid"),
            _series.c.study_pk == bindparam("study_pk"),
        )
        .scalar_subquery()
        .label("series_pk"),
        exists()
        .where(
            _patient.c.id == bindparam("patient_pk"),
            _patient.c.patient_id == bindparam("patient_id"),
            _patient.c.issuer_of_patient_id == bindparam("issuer"),
        )
        .label("same_patient"),
    )
    patient_pk = select(_patient.c.id).where(
        _patient.c.patient_id == bindparam("patient_id"),
        _patient.c.issuer_of_patient_id == bindparam("issuer"),
    )
    series_pk = select(_series.c.id).where(_series.c.series_instance_uid == bindparam("uid"))
    count_series_instance = (
        update(_series)
        .where(_series.c.id == bindparam("pk"))
        .values(instance_count=_series.c.instance_count + 1)
    )
    _study_counts = {
        "instance_count": _study.c.instance_count + 1,
        "last_received_at": bindparam("now"),
        # quiet or complete -> receiving (COMPLETENESS "new_instance"); set in
        # the same UPDATE as the counts, one statement per instance
        "completeness": COMPLETENESS.target("new_instance").value,
    }
    count_study_instance = (
        update(_study).where(_study.c.id == bindparam("pk")).values(**_study_counts)
    )
    count_study_instance_in_new_series = (
        update(_study)
        .where(_study.c.id == bindparam("pk"))
        .values(**_study_counts, series_count=_study.c.series_count + 1)
    )
    # ModalitiesInStudy, for a new series: Core, as the counters. An ORM UPDATE
    # cost more than the statement (it also searches the session for study
    # objects to synchronise, and nothing in ingest reads a loaded study's
    # modalities).
    study_modalities = select(_study.c.modalities_in_study).where(_study.c.id == bindparam("pk"))
    set_study_modalities = (
        update(_study)
        .where(_study.c.id == bindparam("pk"))
        .values(modalities_in_study=bindparam("modalities"))
    )


class LostInsertRace(Exception):
    """Another receiver committed the same SOPInstanceUID first: redo as a resend."""


def relative_path(header: InstanceHeader, variant: str | None = None) -> str:
    return FileStore.relative_path(
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_instance_uid,
        variant=variant,
    )


def _index_resend(
    session: Session,
    existing: DicomInstance,
    header: InstanceHeader,
    digest: str,
    size: int,
    source: Source,
    policy: IngestPolicy,
    *,
    installs: bool,
) -> Indexed:
    if existing.sha256 == digest:
        return Indexed(StoreOutcome.DUPLICATE, existing.file_path)
    after: dict[str, object] = {"sha256": digest, "file_size": size}
    details: dict[str, object] = {
        "before": {"sha256": existing.sha256, "file_size": existing.file_size},
        "after": after,
        "policy": policy.duplicate_policy,
    }
    series = existing.series
    moved = (series.series_instance_uid, series.study.study_instance_uid) != (
        header.series_instance_uid,
        header.study_instance_uid,
    ) or existing.received_patient_id != header.patient_id
    if moved:
        # Replacing would move an instance between series, studies or patients
        # behind the index's back: that is a correction for a person to make.
        relative, old = existing.file_path, None
        outcome = StoreOutcome.KEPT_EXISTING
        reason = "stored copy kept: the new copy names another series, study or patient"
        after["series_instance_uid"] = header.series_instance_uid
        after["study_instance_uid"] = header.study_instance_uid
    elif policy.duplicate_policy == "replace" and not installs:
        # The new content is a file already in the store (reindex, repair), with
        # no copy to install at a new path: pointing the row elsewhere would point
        # it at nothing, and the file it has must stay.
        relative, old = existing.file_path, None
        outcome = StoreOutcome.KEPT_EXISTING
        reason = "stored copy kept: the new content is a file in the store, not a copy to install"
    elif policy.duplicate_policy == "replace":
        relative = relative_path(header, variant=digest[:16])
        old = existing.file_path
        existing.file_path = relative
        existing.sha256 = digest
        existing.file_size = size
        existing.transfer_syntax_uid = header.transfer_syntax_uid
        existing.sop_class_uid = header.sop_class_uid
        record_held_syntax(session, header.sop_class_uid, header.transfer_syntax_uid)
        existing.instance_number = header.instance_number
        existing.received_at = datetime.now(UTC)
        outcome, reason = StoreOutcome.REPLACED, "new content replaced the stored copy"
    else:
        relative, old = existing.file_path, None
        outcome, reason = StoreOutcome.KEPT_EXISTING, "stored copy kept, new content discarded"
    record_audit_event(
        session,
        transfer_event(
            "instance_content_conflict",
            source.audit_actor(),
            TargetKind.INSTANCE,
            header.sop_instance_uid,
            _subject(header),
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=reason,
            details=details,
        ),
    )
    return Indexed(outcome, relative, old_path=old, audit_reason=reason)


def _subject(header: InstanceHeader) -> Subject:
    return Subject(
        patient_id=header.patient_id,
        study_instance_uid=header.study_instance_uid,
        accession_number=header.accession_number,
    )


def _upsert_patient(session: Session, header: InstanceHeader) -> int:
    created = insert_ignoring_conflict(
        session,
        Patient,
        {
            "patient_id": header.patient_id,
            "issuer_of_patient_id": header.issuer_of_patient_id,
            # PN columns: their folded copies are filled by the INSERT (db/models.py)
            "patient_name": header.patient_name,
            "patient_birth_date": header.patient_birth_date,
            "patient_sex": header.patient_sex,
        },
        unique=["patient_id", "issuer_of_patient_id"],
    )
    if created is not None:
        return created
    found: int = (
        session.connection()
        .execute(
            _SQL.patient_pk,
            {"patient_id": header.patient_id, "issuer": header.issuer_of_patient_id},
        )
        .scalar_one()
    )
    return found


def _upsert_study(
    session: Session, header: InstanceHeader, patient_pk: int, now: datetime
) -> tuple[int, int, bool, str]:
    """(study pk, the study's patient pk, created, completeness). A study another
    receiver created meanwhile is locked, as ``index_instance`` locks a known one, and
    its completeness read under the lock."""
    created = insert_ignoring_conflict(
        session,
        DicomStudy,
        {
            "study_instance_uid": header.study_instance_uid,
            "patient_pk": patient_pk,
            "accession_number": header.accession_number,
            "accession_issuer": header.accession_issuer,
            "study_id": header.study_id,
            "study_date": header.study_date,
            "study_time": header.study_time,
            "study_time_norm": normalize_tm(header.study_time),
            "study_description": header.study_description,
            "referring_physician_name": header.referring_physician_name,
            "name_of_physicians_reading_study": header.name_of_physicians_reading_study,
            "body_part_examined": header.body_part_examined,
            "modality_type": header.modality,
            "metadata_status": MetadataStatus.PENDING.value,
            "status": StudyStatus.ACQUIRED.value,
            "completeness": Completeness.RECEIVING.value,
            "first_received_at": now,
            "last_received_at": now,
        },
        unique=["study_instance_uid"],
    )
    if created is not None:
        # ours, uncommitted: no one else sees it
        return created, patient_pk, True, Completeness.RECEIVING.value
    found = _lock_study(session, header.study_instance_uid)
    assert found is not None  # the conflict was with a committed row
    return found.pk, found.patient_pk, False, found.completeness


def _upsert_series(session: Session, header: InstanceHeader, study_pk: int) -> tuple[int, bool]:
    created = insert_ignoring_conflict(
        session,
        DicomSeries,
        {
            "series_instance_uid": header.series_instance_uid,
            "study_pk": study_pk,
            "modality": header.modality,
            "series_number": header.series_number,
            "series_description": header.series_description,
            "body_part_examined": header.body_part_examined,
            "station_name": header.station_name,
            "performing_physician_name": header.performing_physician_name,
            "series_date": header.series_date,
            "series_time": header.series_time,
            "series_time_norm": normalize_tm(header.series_time),
        },
        unique=["series_instance_uid"],
    )
    if created is not None:
        return created, True
    found: int = (
        session.connection()
        .execute(_SQL.series_pk, {"uid": header.series_instance_uid})
        .scalar_one()
    )
    return found, False


def _add_modality(session: Session, study_pk: int, modality: str, *, new_study: bool) -> None:
    connection = session.connection()
    # Re-read under the row lock the counter update just took: no lost update.
    # A study this transaction created has none yet.
    current = (
        None
        if new_study
        else connection.execute(_SQL.study_modalities, {"pk": study_pk}).scalar_one()
    )
    values = set(filter(None, (current or "").split("\\")))
    if modality not in values:
        values.add(modality)
        connection.execute(
            _SQL.set_study_modalities,
            {"pk": study_pk, "modalities": "\\".join(sorted(values))},
        )


def _quarantine(session: Session, study_pk: int, header: InstanceHeader, source: Source) -> None:
    """A known StudyInstanceUID for another patient: flag, never merge.

    The study leaves the reading worklist (its open reading/review items are
    cancelled, a reconciliation item is opened) until a person links it again.
    A rejected study stays rejected: withdrawn, nothing to read or reconcile.
    """
    before = session.scalars(
        select(DicomStudy.metadata_status).where(DicomStudy.id == study_pk)
    ).one()  # the caller holds the study row
    after = (
        STUDY_METADATA.target("patient_conflict").value
        if STUDY_METADATA.allows("patient_conflict", before)
        else before  # rejected stays rejected
    )
    if before != after:
        session.execute(
            update(DicomStudy).where(DicomStudy.id == study_pk).values(metadata_status=after)
        )
    reason = "instance carries a known StudyInstanceUID with a different PatientID"
    record_audit_event(
        session,
        patient_record_event(
            "study_patient_conflict",
            source.audit_actor(),
            TargetKind.STUDY,
            study_pk,
            _subject(header),
            outcome=AuditOutcome.MINOR_FAILURE,
            reason=reason,
            details={
                "before": {"metadata_status": before},
                "after": {"metadata_status": after},
                "sop_instance_uid": header.sop_instance_uid,
            },
        ),
    )
    if after == MetadataStatus.CONFLICT.value:
        withdraw_from_reading(session, study_pk, actor=source.audit_actor(), reason=reason)
