"""Jobs of the ingest workflow. Each opens its own unit of work per run."""

from __future__ import annotations

from datetime import UTC, datetime

from dicom_node.db.engine import Database
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.matching import SlaPolicy
from dicom_node.services.workflow.completeness import (
    DEFAULT_MPPS_WAIT_SECONDS,
    SettleSummary,
    settle_studies,
)
from dicom_node.storage import FileStore


def run_study_stability(
    db: Database,
    *,
    stable_seconds: int,
    sla: SlaPolicy,
    now: datetime | None = None,
    mpps_wait_seconds: int = DEFAULT_MPPS_WAIT_SECONDS,
) -> SettleSummary:
    with db.unit_of_work() as session:
        return settle_studies(
            session,
            now=now or datetime.now(UTC),
            stable_seconds=stable_seconds,
            sla=sla,
            actor=Actor.system(SystemActor.SCHEDULER),
            mpps_wait_seconds=mpps_wait_seconds,
        )


def run_temp_sweep(store: FileStore, *, max_age_seconds: int) -> str:
    return f"{store.sweep_temp(older_than_seconds=max_age_seconds)} abandoned temp files removed"
