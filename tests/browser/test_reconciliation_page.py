"""The reconciliation queue in a real browser (issue 18): studies that arrived
without an order are linked to an order, released to reading, or get an order
made from them, each with a reason, from the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from selenium.webdriver.remote.webelement import WebElement

from dicom_node.services.workflow.mpps import MppsCreate, ScheduledStepRef, create_mpps
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.test_reconciliation import arrive, scheduled_order
from tests.browser.conftest import Page

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("window", [(1280, 800)], indirect=True)]


def row(page: Page, study_id: int) -> list[WebElement]:
    return page.driver.find_elements(
        "css selector", f'#reconciliation-table tr[data-study-id="{study_id}"]'
    )


def resolve(page: Page, study_id: int, action: str, reason: str) -> None:
    row(page, study_id)[0].find_element("css selector", "button").click()
    page.wait_for(lambda _: page.find("#resolve-panel").is_displayed())
    assert page.active_id() == "resolve-heading"  # focus moves to the panel
    page.find(f'#resolve-form input[name="action"][value="{action}"]').click()
    page.find("#resolve-reason").send_keys(reason)


def success(page: Page, text: str) -> None:
    page.wait_for(
        lambda _: any(
            text in e.text
            for e in page.driver.find_elements("css selector", "#notices .message.success")
        )
    )


def test_a_scheduler_links_releases_and_makes_an_order_from_the_queue(
    page: Page, api: ApiServer, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    scheduler = api.client("scheduler")
    order = scheduled_order(api, scheduler, patient_id="RC-LINK")
    to_link = arrive(api, store, patient_id="RC-LINK", patient_name="LINK^LARA")
    to_release = arrive(api, store, patient_id="RC-REL", patient_name="RELEASE^RON")
    to_order = arrive(api, store, patient_id="RC-NEW", patient_name="NEW^NINA")

    page.sign_in(scheduler.username)  # type: ignore[attr-defined]
    page.open("/reconciliation")
    page.wait_for_path("/reconciliation")
    page.wait_for(lambda _: "of 3 to reconcile" in page.find("#reconciliation-summary").text)
    assert "LINK, LARA" in row(page, to_link)[0].text and "no order" in row(page, to_link)[0].text
    page.check_accessibility()
    page.screenshot("queue")

    # link: the open order of the same patient is offered, and chosen
    resolve(page, to_link, "link", "booked under the right patient, accession missing")
    page.wait_for(lambda _: page.find("#link-order").get_attribute("value") == str(order["id"]))
    # only the chosen action's fields show
    assert page.find("#link-order").is_displayed()
    assert not page.find("#resolve-priority").is_displayed()
    assert not page.find("#create-force").is_displayed()
    page.check_accessibility()
    page.screenshot("link")
    page.find("#resolve-submit").click()
    success(page, f"linked to order {order['id']}")
    page.wait_for(lambda _: not row(page, to_link))
    linked = scheduler.get(f"/api/orders/{order['id']}").json()
    assert linked["status"] in ("in_progress", "performed")

    # release: onto the reading worklist, still in the queue
    resolve(page, to_release, "release", "trauma scan, order to follow")
    assert page.find("#resolve-submit").text == "Release to reading"
    assert page.find("#resolve-priority").is_displayed()
    assert not page.find("#link-order").is_displayed()
    assert not page.find("#resolve-center").is_displayed()
    page.find("#resolve-submit").click()
    success(page, "released to reading")
    page.wait_for(lambda _: "released to reading" in row(page, to_release)[0].text)

    # create an order from the study
    resolve(page, to_order, "create", "walk-in exam without an order")
    page.find("#resolve-submit").click()
    success(page, "was created from the study")
    page.wait_for(lambda _: not row(page, to_order))
    made = scheduler.get("/api/orders", params={"patient_id": "RC-NEW"}).json()["items"]
    assert len(made) == 1 and made[0]["patient_name"] == "NEW^NINA"
    assert "of 1 to reconcile" in page.find("#reconciliation-summary").text
    page.screenshot("after")


def test_a_reason_is_required_and_a_refusal_is_a_message(
    page: Page, api: ApiServer, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    study = arrive(api, store, patient_id="RC-X", patient_name="EXAMPLE^XAVIER")
    page.expected_errors.append(r"/api/reconciliation/\d+/link - Failed to load resource: .* 404")
    page.sign_in(api.user("scheduler"))
    page.open("/reconciliation")
    page.wait_for(lambda _: row(page, study))
    row(page, study)[0].find_element("css selector", "button").click()
    page.wait_for(lambda _: page.find("#resolve-panel").is_displayed())
    page.find("#resolve-submit").click()
    page.wait_for(lambda _: "Give the reason" in page.find("#notices").text)
    page.find("#resolve-reason").send_keys("typed the wrong number")
    page.find("#link-order-id").send_keys("999999")
    page.find("#resolve-submit").click()
    # the API's 404 as a sentence, never JSON
    page.wait_for(
        lambda _: page.driver.find_elements(
            "css selector",
            "#notices .message.error + .message.error, #notices .message.error:nth-child(2)",
        )
    )
    text = page.find("#notices").text
    assert "{" not in text and "order" in text.lower()
    assert row(page, study)  # still to reconcile


def test_an_unscheduled_exam_without_images_is_closed_with_a_reason(
    page: Page, api: ApiServer
) -> None:
    # an exam the modality started (MPPS) with no order, whose images never came
    create_mpps(
        api.db,
        MppsCreate(
            sop_instance_uid=generate_uid(),
            status="IN PROGRESS",
            scheduled_steps=[
                ScheduledStepRef(study_instance_uid=generate_uid(), accession_number="")
            ],
            station_ae_title="CT_ROOM_9",
        ),
        actor="CT_ROOM_9",
    )
    scheduler = api.client("scheduler")
    [entry] = scheduler.get("/api/reconciliation").json()["items"]
    page.sign_in(scheduler.username)  # type: ignore[attr-defined]
    page.open("/reconciliation")
    item = f'#reconciliation-table tr[data-item-id="{entry["worklist_item_id"]}"]'
    page.wait_for(lambda _: page.driver.find_elements("css selector", item))
    assert "unscheduled exam" in page.find(item).text
    page.find(f"{item} button").click()
    page.wait_for(lambda _: page.find("#resolve-panel").is_displayed())
    assert page.find("#resolve-heading").text == "Close the unscheduled exam"
    assert "CT_ROOM_9" in page.find("#resolve-facts").text
    # no study: no link, release or new order; an outcome instead
    assert not page.find("#action-choices").is_displayed()
    assert not page.find("#link-order").is_displayed()
    assert page.find("#item-outcome").is_displayed()
    page.check_accessibility()
    page.find("#resolve-reason").send_keys("phantom test scan")
    page.find("#resolve-submit").click()
    success(page, "The unscheduled exam is closed (cancelled).")
    page.wait_for(lambda _: "Nothing to reconcile." in page.find("#reconciliation-summary").text)
    assert scheduler.get("/api/reconciliation").json()["total"] == 0
