"""Turnaround metrics on a hand-built dataset whose medians, p90s and SLA shares are known.

Default SLAs: stat 60, urgent 720, routine 1440 minutes; critical deadline 60.
p90 is nearest-rank (the smallest value with >= 90 % at or below it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.db.models import (
    CriticalResultCommunication,
    DicomStudy,
    ImagingCenter,
    ImagingRequest,
    Patient,
    Report,
    ReportVersion,
    User,
)
from tests.api.conftest import ApiServer

T = datetime(2026, 2, 10, 8, 0, tzinfo=UTC)
WINDOW = {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


@dataclass
class Exam:
    """One order; times in minutes after T (exam times) or absolute (created)."""

    name: str
    priority: str
    modality: str | None
    center: str | None
    created: datetime = T
    started: float | None = None
    completed: float | None = None
    # minutes after completion; None: no report (or not yet)
    preliminary: float | None = None
    final: float | None = None
    radiologist: str | None = None
    status: str = "performed"
    study_modality: str | None = None
    # minutes after completion at which a later signature overwrote signed_at
    signed_again: float | None = None
    # (identified, communicated) minutes after T
    critical: tuple[float, float | None] | None = None


EXAMS = [
    Exam("S1", "stat", "CT", "NORTH", started=30, completed=60, preliminary=70, final=100,
         radiologist="r1", critical=(150, 195)),
    Exam("S2", "stat", "CT", "NORTH", started=50, completed=80, preliminary=20, final=70,
         radiologist="r1", signed_again=500),
    Exam("S3", "stat", "CT", "NORTH", started=90, completed=120, preliminary=10, final=200,
         radiologist="r1", critical=(400, None)),
    Exam("R1", "routine", "MR", "SOUTH", started=600, completed=660),
    Exam("R2", "routine", "MR", "SOUTH", started=2000, completed=2060, preliminary=100,
         final=1000, radiologist="r2", critical=(3000, 3090)),
    # created before the window: only its exam metrics count
    Exam("X", "urgent", None, "NORTH", created=datetime(2026, 1, 20, tzinfo=UTC),
         started=24 * 60 - 120, completed=24 * 60, preliminary=60, final=120,
         radiologist="r1", study_modality="CT"),
    # not performed yet: open for order->exam
    Exam("N", "urgent", None, None),
    # cancelled: left out everywhere
    Exam("Z", "stat", "CT", "NORTH", started=5, completed=6, status="cancelled"),
    # created after the window: left out
    Exam("L", "stat", "CT", "NORTH", created=datetime(2026, 3, 2, tzinfo=UTC)),
]  # fmt: skip


def build(api: ApiServer) -> dict[str, str]:
    """Insert EXAMS through the ORM; returns radiologist label -> username."""
    usernames = {"r1": api.user("radiologist"), "r2": api.user("radiologist")}
    with api.db.unit_of_work() as session:
        user_ids = dict(
            session.execute(
                select(User.username, User.id).where(User.username.in_(usernames.values()))
            ).all()
        )
        centers = {code: ImagingCenter(name=code.title(), code=code) for code in ("NORTH", "SOUTH")}
        session.add_all(centers.values())
        session.flush()
        for number, exam in enumerate(EXAMS):
            order = ImagingRequest(
                patient_id=f"P{number}",
                patient_name="TEST^PATIENT",
                patient_name_folded="test^patient",
                priority=exam.priority,
                status=exam.status,
                requested_modality=exam.modality,
                imaging_center_id=centers[exam.center].id if exam.center else None,
                created_at=exam.created,
                exam_started_at=T + minutes(exam.started) if exam.started is not None else None,
                exam_completed_at=T + minutes(exam.completed)
                if exam.completed is not None
                else None,
            )
            session.add(order)
            session.flush()
            patient = Patient(patient_id=f"P{number}")
            session.add(patient)
            session.flush()
            study = DicomStudy(
                study_instance_uid=f"1.2.826.0.1.{number + 1}",
                patient_pk=patient.id,
                imaging_request_id=order.id,
                modality_type=exam.study_modality or exam.modality,
            )
            session.add(study)
            session.flush()
            if exam.radiologist is None:
                continue
            done = T + minutes(exam.completed or 0)
            final_at = done + minutes(exam.final) if exam.final is not None else None
            report = Report(
                dicom_study_id=study.id,
                radiologist_id=user_ids[usernames[exam.radiologist]],
                status="final" if final_at else "in_review",
                created_at=done,
                preliminary_at=done + minutes(exam.preliminary)
                if exam.preliminary is not None
                else None,
                signed_at=done + minutes(exam.signed_again)
                if exam.signed_again is not None
                else final_at,
            )
            session.add(report)
            session.flush()
            if exam.signed_again is not None and final_at is not None:
                session.add(
                    ReportVersion(
                        report_id=report.id,
                        version=1,
                        kind="final",
                        status="final",
                        findings="",
                        impression="",
                        author_id=report.radiologist_id,
                        created_at=final_at,
                    )
                )
            if exam.critical is not None:
                identified, communicated = exam.critical
                session.add(
                    CriticalResultCommunication(
                        report_id=report.id,
                        finding="finding",
                        identified_at=T + minutes(identified),
                        deadline_at=T + minutes(identified + 60),
                        communicated_at=T + minutes(communicated)
                        if communicated is not None
                        else None,
                    )
                )
    return usernames


def _metrics(group: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        m["metric"]: (
            m["count"],
            m["open"],
            m["median_minutes"],
            m["p90_minutes"],
            m["within_sla_percent"],
        )
        for m in group["metrics"]
    }


def _groups(api: ApiServer, group_by: str) -> dict[str | None, dict[str, tuple[Any, ...]]]:
    response = api.client("admin").get("/api/turnaround", params={**WINDOW, "group_by": group_by})
    assert response.status_code == 200, response.text
    return {group["group"]: _metrics(group) for group in response.json()["groups"]}


def test_turnaround_over_the_whole_window(api: ApiServer) -> None:
    build(api)
    response = api.client("radiologist").get("/api/turnaround", params=WINDOW)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"].startswith("2026-02-01T00:00:00") and body["group_by"] == "none"
    assert body["sla_minutes"] == {"stat": 60, "urgent": 720, "routine": 1440}
    assert body["critical_deadline_minutes"] == 60
    (group,) = body["groups"]
    assert group["group"] is None
    # (count, open, median, p90, % within SLA)
    assert _metrics(group) == {
        # S1 30, S2 50, S3 90, R1 600, R2 2000; N open; X created before the window
        "order_to_exam": (5, 1, 90.0, 2000.0, 60.0),
        # S1 70, S2 20, S3 10, R2 100, X 60 (urgent: within); R1 open
        "exam_to_preliminary": (5, 1, 60.0, 100.0, 80.0),
        # S1 100, S2 70 (its first final, not the later signature), S3 200, R2 1000, X 120
        "exam_to_final": (5, 1, 120.0, 1000.0, 40.0),
        # S1 160, S2 150, S3 320, R2 3060; R1 and N open
        "order_to_final": (4, 2, 240.0, 3060.0, 0.0),
        # S1 45 (within 60), R2 90; S3 not communicated yet
        "critical_to_communicated": (2, 1, 67.5, 90.0, 50.0),
    }


def test_turnaround_by_priority(api: ApiServer) -> None:
    build(api)
    groups = _groups(api, "priority")
    assert list(groups) == ["stat", "urgent", "routine"]
    assert groups["stat"]["order_to_exam"] == (3, 0, 50.0, 90.0, 66.67)
    assert groups["stat"]["exam_to_final"] == (3, 0, 100.0, 200.0, 0.0)
    assert groups["urgent"]["order_to_exam"] == (0, 1, None, None, None)
    assert groups["urgent"]["exam_to_preliminary"] == (1, 0, 60.0, 60.0, 100.0)
    assert groups["routine"]["order_to_exam"] == (2, 0, 1300.0, 2000.0, 50.0)
    assert groups["routine"]["critical_to_communicated"] == (1, 0, 90.0, 90.0, 0.0)


def test_turnaround_by_radiologist_center_and_modality(api: ApiServer) -> None:
    usernames = build(api)
    by_radiologist = _groups(api, "radiologist")
    r1, r2 = usernames["r1"], usernames["r2"]
    assert set(by_radiologist) == {r1, r2, None}
    # S1 100, S2 70, S3 200, X 120
    assert by_radiologist[r1]["exam_to_final"] == (4, 0, 110.0, 200.0, 25.0)
    assert by_radiologist[r2]["exam_to_final"] == (1, 0, 1000.0, 1000.0, 100.0)
    # R1 and N have no report: no radiologist
    assert by_radiologist[None]["order_to_exam"] == (1, 1, 600.0, 600.0, 100.0)

    by_center = _groups(api, "center")
    assert list(by_center) == ["NORTH", "SOUTH", None]
    assert by_center["NORTH"]["exam_to_preliminary"] == (4, 0, 40.0, 70.0, 75.0)
    assert by_center["SOUTH"]["exam_to_preliminary"] == (1, 1, 100.0, 100.0, 100.0)

    by_modality = _groups(api, "modality")
    # X ordered no modality: its study's modality counts
    assert by_modality["CT"]["exam_to_preliminary"] == (4, 0, 40.0, 70.0, 75.0)
    assert by_modality["MR"]["order_to_exam"] == (2, 0, 1300.0, 2000.0, 50.0)
    assert by_modality[None]["order_to_exam"] == (0, 1, None, None, None)


def test_turnaround_window_edges_are_inclusive_then_exclusive(api: ApiServer) -> None:
    build(api)
    client = api.client("scheduler")
    # the window starts exactly at T: S1..R2 and N created at T count
    at_t = client.get(
        "/api/turnaround", params={"from": T.isoformat(), "to": "2026-02-11T00:00:00Z"}
    ).json()
    assert _metrics(at_t["groups"][0])["order_to_exam"][:2] == (5, 1)
    # and ends exactly at T: none of them
    before_t = client.get(
        "/api/turnaround", params={"from": "2026-02-09T00:00:00Z", "to": T.isoformat()}
    ).json()
    assert _metrics(before_t["groups"][0])["order_to_exam"][:2] == (0, 0)


def test_turnaround_defaults_to_the_last_30_days(api: ApiServer) -> None:
    client = api.client("auditor")
    body = client.get("/api/turnaround").json()
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=30)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=5)
    only_from = client.get("/api/turnaround", params={"from": "2026-01-01T00:00:00Z"}).json()
    assert only_from["to"].startswith("2026-01-31T00:00:00")
    (group,) = body["groups"]
    assert all(m["count"] == 0 and m["median_minutes"] is None for m in group["metrics"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-01-03T00:00:00Z"}, "to"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"group_by": "weekday"}, "query.group_by"),
        ({"from": "9999-12-31T00:00:00Z"}, "from"),
    ],
)
def test_turnaround_refuses_bad_ranges_with_422(
    api: ApiServer, params: dict[str, str], field: str
) -> None:
    response = api.client("admin").get("/api/turnaround", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_a_366_day_range_is_allowed(api: ApiServer) -> None:
    response = api.client("admin").get(
        "/api/turnaround", params={"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("role", ["technologist", "referring_physician"])
def test_turnaround_is_not_for_every_role(api: ApiServer, role: str) -> None:
    assert api.client(role).get("/api/turnaround").status_code == 403


def test_a_communication_recorded_before_its_identification_is_left_out(api: ApiServer) -> None:
    build(api)
    with api.db.unit_of_work() as session:
        report_id = session.scalar(
            select(CriticalResultCommunication.report_id).where(
                CriticalResultCommunication.identified_at == T + minutes(150)
            )
        )
        assert report_id is not None
        # data from before such entries were refused: told 30 minutes "before" it was seen
        session.add(
            CriticalResultCommunication(
                report_id=report_id,
                finding="second finding",
                identified_at=T + minutes(300),
                deadline_at=T + minutes(360),
                communicated_at=T + minutes(270),
            )
        )

    (group,) = _groups(api, "none").values()

    # unchanged: S1 45, R2 90; S3 open; the negative -30 is not a turnaround
    assert group["critical_to_communicated"] == (2, 1, 67.5, 90.0, 50.0)
