"""GET /api/node-status: the node's state as facts a person reads (the
administration page's status), permission ``metrics:read``: the same facts as
``GET /metrics`` (read from its exposition) and ``GET /health`` (the same
probes), plus the disk and the last backup
(``services/operations/node_status.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import Context, require
from api.schemas.common import AUTH_ERRORS
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.operations.node_status import Disk, node_status

router = APIRouter(prefix="/api", tags=["metrics"])

Reader = Annotated[Principal, Depends(require(Permission.VIEW_METRICS))]


class DiskPublic(BaseModel):
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


class LastBackupPublic(BaseModel):
    at: datetime
    outcome: str
    files: int | None
    bytes: int | None


class AssociationsPublic(BaseModel):
    open: int = Field(description="open now (dicom_node_associations_active)")
    accepted: int = Field(description="since the node started")
    rejected: int
    aborted: int


class QueuesPublic(BaseModel):
    worklist_open: int
    worklist_overdue: int
    reconciliation_open: int
    store_temp_files: int


class BackupPublic(BaseModel):
    configured: bool
    interval_hours: float
    last: LastBackupPublic | None
    disk: DiskPublic | None


class NodeStatusPublic(BaseModel):
    status: str = Field(description="ok or degraded, as GET /health says")
    database: bool
    components: dict[str, bool]
    associations: AssociationsPublic
    instances_received: int = Field(description="C-STORE successes since the node started")
    instances_refused: int
    queues: QueuesPublic
    job_runs: dict[str, dict[str, int]] = Field(
        description="scheduled job -> outcome -> runs since the node started"
    )
    store_disk: DiskPublic | None
    backup: BackupPublic


def _disk(disk: Disk | None) -> DiskPublic | None:
    return DiskPublic.model_validate(disk, from_attributes=True) if disk else None


@router.get("/node-status", response_model=NodeStatusPublic, responses=AUTH_ERRORS)
def read_node_status(context: Context, _reader: Reader) -> NodeStatusPublic:
    """Associations, queues, jobs, disk, the last backup and the health, now."""
    database = context.db.ping()
    status = node_status(
        context.settings,
        context.db,
        database_up=database,
        components={name: probe() for name, probe in context.probes.items()},
    )
    return NodeStatusPublic(
        status="ok" if status.healthy else "degraded",
        database=status.database,
        components=status.components,
        associations=AssociationsPublic(
            open=status.associations_open,
            accepted=status.associations_accepted,
            rejected=status.associations_rejected,
            aborted=status.associations_aborted,
        ),
        instances_received=status.instances_received,
        instances_refused=status.instances_refused,
        queues=QueuesPublic(
            worklist_open=status.worklist_open,
            worklist_overdue=status.worklist_overdue,
            reconciliation_open=status.reconciliation_open,
            store_temp_files=status.store_temp_files,
        ),
        job_runs=status.job_runs,
        store_disk=_disk(status.store_disk),
        backup=BackupPublic(
            configured=status.backups_configured,
            interval_hours=status.backup_interval_hours,
            last=LastBackupPublic.model_validate(status.last_backup, from_attributes=True)
            if status.last_backup
            else None,
            disk=_disk(status.backup_disk),
        ),
    )
