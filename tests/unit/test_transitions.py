"""The workflow's state machines (domain/transitions.py) against docs/domain.md.

Pure: no database, no server. The expected tables below are transcribed by hand
from docs/domain.md#state-machines, not computed from the module: for every
machine, every trigger and every state, the test says whether the trigger is
allowed and where it leads. A trigger added to a table without a row here, or a
row changed on one side only, fails.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest

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
from dicom_node.domain.transitions import (
    COMPLETENESS,
    MACHINES,
    MPPS,
    ORDER,
    REPORT,
    STUDY_METADATA,
    STUDY_READING,
    WORK_ITEM,
    StateMachine,
    TransitionRefused,
)

# trigger: (the states it may move from, space-separated; the state it leads to)
Expected = dict[str, tuple[str, str]]

# docs/domain.md#order-states
ORDER_ROWS: Expected = {
    "schedule": ("requested", "scheduled"),
    "reschedule": ("scheduled", "scheduled"),
    "edit_requested": ("requested", "requested"),
    "edit_scheduled": ("scheduled", "scheduled"),
    "mpps_in_progress": ("requested scheduled", "in_progress"),
    "first_image": ("requested scheduled", "in_progress"),
    "link_study": ("requested scheduled", "in_progress"),
    "start": ("scheduled", "in_progress"),
    "reinstate": ("cancelled", "in_progress"),
    "complete": ("in_progress", "performed"),
    "mpps_completed": ("in_progress scheduled", "performed"),
    "acquisition_complete": ("requested scheduled in_progress", "performed"),
    "mpps_discontinued": ("in_progress", "discontinued"),
    "cancel": ("requested scheduled", "cancelled"),
    # a referring physician cancels their own order only while requested
    "cancel_unbooked": ("requested", "cancelled"),
}

# docs/domain.md#study-metadata-states
STUDY_METADATA_ROWS: Expected = {
    "matched": ("pending", "matched"),
    "unmatched": ("pending", "unmatched"),
    "conflict": ("pending", "conflict"),
    "rematch_matched": ("unmatched", "matched"),
    "rematch_conflict": ("unmatched", "conflict"),
    "patient_conflict": ("pending matched unmatched conflict corrected", "conflict"),
    "link": ("unmatched conflict", "matched"),
    "correct": ("matched", "corrected"),
    "reject": ("pending matched unmatched conflict corrected", "rejected"),
}

# docs/domain.md#study-reading-states
STUDY_READING_ROWS: Expected = {
    "claim_reading": ("acquired", "reading"),
    "release_reading": ("reading", "acquired"),
    # the reading item cancelled (conflict, rejection) with no report
    "reading_cancelled": ("reading", "acquired"),
    "finalize_report": ("acquired reading", "reported"),
}

# docs/domain.md#study-completeness-states
COMPLETENESS_ROWS: Expected = {
    "quiet": ("receiving", "quiet"),
    "stable": ("quiet", "complete"),
    "evidence": ("receiving quiet", "complete"),
    "new_instance": ("quiet complete", "receiving"),
}

# docs/domain.md#worklist-item-states and #reconciliation-item-states
WORK_ITEM_ROWS: Expected = {
    "claim": ("pending", "claimed"),
    "reassign": ("pending claimed", "claimed"),
    "release": ("claimed", "pending"),
    "complete": ("pending claimed", "completed"),
    "cancel": ("pending claimed", "cancelled"),
}

# docs/domain.md#report-states
REPORT_ROWS: Expected = {
    "edit_draft": ("draft", "draft"),
    "edit_revised": ("revised", "revised"),
    "submit": ("draft revised", "in_review"),
    "return_first": ("in_review", "draft"),
    "return_addendum": ("in_review", "revised"),
    "finalize": ("in_review", "final"),
    "addendum": ("final", "revised"),
}

# docs/domain.md#mpps-step-states
MPPS_ROWS: Expected = {
    "update": ("IN PROGRESS", "IN PROGRESS"),
    "complete": ("IN PROGRESS", "COMPLETED"),
    "discontinue": ("IN PROGRESS", "DISCONTINUED"),
}

# machine, its states, its initial state, its rows, the states nothing leaves
CASES: list[tuple[StateMachine[Any], type[StrEnum], str, Expected, set[str]]] = [
    # performed and discontinued are over for good; cancelled is left only by
    # the reinstatement
    (ORDER, RequestStatus, "requested", ORDER_ROWS, {"performed", "discontinued"}),
    (STUDY_METADATA, MetadataStatus, "pending", STUDY_METADATA_ROWS, {"rejected"}),
    # queued is in the enum but never set (nothing enters or leaves it)
    (STUDY_READING, StudyStatus, "acquired", STUDY_READING_ROWS, {"queued", "reported"}),
    # a late instance re-opens a complete study
    (COMPLETENESS, Completeness, "receiving", COMPLETENESS_ROWS, set()),
    (WORK_ITEM, WorklistStatus, "pending", WORK_ITEM_ROWS, {"completed", "cancelled"}),
    # a final report is left by an addendum
    (REPORT, ReportStatus, "draft", REPORT_ROWS, set()),
    (MPPS, MppsStatus, "IN PROGRESS", MPPS_ROWS, {"COMPLETED", "DISCONTINUED"}),
]
IDS = [case[0].name for case in CASES]


def _sources(row: tuple[str, str], states: type[StrEnum]) -> set[str]:
    # "IN PROGRESS" is one MPPS state with a space: split on known values
    text = row[0]
    return {state.value for state in states if f" {state.value} " in f" {text} "}


def test_every_machine_is_checked_here() -> None:
    assert {machine.name for machine in MACHINES} == set(IDS)


@pytest.mark.parametrize(("machine", "states", "initial", "rows", "finals"), CASES, ids=IDS)
def test_the_machine_has_exactly_the_documented_triggers(
    machine: StateMachine[Any],
    states: type[StrEnum],
    initial: str,
    rows: Expected,
    finals: set[str],
) -> None:
    assert set(machine.transitions) == set(rows)
    assert machine.states is states
    assert machine.initial.value == initial


@pytest.mark.parametrize(("machine", "states", "initial", "rows", "finals"), CASES, ids=IDS)
def test_every_trigger_from_every_state_is_allowed_or_refused_as_documented(
    machine: StateMachine[Any],
    states: type[StrEnum],
    initial: str,
    rows: Expected,
    finals: set[str],
) -> None:
    for trigger, row in rows.items():
        allowed = _sources(row, states)
        assert allowed, f"{machine.name} {trigger}: the expected row names no state"
        assert {state.value for state in machine.sources(trigger)} == allowed, trigger
        assert machine.target(trigger).value == row[1], trigger
        for state in states:
            if state.value in allowed:
                assert machine.allows(trigger, state.value), (trigger, state.value)
                # stored values and enum members alike
                assert machine.allows(trigger, state)
                assert machine.require(trigger, state.value).value == row[1]
            else:
                assert not machine.allows(trigger, state.value), (trigger, state.value)
                with pytest.raises(TransitionRefused) as refused:
                    machine.require(trigger, state.value)
                assert refused.value.current == state.value
                assert state.value in str(refused.value)


@pytest.mark.parametrize(("machine", "states", "initial", "rows", "finals"), CASES, ids=IDS)
def test_the_final_states_are_those_the_docs_name(
    machine: StateMachine[Any],
    states: type[StrEnum],
    initial: str,
    rows: Expected,
    finals: set[str],
) -> None:
    assert {state.value for state in machine.finals()} == finals


def test_a_refusal_is_a_conflict_naming_the_current_state() -> None:
    with pytest.raises(Conflict) as refused:
        ORDER.require("start", "requested")
    assert isinstance(refused.value, TransitionRefused)
    assert refused.value.current == "requested"
    assert str(refused.value) == "order is requested: cannot start"


def test_an_unknown_trigger_or_state_fails_loudly() -> None:
    with pytest.raises(KeyError):
        ORDER.allows("no_show", "scheduled")
    with pytest.raises(KeyError):
        WORK_ITEM.sources("claim_reading")
    with pytest.raises(ValueError, match="not a valid StudyStatus"):
        STUDY_READING.allows("claim_reading", "read")


def test_cancelled_orders_come_back_only_by_reinstatement() -> None:
    left_by = {
        trigger for trigger in ORDER.transitions if ORDER.allows(trigger, RequestStatus.CANCELLED)
    }
    assert left_by == {"reinstate"}


def test_a_rejected_study_takes_no_metadata_trigger_at_all() -> None:
    assert not any(
        STUDY_METADATA.allows(trigger, MetadataStatus.REJECTED)
        for trigger in STUDY_METADATA.transitions
    )
