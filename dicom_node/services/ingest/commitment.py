"""Storage Commitment (push model, PS3.4 J): which of the asked instances the
node holds durably, and the completeness evidence that gives.

"Held" means: indexed, under the SOP class the requester names, and its file
in the store. A commitment covering every instance a study has received is
evidence that the acquisition is over (docs/domain.md#completeness-and-the-stability-wait
completeness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.models import DicomInstance, DicomSeries, DicomStudy
from dicom_node.domain.audit import Actor, TargetKind, transfer_event
from dicom_node.domain.enums import AuditOutcome, Completeness, CompletenessEvidence
from dicom_node.domain.matching import SlaPolicy
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.workflow.completeness import complete_study
from dicom_node.storage import FileStore

# FailureReason (0008,1197), PS3.4 J.3.2.1.1.1
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110

_CHUNK = 500  # UIDs per IN (...) list


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class CommitmentResult:
    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)
    completed_studies: list[str] = field(default_factory=list)


def check_commitment(
    db: Database,
    store: FileStore,
    *,
    transaction_uid: str,
    references: Sequence[Reference],
    actor: str,  # the calling AE title of the peer asking
    sla: SlaPolicy,
    now: datetime,
) -> CommitmentResult:
    result = CommitmentResult(transaction_uid)
    with db.unit_of_work() as session:
        # uid -> (SOP class, file, study, quarantined): quarantined instances are
        # held durably too, so they commit; they just do not count for completeness
        held: dict[str, tuple[str, str, int, bool]] = {}
        uids = [ref.sop_instance_uid for ref in references]
        for start in range(0, len(uids), _CHUNK):
            rows = session.execute(
                select(
                    DicomInstance.sop_instance_uid,
                    DicomInstance.sop_class_uid,
                    DicomInstance.file_path,
                    DicomSeries.study_pk,
                    DicomInstance.quarantined,
                )
                .join(DicomSeries, DicomInstance.series_pk == DicomSeries.id)
                .where(DicomInstance.sop_instance_uid.in_(uids[start : start + _CHUNK]))
            ).all()
            held.update({row[0]: (row[1], row[2], row[3], row[4]) for row in rows})
        per_study: dict[int, set[str]] = {}  # distinct instances: a repeat counts once
        for ref in references:
            row = held.get(ref.sop_instance_uid)
            if row is None:
                result.failed.append((ref, NO_SUCH_OBJECT_INSTANCE))
            elif row[0] != ref.sop_class_uid:
                result.failed.append((ref, CLASS_INSTANCE_CONFLICT))
            elif not store.exists(row[1]):
                result.failed.append((ref, PROCESSING_FAILURE))
            else:
                result.committed.append(ref)
                if not row[3]:
                    per_study.setdefault(row[2], set()).add(ref.sop_instance_uid)
        for study_pk, committed in per_study.items():
            study = session.get(DicomStudy, study_pk)
            if (
                study is not None
                and study.completeness != Completeness.COMPLETE.value
                and len(committed) >= study.instance_count > 0
            ):
                complete_study(
                    session,
                    study,
                    evidence=CompletenessEvidence.STORAGE_COMMITMENT,
                    now=now,
                    sla=sla,
                    actor=actor,
                )
                result.completed_studies.append(study.study_instance_uid)
        record_audit_event(
            session,
            transfer_event(
                "storage_commitment",
                Actor.peer(actor),
                TargetKind.STORAGE_COMMITMENT,
                transaction_uid,
                outcome=AuditOutcome.MINOR_FAILURE if result.failed else AuditOutcome.SUCCESS,
                details={
                    "committed": len(result.committed),
                    "failed": [ref.sop_instance_uid for ref, _ in result.failed][:100],
                    "completed_studies": result.completed_studies,
                },
            ),
        )
    return result
