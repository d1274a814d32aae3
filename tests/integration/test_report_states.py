"""The report state machine at the service level, without a server, on both
databases: every transition the REPORT table allows succeeds through the
service and leads where the table says; every other one is refused with
Conflict naming the report's current state (HTTP 409), and changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.models import Report
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import Conflict
from dicom_node.domain.permissions import Principal
from dicom_node.domain.transitions import REPORT
from dicom_node.services.reporting.reports import edit_report, return_report
from tests.builders import (
    DEADLINE_MINUTES,
    add_user,
    amend,
    claimed_study,
    finalize,
    new_report,
    submit,
)

# stage -> (the report's status there, how it is reached after create): the
# same status in the first and in an addendum cycle are different stages
# (return leads to draft in one, to revised in the other)
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "draft": ("draft", ()),
    "in_review": ("in_review", ("submit",)),
    "final": ("final", ("submit", "finalize")),
    "revised": ("revised", ("submit", "finalize", "addendum")),
    "in_review_again": ("in_review", ("submit", "finalize", "addendum", "submit")),
    "final_again": ("final", ("submit", "finalize", "addendum", "submit", "finalize")),
}

# action -> {stage: the report's status afterwards}; every stage not listed is
# refused. Written out by hand, and checked against the table below.
ALLOWED: dict[str, dict[str, str]] = {
    "edit": {"draft": "draft", "revised": "revised"},
    "submit": {"draft": "in_review", "revised": "in_review"},
    "return": {"in_review": "draft", "in_review_again": "revised"},
    "finalize": {"in_review": "final", "in_review_again": "final"},
    "addendum": {"final": "revised", "final_again": "revised"},
}

# the service action -> the REPORT table triggers it fires
TRIGGERS = {
    "edit": ("edit_draft", "edit_revised"),
    "submit": ("submit",),
    "return": ("return_first", "return_addendum"),
    "finalize": ("finalize",),
    "addendum": ("addendum",),
}


def _edit(session: Session, report_id: int, author: Principal, reviewer: Principal) -> None:
    edit_report(
        session,
        report_id=report_id,
        principal=author,
        deadline_minutes=DEADLINE_MINUTES,
        findings="Edited.",
    )


def _return(session: Session, report_id: int, author: Principal, reviewer: Principal) -> None:
    return_report(
        session,
        report_id=report_id,
        comment="Please clarify.",
        principal=reviewer,
        allow_self_review=False,
    )


Action = Callable[[Session, int, Principal, Principal], None]
ACTIONS: dict[str, Action] = {
    "edit": _edit,
    "submit": lambda session, report_id, author, reviewer: submit(session, report_id, author),
    "return": _return,
    "finalize": lambda session, report_id, author, reviewer: finalize(session, report_id, reviewer),
    # by the author: the current author stays the same in every stage
    "addendum": lambda session, report_id, author, reviewer: amend(session, report_id, author),
}


def test_the_expectations_here_are_the_report_table() -> None:
    for action, triggers in TRIGGERS.items():
        table = {state.value for trigger in triggers for state in REPORT.sources(trigger)}
        assert {STAGES[stage][0] for stage in ALLOWED[action]} == table, action
        targets = {REPORT.target(trigger).value for trigger in triggers}
        assert set(ALLOWED[action].values()) <= targets, action
    assert {state.value for state in REPORT.states} == {status for status, _ in STAGES.values()}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_report_action_in_each_state(db: Database, action: str) -> None:
    author = add_user(db, Role.RADIOLOGIST)
    reviewer = add_user(db, Role.RADIOLOGIST)
    for stage, (status, steps) in STAGES.items():
        report_id = new_report(db, claimed_study(db, author), author)
        for step in steps:
            with db.unit_of_work() as session:
                ACTIONS[step](session, report_id, author, reviewer)
        before = _report(db, report_id)
        assert before[0] == status, stage

        expected = ALLOWED[action].get(stage)
        if expected is None:
            with pytest.raises(Conflict) as refused, db.unit_of_work() as session:
                ACTIONS[action](session, report_id, author, reviewer)
            assert refused.value.current == before[0], (action, stage)
            assert before[0] in str(refused.value), (action, stage)
            assert _report(db, report_id) == before, (action, stage)
        else:
            with db.unit_of_work() as session:
                ACTIONS[action](session, report_id, author, reviewer)
            after = _report(db, report_id)
            assert after[0] == expected, (action, stage)


def _report(db: Database, report_id: int) -> tuple[str, int, str]:
    with db.read() as session:
        report = session.get(Report, report_id)
        assert report is not None
        return report.status, report.version, report.findings
