"""The workflow's state machines as tables: which trigger moves what from which
states to which (docs/domain.md#state-machines).

Pure data and two lookups, no database: every service that changes a state
names the trigger it performs and asks the table whether the current state
allows it (``allows``) or for the state it leads to (``require``). So the rules
are read in one place, tested here without a server, and a new trigger is a new
row, not a new tuple at a call site.

A trigger leads to exactly one state; where the same event can end in several
states (matching: matched, unmatched or conflict) each outcome is its own
trigger. Which *role* may fire a trigger is not in these tables: that is the
permission table (``domain/permissions.py``) plus the per-record rules of the
owning service (a referring physician cancels only their own requested order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from dicom_node.domain.enums import (
    Completeness,
    MetadataStatus,
    MppsStatus,
    ReportStatus,
    RequestStatus,
    StudyStatus,
    WorklistStatus,
)
from dicom_node.domain.errors import Conflict

S = TypeVar("S", bound=StrEnum)


class TransitionRefused(Conflict):
    """The entity's current state does not allow the trigger (HTTP 409, with the
    current state; DICOM callers treat it as a no-op where the table says so)."""


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    trigger: str
    sources: frozenset[S]
    target: S


class StateMachine(Generic[S]):
    """One entity's transitions, keyed by trigger."""

    def __init__(
        self,
        name: str,
        states: type[S],
        initial: S,
        transitions: Mapping[str, tuple[Iterable[S], S]],
    ) -> None:
        self.name = name
        self.states = states
        self.initial = initial
        self.transitions: dict[str, Transition[S]] = {
            trigger: Transition(trigger, frozenset(sources), target)
            for trigger, (sources, target) in transitions.items()
        }

    def sources(self, trigger: str) -> frozenset[S]:
        """The states ``trigger`` may move from (KeyError for an unknown trigger:
        a typo at a call site fails its first test, not silently)."""
        return self.transitions[trigger].sources

    def target(self, trigger: str) -> S:
        return self.transitions[trigger].target

    def allows(self, trigger: str, current: str) -> bool:
        """Whether an entity in ``current`` (enum member or stored value) may take
        ``trigger``."""
        return self.states(current) in self.transitions[trigger].sources

    def require(self, trigger: str, current: str) -> S:
        """The state ``trigger`` leads to from ``current``; TransitionRefused if
        the table does not allow it."""
        transition = self.transitions[trigger]
        state = self.states(current)
        if state not in transition.sources:
            raise TransitionRefused(
                f"{self.name} is {state.value}: cannot {trigger.replace('_', ' ')}",
                current=state.value,
            )
        return transition.target

    def finals(self) -> frozenset[S]:
        """States no trigger leaves."""
        left = {state for t in self.transitions.values() for state in t.sources}
        return frozenset(state for state in self.states if state not in left)


_R = RequestStatus
ORDER: StateMachine[RequestStatus] = StateMachine(
    "order",
    RequestStatus,
    _R.REQUESTED,
    {
        "schedule": ((_R.REQUESTED,), _R.SCHEDULED),
        "reschedule": ((_R.SCHEDULED,), _R.SCHEDULED),
        # an edit keeps the state; it is allowed only while nothing was performed
        "edit_requested": ((_R.REQUESTED,), _R.REQUESTED),
        "edit_scheduled": ((_R.SCHEDULED,), _R.SCHEDULED),
        "mpps_in_progress": ((_R.REQUESTED, _R.SCHEDULED), _R.IN_PROGRESS),
        "first_image": ((_R.REQUESTED, _R.SCHEDULED), _R.IN_PROGRESS),
        "link_study": ((_R.REQUESTED, _R.SCHEDULED), _R.IN_PROGRESS),
        "start": ((_R.SCHEDULED,), _R.IN_PROGRESS),
        # a study linked to a cancelled order with ``force`` brings it back
        "reinstate": ((_R.CANCELLED,), _R.IN_PROGRESS),
        "complete": ((_R.IN_PROGRESS,), _R.PERFORMED),
        "mpps_completed": ((_R.IN_PROGRESS, _R.SCHEDULED), _R.PERFORMED),
        "acquisition_complete": ((_R.REQUESTED, _R.SCHEDULED, _R.IN_PROGRESS), _R.PERFORMED),
        "mpps_discontinued": ((_R.IN_PROGRESS,), _R.DISCONTINUED),
        "cancel": ((_R.REQUESTED, _R.SCHEDULED), _R.CANCELLED),
        # a referring physician may cancel an order they placed only before it is booked
        "cancel_unbooked": ((_R.REQUESTED,), _R.CANCELLED),
    },
)

_M = MetadataStatus
_NOT_REJECTED = tuple(state for state in MetadataStatus if state is not _M.REJECTED)
STUDY_METADATA: StateMachine[MetadataStatus] = StateMachine(
    "study metadata",
    MetadataStatus,
    _M.PENDING,
    {
        "matched": ((_M.PENDING,), _M.MATCHED),
        "unmatched": ((_M.PENDING,), _M.UNMATCHED),
        "conflict": ((_M.PENDING,), _M.CONFLICT),
        "rematch_matched": ((_M.UNMATCHED,), _M.MATCHED),
        "rematch_conflict": ((_M.UNMATCHED,), _M.CONFLICT),
        # an instance of another patient under the study's UID
        "patient_conflict": (_NOT_REJECTED, _M.CONFLICT),
        "link": ((_M.UNMATCHED, _M.CONFLICT), _M.MATCHED),
        "correct": ((_M.MATCHED,), _M.CORRECTED),
        "reject": (_NOT_REJECTED, _M.REJECTED),
    },
)

_S = StudyStatus
STUDY_READING: StateMachine[StudyStatus] = StateMachine(
    "study",
    StudyStatus,
    _S.ACQUIRED,
    {
        "claim_reading": ((_S.ACQUIRED,), _S.READING),
        "release_reading": ((_S.READING,), _S.ACQUIRED),
        # the reading item cancelled (the study became a conflict or was
        # rejected) and nobody has started a report: nobody is reading it
        "reading_cancelled": ((_S.READING,), _S.ACQUIRED),
        "finalize_report": ((_S.ACQUIRED, _S.READING), _S.REPORTED),
    },
)

_C = Completeness
COMPLETENESS: StateMachine[Completeness] = StateMachine(
    "study acquisition",
    Completeness,
    _C.RECEIVING,
    {
        "quiet": ((_C.RECEIVING,), _C.QUIET),
        "stable": ((_C.QUIET,), _C.COMPLETE),
        # MPPS COMPLETED or a storage commitment covering every instance
        "evidence": ((_C.RECEIVING, _C.QUIET), _C.COMPLETE),
        "new_instance": ((_C.QUIET, _C.COMPLETE), _C.RECEIVING),
    },
)

_W = WorklistStatus
# reading, review, critical_comm, acquisition and reconciliation items alike
WORK_ITEM: StateMachine[WorklistStatus] = StateMachine(
    "work item",
    WorklistStatus,
    _W.PENDING,
    {
        "claim": ((_W.PENDING,), _W.CLAIMED),
        "reassign": ((_W.PENDING, _W.CLAIMED), _W.CLAIMED),
        "release": ((_W.CLAIMED,), _W.PENDING),
        "complete": ((_W.PENDING, _W.CLAIMED), _W.COMPLETED),
        "cancel": ((_W.PENDING, _W.CLAIMED), _W.CANCELLED),
    },
)

_P = ReportStatus
REPORT: StateMachine[ReportStatus] = StateMachine(
    "report",
    ReportStatus,
    _P.DRAFT,
    {
        "edit_draft": ((_P.DRAFT,), _P.DRAFT),
        "edit_revised": ((_P.REVISED,), _P.REVISED),
        "submit": ((_P.DRAFT, _P.REVISED), _P.IN_REVIEW),
        # back to the author: a first cycle becomes a draft again, an addendum
        # cycle stays revised (the final text before it is still the signed one)
        "return_first": ((_P.IN_REVIEW,), _P.DRAFT),
        "return_addendum": ((_P.IN_REVIEW,), _P.REVISED),
        "finalize": ((_P.IN_REVIEW,), _P.FINAL),
        "addendum": ((_P.FINAL,), _P.REVISED),
    },
)

_X = MppsStatus
MPPS: StateMachine[MppsStatus] = StateMachine(
    "performed procedure step",
    MppsStatus,
    _X.IN_PROGRESS,
    {
        "update": ((_X.IN_PROGRESS,), _X.IN_PROGRESS),
        "complete": ((_X.IN_PROGRESS,), _X.COMPLETED),
        "discontinue": ((_X.IN_PROGRESS,), _X.DISCONTINUED),
    },
)

# every table, for tests and the docs
MACHINES: tuple[StateMachine[Any], ...] = (
    ORDER,
    STUDY_METADATA,
    STUDY_READING,
    COMPLETENESS,
    WORK_ITEM,
    REPORT,
    MPPS,
)
