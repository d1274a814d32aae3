"""The scheduler's pages in a real browser (issue 18): an order booked through
the form for a referring physician, the duplicate warning and its override,
schedule and cancel, and the scheduled steps a modality's worklist query
answers. The journeys run at the desktop size; the layout check at both."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from dicom_node.node import Node
from tests.api.conftest import ApiServer
from tests.browser.conftest import Page
from tests.builders import user_id
from tests.support import findscu_w

pytestmark = pytest.mark.browser

DESKTOP = pytest.mark.parametrize("window", [(1280, 800)], indirect=True)


def facilities(api: ApiServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """An imaging center with one CT, through the API as an admin sets them up."""
    admin = api.client("admin")
    center = admin.post("/api/imaging-centers", json={"name": "Main hospital", "code": "MAIN"})
    assert center.status_code == 201, center.text
    device = admin.post(
        "/api/modalities",
        json={
            "imaging_center_id": center.json()["id"],
            "name": "CT room 1",
            "type": "CT",
            "dicom_ae_title": "CT_ROOM_1",
            "station_name": "CTR1",
        },
    )
    assert device.status_code == 201, device.text
    return center.json(), device.json()


def messages(page: Page, kind: str) -> list[str]:
    return [e.text for e in page.driver.find_elements("css selector", f"#notices .message.{kind}")]


def wait_for_message(page: Page, kind: str, text: str) -> None:
    page.wait_for(lambda _: any(text in m for m in messages(page, kind)))


def set_value(page: Page, element: WebElement, value: str) -> None:
    """A date or datetime-local input's value, as the browser's picker sets it
    (typing into one depends on the browser's locale)."""
    page.driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
        element,
        value,
    )


def fill_order(page: Page, *, patient_id: str, referrer: str, center: str) -> None:
    page.find("#patient_id").send_keys(patient_id)
    page.find("#patient_name").send_keys("DOE^JANE")
    set_value(page, page.find("#patient_birth_date"), "1980-01-31")
    Select(page.find("#patient_sex")).select_by_visible_text("Female")
    page.find("#study_description").send_keys("CT CHEST")
    Select(page.find("#requested_modality")).select_by_value("CT")
    Select(page.find("#priority")).select_by_value("urgent")
    page.wait_for(lambda _: len(Select(page.find("#imaging_center_id")).options) > 1)
    Select(page.find("#imaging_center_id")).select_by_visible_text(center)
    page.find("#clinical_indication").send_keys("persistent cough")
    Select(page.find("#referring_physician_id")).select_by_visible_text(referrer)


def opened_order_id(page: Page) -> int:
    page.wait_for(
        lambda driver: "/orders/" in driver.current_url and "new" not in driver.current_url
    )
    order_id = int(page.driver.current_url.rsplit("/", 1)[1])
    page.wait_for_path(f"/orders/{order_id}")
    return order_id


def fact(page: Page, term: str) -> str:
    """The order page's value for ``term``, read at once (the script redraws the list)."""
    value = page.driver.execute_script(
        "const dt = [...document.querySelectorAll('#order-facts dt')]"
        "  .find((e) => e.textContent.trim() === arguments[0]);"
        "return dt ? dt.nextElementSibling.textContent.trim() : '';",
        term,
    )
    return str(value)


def orders_of(client: httpx.Client, patient_id: str) -> list[dict[str, Any]]:
    answer = client.get("/api/orders", params={"patient_id": patient_id, "sort": "id"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@DESKTOP
def test_a_scheduler_books_overrides_a_duplicate_schedules_and_cancels(
    page: Page,
    api: ApiServer,
    make_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    center, device = facilities(api)
    referrer = api.user("referring_physician", display_name="Dr Rita Referrer")
    scheduler = api.user("scheduler")
    check = api.client("admin")
    page.sign_in(scheduler)
    page.open("/orders")
    page.wait_for_path("/orders")
    page.wait_for(lambda _: "No orders match" in page.find("#orders-summary").text)
    page.check_accessibility()

    # a new order through the form, for a referring physician from the user list
    page.find("#new-order").click()
    page.wait_for_path("/orders/new")
    fill_order(
        page,
        patient_id="PAT-B1",
        referrer="Dr Rita Referrer",
        center=f"{center['name']} ({center['code']})",
    )
    page.check_accessibility()
    page.screenshot("new-order")
    page.find("#create-order").click()
    first = opened_order_id(page)
    wait_for_message(page, "success", f"Order {first} created.")
    page.wait_for(lambda _: fact(page, "Status") == "requested")
    assert fact(page, "Referring physician") == "Dr Rita Referrer"
    assert fact(page, "Imaging center") == center["name"]
    [booked] = orders_of(check, "PAT-B1")
    assert booked["id"] == first
    assert booked["referring_physician_id"] == user_id(api, referrer)
    assert booked["patient_birth_date"] == "19800131" and booked["priority"] == "urgent"
    assert booked["clinical_indication"] == "persistent cough"

    # the same order again: the warning names the open order; the override needs a reason
    page.open("/orders/new")
    page.wait_for_path("/orders/new")
    fill_order(
        page,
        patient_id="PAT-B1",
        referrer="Dr Rita Referrer",
        center=f"{center['name']} ({center['code']})",
    )
    # the API's 409 is a console entry of Chromium's; the page shows it as a warning
    page.expected_errors.append(r"/api/orders - Failed to load resource: .* 409")
    page.find("#create-order").click()
    warning = page.wait_for(
        lambda _: page.find("#duplicate-warning").is_displayed() and page.find("#duplicate-warning")
    )
    assert f"Order {first}" in warning.text and "DOE, JANE" in warning.text
    assert (
        warning.find_element("css selector", "a").get_attribute("href").endswith(f"/orders/{first}")
    )
    assert page.active_id() == "force_reason"
    page.check_accessibility()
    page.screenshot("duplicate-warning")
    page.find("#force-create").click()  # no reason yet: refused in the page
    wait_for_message(page, "error", "Give the reason")
    assert len(orders_of(check, "PAT-B1")) == 1
    page.find("#force_reason").send_keys("second series requested by the referrer")
    page.find("#force-create").click()
    second = opened_order_id(page)
    assert second != first
    assert [o["id"] for o in orders_of(check, "PAT-B1")] == [first, second]

    # schedule the first order from its page
    page.open(f"/orders/{first}")
    page.wait_for(lambda _: page.find("#schedule-section").is_displayed())
    page.wait_for(lambda _: len(Select(page.find("#schedule-device")).options) > 1)
    Select(page.find("#schedule-device")).select_by_value(str(device["id"]))
    when = (datetime.now() + timedelta(hours=1)).replace(second=0, microsecond=0)
    set_value(page, page.find("#schedule-when"), when.strftime("%Y-%m-%dT%H:%M"))
    page.check_accessibility()
    page.find("#schedule-button").click()
    wait_for_message(page, "success", f"Order {first} scheduled")
    page.wait_for(lambda _: fact(page, "Status") == "scheduled")
    scheduled = check.get(f"/api/orders/{first}").json()
    assert scheduled["status"] == "scheduled" and scheduled["accession_number"]
    assert datetime.fromisoformat(scheduled["scheduled_at"]) == when.astimezone()
    assert fact(page, "Accession number") == scheduled["accession_number"]
    page.screenshot("scheduled")
    page.open(f"/orders/{first}")  # booked: the form offers to move it, from its slot
    page.wait_for(
        lambda _: (
            page.find("#schedule-when").get_attribute("value") == when.strftime("%Y-%m-%dT%H:%M")
        )
    )
    assert page.find("#schedule-heading").text == "Reschedule"

    # cancel the second, with a reason
    page.open(f"/orders/{second}")
    page.wait_for(lambda _: page.find("#cancel-section").is_displayed())
    page.find("#cancel-button").click()
    wait_for_message(page, "error", "Give the reason for cancelling")
    page.find("#cancel-reason").send_keys("booked twice")
    page.find("#cancel-button").click()
    page.wait_for(lambda _: fact(page, "Status") == "cancelled")
    assert not page.find("#cancel-section").is_displayed()
    cancelled = check.get(f"/api/orders/{second}").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "booked twice"

    # the list: filtered by status, the scheduled order only
    page.open("/orders")
    page.wait_for(lambda _: "of 2" in page.find("#orders-summary").text)
    Select(page.find("#filter-status")).select_by_value("scheduled")
    page.find("#filter-patient").send_keys("PAT-B1")
    page.find("#order-filters button[type=submit]").click()
    page.wait_for(lambda _: "of 1." in page.find("#orders-summary").text)
    rows = page.driver.find_elements("css selector", "#orders-table tbody tr")
    assert len(rows) == 1 and f"Order {first}" in rows[0].text and "scheduled" in rows[0].text
    page.screenshot("orders")

    # the scheduled steps: what the CT's worklist query answers for that day
    page.open("/scheduled-steps")
    page.wait_for(lambda _: len(Select(page.find("#step-station")).options) > 1)
    Select(page.find("#step-modality")).select_by_value("CT")
    Select(page.find("#step-station")).select_by_value("CT_ROOM_1")
    day = when.astimezone().strftime("%Y-%m-%d")  # the node's local day (same machine)
    set_value(page, page.find("#step-from"), day)
    set_value(page, page.find("#step-to"), day)
    page.find("#step-filters button[type=submit]").click()
    page.wait_for(lambda _: "1 scheduled step." in page.find("#steps-summary").text)
    [row] = page.driver.find_elements("css selector", "#steps-table tbody tr")
    cells = [c.text for c in row.find_elements("css selector", "td")]
    mwl = check.get(
        "/api/scheduled-steps",
        params={
            "modality": "CT",
            "station_ae_title": "CT_ROOM_1",
            "date_from": day,
            "date_to": day,
        },
    ).json()["items"]
    [step] = mwl
    assert step["order_id"] == first
    assert cells[1:11] == [
        "CT_ROOM_1",
        "CTR1",
        "CT",
        scheduled["accession_number"],
        step["attributes"]["RequestedProcedureID"],
        step["step"]["ScheduledProcedureStepID"],
        "CT CHEST",
        "DOE, JANE",
        "PAT-B1",
        "urgent",
    ]
    assert cells[0]  # the start, in the browser's zone
    assert row.find_element("css selector", "time").get_attribute("datetime")
    page.check_accessibility()
    page.screenshot("scheduled-steps")

    # and the modality's own query (DCMTK findscu -W) answers the same step
    node: Node = make_node()
    sps = "ScheduledProcedureStepSequence[0]"
    [answer] = findscu_w(
        node,
        tmp_path / "mwl",
        "AccessionNumber",
        "RequestedProcedureID",
        "PatientID",
        f"{sps}.Modality=CT",
        f"{sps}.ScheduledStationAETitle=CT_ROOM_1",
        f"{sps}.ScheduledProcedureStepStartDate={day.replace('-', '')}",
        f"{sps}.ScheduledProcedureStepID",
        calling="CT_ROOM_1",
    )
    assert answer.AccessionNumber == scheduled["accession_number"]
    assert answer.RequestedProcedureID == step["attributes"]["RequestedProcedureID"]
    assert answer.PatientID == "PAT-B1"
    assert (
        answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
        == step["step"]["ScheduledProcedureStepID"]
    )


def test_the_pages_fit_the_window_without_sideways_scrolling(page: Page, api: ApiServer) -> None:
    facilities(api)
    scheduler = api.client("scheduler")
    for n in range(3):
        created = scheduler.post(
            "/api/orders",
            json={
                "patient_id": f"LAYOUT{n}",
                "patient_name": "VERYLONGFAMILYNAMEFORLAYOUT^WITH^MANY^PARTS",
                "requested_modality": "CT",
                "study_description": "CT ABDOMEN AND PELVIS WITH CONTRAST, LONG NAME",
            },
        )
        assert created.status_code == 201, created.text
    page.sign_in(api.user("admin"))
    for path in ("/orders", "/orders/new", "/orders/1", "/scheduled-steps", "/reconciliation"):
        page.open(path)
        page.wait_for_path(path)
        summary = {
            "/orders": "#orders-summary",
            "/scheduled-steps": "#steps-summary",
            "/reconciliation": "#reconciliation-summary",
        }.get(path)
        if summary:  # the table is filled
            page.wait_for(
                lambda _, css=summary: page.find(css).text not in ("", "Loading…", "Querying…")
            )
        if path == "/orders/1":
            page.wait_for(lambda _: page.find("#order-facts").is_displayed())
        overflow = page.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        page.check_accessibility()
        page.screenshot(path.strip("/").replace("/", "-"))


@DESKTOP
def test_the_list_pages_through_the_orders_by_keyboard(page: Page, api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    for n in range(27):
        created = scheduler.post(
            "/api/orders",
            json={
                "patient_id": f"PAGE{n:02}",
                "patient_name": "PAGER^PAT",
                "requested_modality": "MR",
                "study_description": "MR KNEE",
            },
        )
        assert created.status_code == 201, created.text
    page.sign_in(api.user("technologist"))  # reads orders, books none
    page.open("/orders")
    page.wait_for(lambda _: "Orders 1 to 25 of 27." in page.find("#orders-summary").text)
    assert not page.driver.find_elements("css selector", "#new-order")
    assert page.find("#previous-page").get_attribute("disabled")
    # Tab to Next page (the table region and its links come first), Enter
    for _ in range(60):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        if page.active_id() == "next-page":
            break
    else:
        raise AssertionError("Tab never reached Next page")
    ActionChains(page.driver).send_keys(Keys.ENTER).perform()
    page.wait_for(lambda _: "Orders 26 to 27 of 27." in page.find("#orders-summary").text)
    assert len(page.driver.find_elements("css selector", "#orders-table tbody tr")) == 2
    assert page.find("#next-page").get_attribute("disabled")
    page.find("#previous-page").click()
    page.wait_for(lambda _: "Orders 1 to 25 of 27." in page.find("#orders-summary").text)
