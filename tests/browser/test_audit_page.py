"""The auditor's page in a real browser (issue 18): an auditor follows one
patient's and one study's story through the trail (an order booked through
the API, images imported, a report written and signed), opens an event's
whole record, and downloads the CSV export with the session's cookie; a
radiologist gets the error page."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, ImagingRequest
from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Role
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.results import IngestPolicy
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.test_orders import order_body
from tests.browser.conftest import Page
from tests.builders import add_user, claimed_study, signed_report

pytestmark = pytest.mark.browser


@pytest.fixture
def window() -> tuple[int, int]:
    """The journey at the desktop size; the layout at both sizes is the
    turnaround page's check (the same stylesheet rules for wide tables)."""
    return (1280, 800)


def _workflow(api: ApiServer, tmp_path: Path) -> tuple[str, str]:
    """A patient's order (API), images (import), a signed report (services).
    Returns (patient ID, the reported study's UID)."""
    radiologist = add_user(api.db, Role.RADIOLOGIST)
    reviewer = add_user(api.db, Role.RADIOLOGIST)
    study = claimed_study(api.db, radiologist)
    with api.db.read() as session:
        patient_id = session.scalar(
            select(ImagingRequest.patient_id).where(ImagingRequest.id == study.order_id)
        )
    assert patient_id
    booked = api.client("scheduler").post(
        "/api/orders",
        json=order_body(patient_id=patient_id),
    )
    assert booked.status_code == 201, booked.text
    source = get_testdata_file("CT_small.dcm", download=False)
    assert source is not None
    ds = pydicom.dcmread(source)
    ds.PatientID = patient_id
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = FileStore(api.settings.data_dir, fsync=api.settings.fsync)
    summary = import_files(api.db, store, [path], policy=IngestPolicy(), actor=SystemActor.IMPORT)
    assert summary.ok, summary.describe()
    signed_report(api.db, study, radiologist, reviewer)
    with api.db.read() as session:
        study_uid = session.scalar(
            select(AuditEvent.study_instance_uid).where(
                AuditEvent.action == "report_finalized", AuditEvent.patient_id == patient_id
            )
        )
    assert study_uid
    return patient_id, study_uid


def _actions(page: Page) -> list[str]:
    return [
        row.find_element("css selector", "td:nth-child(2) > div > div").text
        for row in page.driver.find_elements("css selector", "#audit-rows tr")
    ]


def _loaded(page: Page, expected: str) -> None:
    page.wait_for(lambda _: expected in page.find("#audit-summary").text)


def test_an_auditor_follows_a_patient_and_a_study_and_exports_the_trail(
    page: Page, api: ApiServer, tmp_path: Path
) -> None:
    patient_id, study_uid = _workflow(api, tmp_path)
    with api.db.read() as session:
        story = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.patient_id == patient_id)
            .order_by(AuditEvent.timestamp, AuditEvent.id)
        ).all()
    # booked, the images arrived (unmatched: no order of theirs had that study), signed
    assert {"order_created", "study_unmatched", "report_finalized"} <= set(story)
    auditor = api.user("auditor")
    page.sign_in(auditor)
    page.driver.find_element("link text", "Audit trail").click()
    page.wait_for_path("/audit")
    assert page.driver.title == "Audit trail - dicom-node"
    page.wait_for(lambda _: page.driver.find_elements("css selector", "#audit-rows tr"))

    # the patient's whole story, oldest first, typed into the filters
    page.find("#f-patient").send_keys(patient_id)
    Select(page.find("#f-order")).select_by_value("oldest")
    page.find("#f-patient").send_keys(Keys.ENTER)
    _loaded(page, f"of {len(story)}.")
    assert _actions(page) == list(story)
    page.check_accessibility()
    page.screenshot("patient-trail")

    # one study: its button in a row narrows the trail to it
    page.driver.find_element("css selector", f"button[aria-label^='Study {study_uid}:']").click()
    page.wait_for(lambda _: page.find("#f-study").get_attribute("value") == study_uid)
    with api.db.read() as session:
        of_study = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.study_instance_uid == study_uid)
            .order_by(AuditEvent.timestamp, AuditEvent.id)
        ).all()
    _loaded(page, f"of {len(of_study)}.")
    assert _actions(page) == list(of_study)
    assert "report_finalized" in of_study and "order_created" not in of_study
    assert f"study_instance_uid={study_uid}" in page.driver.current_url

    # narrowed to an action as well
    action = page.find("#f-action")
    action.send_keys("report_finalized", Keys.ENTER)
    _loaded(page, "of 1.")
    assert _actions(page) == ["report_finalized"]

    # the event's whole record, as a definition list, not JSON
    page.find("#audit-rows tr button.button").click()
    dialog = page.wait_for(lambda _: page.find("#event-dialog[open]"))
    terms = [dt.text for dt in dialog.find_elements("css selector", "dl.event-record > dt")]
    assert terms[:4] == ["Event number", "Time", "Event type code", "Action"]
    record = dialog.text
    assert study_uid in record and "report_finalized" in record and "{" not in record
    page.check_accessibility()
    page.screenshot("event-details")
    dialog.send_keys(Keys.ESCAPE)
    page.wait_for(lambda _: not page.driver.find_elements("css selector", "#event-dialog[open]"))
    # the keyboard is back where it was: on the row's button, which opens it again
    focused = page.driver.switch_to.active_element
    assert (focused.get_attribute("aria-label") or "").startswith("Details of event ")
    focused.send_keys(Keys.ENTER)
    page.wait_for(lambda _: page.driver.find_elements("css selector", "#event-dialog[open]"))
    page.find("#event-dialog-close").send_keys(Keys.ENTER)
    page.wait_for(lambda _: not page.driver.find_elements("css selector", "#event-dialog[open]"))

    # the export of the patient's trail, downloaded with the page's own cookie
    page.find("#clear-filters").click()
    Select(page.find("#f-order")).select_by_value("oldest")
    page.find("#f-patient").send_keys(patient_id, Keys.ENTER)
    _loaded(page, f"of {len(story)}.")
    link = page.find("#audit-export")
    href = link.get_attribute("href")
    assert href and "/api/audit-events.csv?" in href and f"patient_id={patient_id}" in href
    assert link.get_attribute("download") is not None
    answer = page.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(async r => done([r.status,
          r.headers.get("content-disposition"), await r.text()]));
        """,
        href,
    )
    status, disposition, text = answer
    assert status == 200 and disposition.startswith('attachment; filename="audit-events-')
    rows = list(csv.DictReader(io.StringIO(text)))
    # oldest first, the patient's events as they were when the export started
    assert [row["action"] for row in rows][: len(story)] == list(story)
    created = next(row for row in rows if row["action"] == "order_created")
    assert created["patient_id"] == patient_id
    # the export itself is in the trail, as the auditor's read (110101)
    with api.db.read() as session:
        exports = session.scalars(
            select(AuditEvent).where(AuditEvent.actor == auditor, AuditEvent.event_code == "110101")
        ).all()
    assert any(event.details["filters"].get("format") == "csv" for event in exports)


def test_the_audit_trail_export_defuses_formulas_in_the_browser_download(
    page: Page, api: ApiServer
) -> None:
    scheduler = api.client("scheduler")
    reason_order = scheduler.post("/api/orders", json=order_body(patient_id="FORMULA1"))
    assert reason_order.status_code == 201
    order_id = reason_order.json()["id"]
    cancelled = scheduler.post(f"/api/orders/{order_id}/cancel", json={"reason": "=HYPERLINK(1)"})
    assert cancelled.status_code == 200, cancelled.text
    page.sign_in(api.user("auditor"))
    page.open("/audit?patient_id=FORMULA1&order=oldest")
    _loaded(page, "of ")
    href = page.wait_for(lambda _: page.find("#audit-export").get_attribute("href"))
    text = page.driver.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done);", href
    )
    reasons = [row["reason"] for row in csv.DictReader(io.StringIO(text)) if row["reason"]]
    assert reasons == ["'=HYPERLINK(1)"]


def test_a_radiologist_gets_the_error_page_not_the_trail(page: Page, api: ApiServer) -> None:
    page.expected_errors.append(r"/audit - Failed to load resource: .* status of 403")
    page.sign_in(api.user("radiologist"))
    page.open("/audit")
    alert = page.wait_for(lambda _: page.driver.find_elements("css selector", "[role=alert]"))
    assert "not open to your role" in alert[0].text and "audit:read" in alert[0].text
    assert page.driver.title == "Error 403 - dicom-node"
    assert not page.driver.find_elements("css selector", "#audit-rows")
    page.check_accessibility()
