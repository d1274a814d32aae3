"""Every role's whole journey through the reading room, in one node and real
browsers (issue 18, item 6), on SQLite and on PostgreSQL.

A scheduler books an order for a referring physician through the orders page
and schedules it; the images arrive from DCMTK's storescu with the order's
accession number; a radiologist, whose worklist is open, sees the study appear
without reloading, claims it, opens the viewer, scrolls through the series,
drafts the report beside the images and submits it; a second radiologist signs
it; the referring physician, whose page is open, gets the notice, reads the
report and prints it; the auditor finds every step in the audit trail. One
browser per person, each with its own session, all on the node's own port
(the node serves DICOM and HTTP as `dicom-node serve` does). Each page is kept
as a screenshot; any console error or request to another host fails the test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.node import Node
from tests.api.conftest import ApiServer
from tests.browser.conftest import BrowserFactory, Page
from tests.browser.test_orders_pages import facilities, fact, fill_order, opened_order_id, set_value
from tests.dicomfiles import ct_dataset
from tests.support import dcmtk_env, dcmtk_tool

pytestmark = pytest.mark.browser

SLICES = 5
PATIENT_ID = "JOURNEY-1"
# the study is complete one quiet second after its last image
FAST_STABILITY = {"study_stable_seconds": 1, "stability_check_interval_seconds": 0.5}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The one journey that runs on both databases."""
    return str(request.param)


@pytest.fixture
def window() -> tuple[int, int]:
    return (1280, 800)


def _store_series(tmp_path: Path, dicom_port: int, order: dict[str, Any]) -> None:
    """The order's images, sent as a modality does: DCMTK's storescu."""
    folder = tmp_path / "modality"
    folder.mkdir()
    series = f"{order['study_instance_uid']}.1"
    for number in range(1, SLICES + 1):
        ct_dataset(
            study_uid=order["study_instance_uid"],
            series_uid=series,
            patient_id=order["patient_id"],
            patient_name=order["patient_name"],
            birth_date=order["patient_birth_date"],
            accession=order["accession_number"],
            instance_number=number,
            pixel_seed=number,
        ).save_as(folder / f"{number}.dcm", enforce_file_format=True)
    result = subprocess.run(
        [dcmtk_tool("storescu"), "-aec", "DICOM_NODE", "127.0.0.1", str(dicom_port)]
        + [str(path) for path in sorted(folder.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )
    assert result.returncode == 0, result.stderr


def _worklist_row(page: Page, accession: str) -> tuple[str, str] | None:
    """The worklist row of ``accession``: its item id and its text, read at once
    (the live updates redraw the rows)."""
    found: list[str] | None = page.driver.execute_script(
        "const tr = [...document.querySelectorAll('#worklist-rows tr[data-item-id]')]"
        "  .find((tr) => tr.textContent.includes(arguments[0]));"
        "return tr ? [tr.dataset.itemId, tr.textContent] : null;",
        accession,
    )
    return (found[0], found[1]) if found else None


def _image_number(page: Page) -> str:
    text = page.find('.viewport[data-viewport="1"] .overlay-image').text
    return str(text.split(" · ")[0])


def _report_state(page: Page, text: str) -> None:
    page.wait_for(lambda d: text in d.find_element("id", "report-state").text)


def test_a_study_from_order_to_signed_report_to_the_audit_trail(
    make_node: Callable[..., Node],
    browsers: BrowserFactory,
    tmp_path: Path,
) -> None:
    node = make_node(**FAST_STABILITY)
    assert node.db is not None
    people = ApiServer(f"http://127.0.0.1:{node.http_port}", node.db, node.settings)
    try:
        _journey(node, people, browsers, tmp_path)
    finally:
        for client in people.clients:
            client.close()


def _journey(node: Node, people: ApiServer, browsers: BrowserFactory, tmp_path: Path) -> None:
    center, device = facilities(people)
    referrer = people.user("referring_physician", display_name="Dr Rita Referrer")
    scheduler = people.user("scheduler")
    reader = people.user("radiologist", display_name="Dr Ada Reader")
    signer = people.user("radiologist", display_name="Dr Sam Signer")
    auditor = people.user("auditor")
    check = people.client("admin")

    # the scheduler books the order for the referrer and schedules it on the CT
    booking = browsers(people.base_url, name="scheduler")
    booking.sign_in(scheduler)
    booking.driver.find_element("link text", "Orders").click()
    booking.wait_for_path("/orders")
    booking.find("#new-order").click()
    booking.wait_for_path("/orders/new")
    fill_order(
        booking,
        patient_id=PATIENT_ID,
        referrer="Dr Rita Referrer",
        center=f"{center['name']} ({center['code']})",
    )
    booking.find("#create-order").click()
    order_id = opened_order_id(booking)
    booking.wait_for(lambda _: booking.find("#schedule-section").is_displayed())
    booking.wait_for(lambda _: len(Select(booking.find("#schedule-device")).options) > 1)
    Select(booking.find("#schedule-device")).select_by_value(str(device["id"]))
    when = (datetime.now() + timedelta(minutes=30)).replace(second=0, microsecond=0)
    set_value(booking, booking.find("#schedule-when"), when.strftime("%Y-%m-%dT%H:%M"))
    booking.find("#schedule-button").click()
    booking.wait_for(lambda _: fact(booking, "Status") == "scheduled")
    booking.screenshot("order-scheduled")
    order = check.get(f"/api/orders/{order_id}").json()
    accession = order["accession_number"]
    assert accession and order["referring_physician_id"]

    # the referrer's page is open before anything is signed
    referring = browsers(people.base_url, name="referrer")
    referring.sign_in(referrer)
    referring.driver.find_element("link text", "My referrals").click()
    referring.wait_for_path("/referrals")
    referring.wait_for(lambda _: str(order_id) in referring.find("#referral-orders").text)
    signed_rows = "#referral-reports tr[data-report-id]"
    assert not referring.driver.find_elements("css selector", signed_rows)

    # the radiologist's worklist is open when the images arrive
    reading = browsers(people.base_url, name="radiologist")
    reading.sign_in(reader)
    reading.driver.find_element("link text", "Worklist").click()
    reading.wait_for_path("/worklist")
    reading.wait_for(lambda _: reading.find("#live-status").text == "Live updates: on")
    assert _worklist_row(reading, accession) is None
    _store_series(tmp_path, node.dicom_port, order)
    item_id, text = reading.wait_for(lambda _: _worklist_row(reading, accession))
    assert PATIENT_ID in text and "Pending" in text
    reading.screenshot("worklist-new-study")
    row = f'#worklist-rows tr[data-item-id="{item_id}"]'
    reading.driver.find_element(
        "xpath", f"//tr[@data-item-id='{item_id}']//button[normalize-space()='Claim']"
    ).click()
    reading.wait_for(lambda _: "Claimed" in (_worklist_row(reading, accession) or ("", ""))[1])
    reading.find(f"{row} a").click()
    uid = order["study_instance_uid"]
    reading.wait_for_path(f"/viewer/{uid}")

    # the viewer: the series drawn, scrolled with the keys
    reading.wait_for(lambda _: _image_number(reading).startswith(f"Image 1 / {SLICES}"))
    reading.find('.viewport[data-viewport="1"] canvas').click()
    ActionChains(reading.driver).send_keys(Keys.ARROW_DOWN).perform()
    reading.wait_for(lambda _: _image_number(reading).startswith(f"Image 2 / {SLICES}"))
    reading.screenshot("viewer")

    # the report, drafted beside the images (autosaved) and submitted
    _report_state(reading, "No report")
    reading.find("#report-create").click()
    reading.wait_for(
        lambda d: d.find_element("id", "report-findings").get_attribute("readonly") is None
    )
    reading.find("#report-findings").send_keys("No focal lung lesion.")
    reading.find("#report-impression").send_keys("Normal chest CT.")
    reading.wait_for(
        lambda d: d.find_element("id", "report-save-status").text.startswith("Saved at")
    )
    reading.find("#report-submit").click()
    _report_state(reading, "In review")
    reading.screenshot("report-submitted")

    # a second radiologist signs it in their own viewer
    signing = browsers(people.base_url, name="signer")
    signing.sign_in(signer)
    signing.open(f"/viewer/{uid}")
    _report_state(signing, "In review")
    signing.find("#report-sign").click()
    _report_state(signing, "Signed")
    signing.screenshot("report-signed")

    # the referrer is told in the page, without reloading, and prints the report
    notice = referring.wait_for(
        lambda d: next(
            (e for e in d.find_elements("css selector", "#notices .message") if e.text), None
        )
    )
    assert accession in notice.text
    signed = referring.wait_for(lambda d: d.find_elements("css selector", signed_rows))
    report_id = signed[0].get_attribute("data-report-id")
    referring.screenshot("referrals-notice")
    referring.open(f"/reports/{report_id}/print")
    referring.wait_for_path(f"/reports/{report_id}/print")
    assert referring.find("#print-accession").text == accession
    assert referring.find("#print-findings").text == "No focal lung lesion."
    referring.screenshot("printable-report")

    # the auditor finds every step of the patient's story, oldest first
    with people.db.read() as session:
        story = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.patient_id == PATIENT_ID)
            .order_by(AuditEvent.timestamp, AuditEvent.id)
        ).all()
    auditing = browsers(people.base_url, name="auditor")
    auditing.sign_in(auditor)
    auditing.driver.find_element("link text", "Audit trail").click()
    auditing.wait_for_path("/audit")
    auditing.find("#f-patient").send_keys(PATIENT_ID)
    Select(auditing.find("#f-order")).select_by_value("oldest")
    auditing.find("#f-patient").send_keys(Keys.ENTER)
    auditing.wait_for(lambda _: f"of {len(story)}." in auditing.find("#audit-summary").text)
    shown = [
        row.find_element("css selector", "td:nth-child(2) > div > div").text
        for row in auditing.driver.find_elements("css selector", "#audit-rows tr")
    ]
    assert shown == list(story)
    # booked, scheduled, stored, claimed, drafted, submitted, signed, read by the referrer
    for step in (
        "order_created",
        "order_scheduled",
        "report_created",
        "report_submitted",
        "report_finalized",
    ):
        assert step in shown, (step, shown)
    auditing.screenshot("audit-trail")
