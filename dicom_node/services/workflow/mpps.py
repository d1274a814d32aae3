"""Modality Performed Procedure Step (RAD-6/7, PS3.4 F.7): the exam's start and end.

N-CREATE (IN PROGRESS) puts the scheduled order in progress; N-SET COMPLETED
makes it performed and records which series and instances the modality says it
made (completeness uses that as evidence, docs/domain.md#mpps-effects); N-SET DISCONTINUED
discontinues it with the reason. N-CREATE and N-SET may come on different
associations: everything lives in the database.

Only the AE whose N-CREATE made a step may N-SET it (``mpps_set_by_creator_only``,
on by default): another AE could otherwise complete or discontinue any exam in
progress, and with it the order. Its N-SET is refused (0x0124); the SCP audits
the refusal as a Security Alert, aggregated per peer like the other refusals
(``services/access/refusals.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import (
    DicomSeries,
    DicomStudy,
    ImagingRequest,
    PerformedProcedureStep,
)
from dicom_node.domain.audit import Actor, TargetKind, procedure_event
from dicom_node.domain.enums import (
    AuditOutcome,
    MppsStatus,
    RequestStatus,
)
from dicom_node.domain.errors import DomainError
from dicom_node.domain.transitions import MPPS, ORDER
from dicom_node.services.audit.record import record_audit_event
from dicom_node.services.audit.subjects import step_subject
from dicom_node.services.workflow.orders import take_trigger
from dicom_node.services.workflow.work_items import open_procedure_step_item

# An N-CREATE for an order in another state (cancelled, discontinued, performed)
# does not start it again behind a person's back: the step goes to reconciliation.
# In progress already (the first image came first) is not closed, only not moved.
_STARTABLE = ORDER.sources("mpps_in_progress") | {RequestStatus.IN_PROGRESS}


class MppsProblem(StrEnum):
    """What went wrong, in the terms of the N-CREATE/N-SET statuses (PS3.7 C)."""

    DUPLICATE = "duplicate SOP instance"  # 0x0111
    NO_SUCH_INSTANCE = "no such SOP instance"  # 0x0112
    NOT_IN_PROGRESS = "the step is no longer IN PROGRESS"  # 0x0110
    INVALID_VALUE = "invalid attribute value"  # 0x0106
    MISSING_ATTRIBUTE = "missing attribute"  # 0x0120
    NOT_AUTHORIZED = "not authorized"  # 0x0124


# the MPPS trigger of each N-SET status (None: other attributes only)
_SET_TRIGGERS: dict[str | None, str] = {
    None: "update",
    MppsStatus.IN_PROGRESS.value: "update",
    MppsStatus.COMPLETED.value: "complete",
    MppsStatus.DISCONTINUED.value: "discontinue",
}

# why an N-SET from another AE than the step's creator is refused
NOT_THE_CREATOR = "the step was created by another AE"


class MppsError(DomainError):
    def __init__(self, problem: MppsProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem


@dataclass(frozen=True)
class ScheduledStepRef:
    """One item of ScheduledStepAttributesSequence (0040,0270)."""

    study_instance_uid: str | None
    accession_number: str | None


@dataclass(frozen=True)
class MppsCreate:
    sop_instance_uid: str
    status: str
    scheduled_steps: list[ScheduledStepRef] = field(default_factory=list)
    station_ae_title: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class MppsSet:
    sop_instance_uid: str
    status: str | None  # None: other attributes only
    ended_at: datetime | None = None
    # SeriesInstanceUID -> SOPInstanceUIDs (PerformedSeriesSequence); None if absent
    performed_series: dict[str, list[str]] | None = None
    discontinuation_reason: str | None = None


def create_mpps(
    db: Database, request: MppsCreate, *, actor: str, source_address: str | None = None
) -> PerformedProcedureStep:
    """Record an N-CREATE from the AE titled ``actor`` (at ``source_address``)."""
    peer = Actor.peer(actor, source_address)
    if request.status != MppsStatus.IN_PROGRESS.value:
        raise MppsError(MppsProblem.INVALID_VALUE, "N-CREATE status must be IN PROGRESS")
    try:
        with db.unit_of_work() as session:
            if session.scalar(
                select(PerformedProcedureStep.id).where(
                    PerformedProcedureStep.sop_instance_uid == request.sop_instance_uid
                )
            ):
                raise MppsError(MppsProblem.DUPLICATE, request.sop_instance_uid)
            order = _scheduled_order(session, request.scheduled_steps)
            # an order already cancelled, discontinued or performed is not started
            # again behind a person's back: linked, and sent to reconciliation
            reconcile = order is None or RequestStatus(order.status) not in _STARTABLE
            step = PerformedProcedureStep(
                sop_instance_uid=request.sop_instance_uid,
                imaging_request_id=order.id if order else None,
                status=MppsStatus.IN_PROGRESS.value,
                study_instance_uid=next(
                    (s.study_instance_uid for s in request.scheduled_steps if s.study_instance_uid),
                    None,
                ),
                accession_number=next(
                    (s.accession_number for s in request.scheduled_steps if s.accession_number),
                    None,
                ),
                performed_station_ae_title=request.station_ae_title,
                started_at=request.started_at or datetime.now(UTC),
                calling_ae_title=actor,
            )
            session.add(step)
            session.flush()
            if (
                order is not None
                and not reconcile
                and take_trigger(
                    session, order, "mpps_in_progress", actor=peer, reason="MPPS IN PROGRESS"
                )
            ):
                order.exam_started_at = order.exam_started_at or step.started_at
            if reconcile:
                # an unscheduled exam (no accession, or none that fits), or one for
                # an order that is closed: a person decides (docs/domain.md#mpps-effects
                # reconciliation)
                open_procedure_step_item(
                    session,
                    step,
                    order,
                    actor=peer,
                    reason="MPPS for no known order"
                    if order is None
                    else f"MPPS for order {order.id}, which is {order.status}",
                )
            record_audit_event(
                session,
                procedure_event(
                    "mpps_in_progress",
                    peer,
                    TargetKind.PROCEDURE_STEP,
                    step.sop_instance_uid,
                    step_subject(step, order),
                    outcome=AuditOutcome.MINOR_FAILURE if reconcile else AuditOutcome.SUCCESS,
                    details={
                        "status": step.status,
                        "order_id": order.id if order else None,
                        "unscheduled": order is None,
                        "order_closed": order.status if order is not None and reconcile else None,
                    },
                ),
            )
            return step
    except IntegrityError:
        # another association created the same instance between our check and
        # insert; any other integrity error is ours, not the modality's
        with db.read() as session:
            exists = session.scalar(
                select(PerformedProcedureStep.id).where(
                    PerformedProcedureStep.sop_instance_uid == request.sop_instance_uid
                )
            )
        if exists:
            raise MppsError(MppsProblem.DUPLICATE, request.sop_instance_uid) from None
        raise


def update_mpps(
    db: Database,
    request: MppsSet,
    *,
    actor: str,
    creator_only: bool = True,
    source_address: str | None = None,
) -> PerformedProcedureStep:
    """Apply an N-SET. ``creator_only``: refused (NOT_AUTHORIZED) unless ``actor``
    is the AE whose N-CREATE made the step. The caller audits the refusal: it
    comes from a peer that may repeat it at will, so it is aggregated per peer
    with the other refusals (``services/access/refusals.py``), not written here one
    row each."""
    with db.unit_of_work() as session:
        step = session.scalar(
            select(PerformedProcedureStep)
            .where(PerformedProcedureStep.sop_instance_uid == request.sop_instance_uid)
            .with_for_update()
        )
        if step is None:
            raise MppsError(MppsProblem.NO_SUCH_INSTANCE, request.sop_instance_uid)
        creator = (step.calling_ae_title or "").strip()
        if not (creator_only and creator and actor.strip() != creator):
            return _apply_set(session, step, request, Actor.peer(actor, source_address))
        # checked before the step's status, which another AE is not told; the
        # N-SET changes nothing
    raise MppsError(MppsProblem.NOT_AUTHORIZED, NOT_THE_CREATOR)


def _apply_set(
    session: Session, step: PerformedProcedureStep, request: MppsSet, actor: Actor
) -> PerformedProcedureStep:
    trigger = _SET_TRIGGERS.get(request.status)
    # the step's state first (a final step refuses every N-SET, 0x0110), then the value
    if not MPPS.allows(trigger or "update", step.status):
        raise MppsError(MppsProblem.NOT_IN_PROGRESS, step.status)
    if trigger is None:
        raise MppsError(MppsProblem.INVALID_VALUE, f"status {request.status!r}")
    order = (
        session.get(ImagingRequest, step.imaging_request_id) if step.imaging_request_id else None
    )
    if trigger == "update":
        if request.performed_series is not None:
            step.performed_series = request.performed_series
        record_audit_event(
            session,
            procedure_event(
                "mpps_updated",
                actor,
                TargetKind.PROCEDURE_STEP,
                step.sop_instance_uid,
                step_subject(step, order),
                details={"status": step.status, "order_id": order.id if order else None},
            ),
        )
        return step
    if trigger == "complete":
        # the final state's requirements apply to the step as stored (F.7.2.2):
        # an earlier N-SET may have sent the series
        ended_at = request.ended_at or step.ended_at
        performed = request.performed_series or step.performed_series
        if ended_at is None or not performed:
            raise MppsError(
                MppsProblem.MISSING_ATTRIBUTE,
                "COMPLETED needs the end date/time and PerformedSeriesSequence",
            )
        step.status = MPPS.target(trigger).value
        step.ended_at, step.performed_series = ended_at, performed
        if order is not None and take_trigger(
            session, order, "mpps_completed", actor=actor, reason="MPPS COMPLETED"
        ):
            order.exam_completed_at = ended_at
        missing = _series_not_received(session, step)
        record_audit_event(
            session,
            procedure_event(
                "mpps_completed",
                actor,
                TargetKind.PROCEDURE_STEP,
                step.sop_instance_uid,
                step_subject(step, order),
                outcome=AuditOutcome.MINOR_FAILURE if missing else AuditOutcome.SUCCESS,
                details={
                    "status": step.status,
                    "order_id": order.id if order else None,
                    "series_not_received": missing,
                },
            ),
        )
        return step
    # discontinue
    step.status = MPPS.target(trigger).value
    step.ended_at = request.ended_at or datetime.now(UTC)
    step.discontinuation_reason = request.discontinuation_reason
    if order is not None:
        take_trigger(
            session,
            order,
            "mpps_discontinued",
            actor=actor,
            reason=request.discontinuation_reason or "MPPS DISCONTINUED",
        )
    record_audit_event(
        session,
        procedure_event(
            "mpps_discontinued",
            actor,
            TargetKind.PROCEDURE_STEP,
            step.sop_instance_uid,
            step_subject(step, order),
            details={"status": step.status, "order_id": order.id if order else None},
        ),
    )
    return step


def _scheduled_order(session: Session, refs: list[ScheduledStepRef]) -> ImagingRequest | None:
    """The order the step performs: its StudyInstanceUID, else its accession."""
    for ref in refs:
        if ref.study_instance_uid:
            order = session.scalar(
                select(ImagingRequest).where(
                    ImagingRequest.study_instance_uid == ref.study_instance_uid
                )
            )
            if order is not None:
                return order
    for ref in refs:
        if ref.accession_number:
            orders = session.scalars(
                select(ImagingRequest)
                .where(ImagingRequest.accession_number == ref.accession_number)
                .limit(2)
            ).all()
            if len(orders) == 1:
                return orders[0]
    return None  # an unscheduled exam: for reconciliation


def _series_not_received(session: Session, step: PerformedProcedureStep) -> list[str]:
    """Series the modality says it made that have not arrived (flagged, not refused:
    images often arrive after the MPPS COMPLETED)."""
    listed = list(step.performed_series or {})
    if not listed:
        return []
    received = set(
        session.scalars(
            select(DicomSeries.series_instance_uid)
            .join(DicomStudy)
            .where(DicomSeries.series_instance_uid.in_(listed))
        )
    )
    return [uid for uid in listed if uid not in received]
