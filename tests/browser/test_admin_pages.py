"""The administration pages in a real browser (issue 18): an admin manages a
user (who then signs in, and after deactivation cannot), an imaging center and
a modality; reads the node's status; sends a study to a real peer (a
pynetdicom storage SCP on the loopback) that receives every instance. A
scheduler gets the error page. Each page passes axe and fits both window sizes
(one layout test at both; the journeys at the desktop size)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from api.pages.admin import FACILITIES_URL, SEND_URL, STATUS_URL, USERS_URL
from api.pages.paths import ADMIN_URL
from dicom_node.services.operations.backup import create_backup
from dicom_node.settings import Settings
from dicom_node.storage import FileStore
from tests.api.conftest import PASSWORD, ApiServer
from tests.api.test_sending import DOWN, PEER, peers_of, stored_study
from tests.browser.conftest import Page
from tests.builders import Destination
from tests.conftest import node_settings

pytestmark = pytest.mark.browser

NEW_PASSWORD = "another horse battery"


@pytest.fixture
def window(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The journeys at the desktop size; the layout test asks for both."""
    size: tuple[int, int] = getattr(request, "param", (1280, 800))
    return size


@pytest.fixture
def destination() -> Iterator[Destination]:
    peer = Destination(None, ae_title=PEER)
    yield peer
    peer.stop()


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, destination: Destination) -> Settings:
    return node_settings(db_url, tmp_path / "data", peers=peers_of(destination))


def _text(page: Page, css: str) -> str:
    return str(page.find(css).text)


def _message(page: Page, kind: str, contains: str) -> None:
    """Wait for a message of ``kind`` in the live region that says ``contains``."""
    page.wait_for(
        lambda driver: any(
            contains in element.text
            for element in driver.find_elements("css selector", f"#notices .message.{kind}")
        )
    )


def _row(page: Page, username: str) -> str:
    return f'#users tr[data-username="{username}"]'


def _can_sign_in(api: ApiServer, username: str, password: str) -> bool:
    answer = httpx.post(
        f"{api.base_url}/api/auth/token", data={"username": username, "password": password}
    )
    return answer.status_code == 200


def test_an_admin_creates_a_user_who_signs_in_then_changes_resets_and_deactivates_them(
    page: Page, api: ApiServer
) -> None:
    page.expected_errors.append(r"/api/users - Failed to load resource: .* status of 422")
    page.expected_errors.append(r"/sign-in - Failed to load resource: .* status of 401")
    admin = api.user("admin")
    viewer = {"name": "ohif", "role": "radiologist", "description": "OHIF, reading room 2"}
    assert api.client("admin").post("/api/service-accounts", json=viewer).status_code == 201
    page.sign_in(admin)
    page.open(ADMIN_URL)
    page.driver.find_element("link text", "Users").click()
    page.wait_for_path(USERS_URL)
    page.find("#new-username").send_keys("nurse.kim")
    page.find("#new-display-name").send_keys("Kim Nurse")
    Select(page.find("#new-role")).select_by_value("technologist")
    # the API's password policy, shown as its message
    page.find("#new-password").send_keys("short" + Keys.ENTER)  # Enter submits: keyboard only
    _message(page, "error", "password")
    page.find("#new-password").send_keys(Keys.CONTROL, "a")
    page.find("#new-password").send_keys(PASSWORD + Keys.ENTER)
    _message(page, "success", "Account nurse.kim created.")
    page.wait_for(lambda driver: driver.find_elements("css selector", _row(page, "nurse.kim")))
    # service accounts: listed, read-only
    page.wait_for(lambda driver: "OHIF, reading room 2" in _text(page, "#service-accounts"))
    accounts = page.find("#service-accounts")
    assert not page.driver.find_elements("css selector", _row(page, "ohif"))
    assert not accounts.find_elements("css selector", "button, input, select")
    page.screenshot("users")

    # the new user signs in with the initial password, through the form
    page.sign_in("nurse.kim")
    assert "Kim Nurse" in _text(page, "h1")
    page.sign_in(admin)
    page.open(USERS_URL)
    row = _row(page, "nurse.kim")
    page.wait_for(lambda driver: driver.find_elements("css selector", row))

    Select(page.find(f"{row} select")).select_by_value("scheduler")
    page.find(f"{row} button[aria-label='Change the role of nurse.kim']").click()
    _message(page, "success", "nurse.kim is now scheduler.")

    page.wait_for(lambda driver: driver.find_elements("css selector", f"{row} details"))
    page.find(f"{row} details summary").click()
    page.find(f"{row} details input[type=password]").send_keys(NEW_PASSWORD + Keys.ENTER)
    _message(page, "success", "New password set for nurse.kim")
    assert not _can_sign_in(api, "nurse.kim", PASSWORD)
    assert _can_sign_in(api, "nurse.kim", NEW_PASSWORD)

    page.find(f"{row} button[aria-label='Deactivate nurse.kim']").click()
    _message(page, "success", "nurse.kim is deactivated")
    page.wait_for(lambda driver: "Deactivated" in driver.find_element("css selector", row).text)
    admin_client = api.client("admin")
    [user] = admin_client.get("/api/users", params={"q": "nurse.kim"}).json()["items"]
    assert (user["role"], user["is_active"]) == ("scheduler", False)

    # deactivated: the form refuses them
    page.driver.delete_all_cookies()
    page.open("/sign-in")
    page.find("input#username").send_keys("nurse.kim")
    page.find("input#password").send_keys(NEW_PASSWORD + Keys.ENTER)
    page.wait_for(lambda driver: driver.find_elements("css selector", ".message.error"))
    assert page.driver.current_url.endswith("/sign-in")


def test_an_admin_adds_an_imaging_center_and_a_modality(page: Page, api: ApiServer) -> None:
    page.expected_errors.append(r"/api/modalities - Failed to load resource: .* status of 422")
    page.sign_in(api.user("admin"))
    page.open(FACILITIES_URL)
    page.wait_for(lambda driver: "No imaging centers yet." in driver.page_source)
    page.find("#center-name").send_keys("North Clinic")
    page.find("#center-code").send_keys("NORTH")
    page.find("#center-location").send_keys("Building 2")
    page.find("#center-form button[type=submit]").click()
    _message(page, "success", "Imaging center North Clinic added.")
    page.wait_for(lambda driver: "NORTH" in driver.find_element("id", "centers").text)

    page.wait_for(lambda driver: Select(driver.find_element("id", "modality-center")).options)
    page.find("#modality-name").send_keys("CT scanner 1")
    page.find("#modality-type").send_keys("CT")
    page.find("#modality-ae").send_keys("CT\\NORTH")  # no backslash in an AE title
    page.find("#modality-form button[type=submit]").click()
    _message(page, "error", "dicom_ae_title")  # the API's refusal, as a sentence
    page.find("#modality-ae").clear()
    page.find("#modality-ae").send_keys("CT_NORTH_1")
    page.find("#modality-station").send_keys("CTN1")
    page.find("#modality-form button[type=submit]").click()
    _message(page, "success", "Modality CT scanner 1 added.")
    page.wait_for(lambda driver: "CT_NORTH_1" in driver.find_element("id", "modalities").text)

    # edit: the form takes the row's values, saves the change
    page.find("#modalities button[aria-label='Edit modality CT scanner 1']").click()
    assert page.active_id() == "modality-center"
    Select(page.find("#modality-status")).select_by_value("maintenance")
    page.find("#modality-form button[type=submit]").click()
    _message(page, "success", "Modality CT scanner 1 saved.")
    page.wait_for(lambda driver: "maintenance" in driver.find_element("id", "modalities").text)
    page.screenshot("facilities")
    [modality] = api.client("admin").get("/api/modalities").json()["items"]
    [center] = api.client("admin").get("/api/imaging-centers").json()["items"]
    assert (modality["dicom_ae_title"], modality["status"], modality["imaging_center_id"]) == (
        "CT_NORTH_1",
        "maintenance",
        center["id"],
    )


def test_the_status_page_shows_associations_disk_and_the_last_backup(
    page: Page, api: ApiServer, tmp_path: Path
) -> None:
    create_backup(
        database_url=api.settings.database_url,
        store=FileStore(api.settings.data_dir, fsync=False),
        destination=tmp_path / "backup",
        fsync=False,
    )
    page.sign_in(api.user("admin"))
    page.open(STATUS_URL)
    page.wait_for(lambda driver: "Open now" in driver.find_element("id", "associations").text)
    assert "Image store: free" in _text(page, "#disk")
    backup = page.find("#backup")
    assert "Last backup" in backup.text and "success" in backup.text
    when = backup.find_element("css selector", "time[data-local]")
    assert when.get_attribute("datetime") and when.text and "T" not in when.text
    assert "Database" in _text(page, "#health")

    # refreshed: the page asks again within a few seconds
    def reads() -> int:
        page.gather()
        return sum(1 for url in page.requests if url.endswith("/api/node-status"))

    page.wait_for(lambda _driver: reads() >= 2)
    page.screenshot("status")


def test_an_admin_sends_a_study_and_the_peer_receives_every_instance(
    page: Page, api: ApiServer, destination: Destination, tmp_path: Path
) -> None:
    page.expected_errors.append(r"/send - Failed to load resource: .* status of 502")
    _, uids = stored_study(api, tmp_path)
    page.sign_in(api.user("admin"))
    page.open(SEND_URL)
    page.wait_for(lambda driver: len(Select(driver.find_element("id", "peer")).options) == 2)
    page.find("#search-value").send_keys("NO-SUCH-ACCESSION" + Keys.ENTER)
    page.wait_for(lambda driver: "No study matches." in driver.find_element("id", "studies").text)
    Select(page.find("#search-key")).select_by_value("PatientID")
    page.find("#search-value").clear()
    page.find("#search-value").send_keys("TX1" + Keys.ENTER)
    button = "#studies button"
    page.wait_for(lambda driver: driver.find_elements("css selector", button))
    found = _text(page, "#studies tbody")
    assert "TX1" in found and "2004-08-26" in found  # CT_small's StudyDate, as a date

    # a peer that is down: the API's sentence, nothing sent
    Select(page.find("#peer")).select_by_value(DOWN)
    page.find(button).click()
    _message(page, "error", f"{DOWN}: destination unreachable; nothing was sent")

    Select(page.find("#peer")).select_by_value(PEER)
    page.find(button).click()
    _message(page, "success", f"Sent: {PEER} stored all 3 instances of the study.")
    assert set(destination.received) == uids
    page.screenshot("send")


def test_a_scheduler_gets_the_error_page_for_the_administration(page: Page, api: ApiServer) -> None:
    page.expected_errors.append(r"/admin.* - Failed to load resource: .* status of 403")
    page.sign_in(api.user("scheduler"))
    assert not page.driver.find_elements("link text", "Administration")
    for path in (ADMIN_URL, USERS_URL, STATUS_URL, SEND_URL):
        page.open(path)
        page.wait_for(lambda driver: driver.find_elements("css selector", "main h1"))
        assert _text(page, "main h1") == "Not open to your role"
        assert "role scheduler may not" in _text(page, ".message.error")
    page.screenshot("refused")


@pytest.mark.parametrize("window", [(1280, 800), (768, 1024)], indirect=True)
def test_every_admin_page_passes_axe_and_fits_the_window(
    page: Page, api: ApiServer, tmp_path: Path
) -> None:
    stored_study(api, tmp_path, ["CT_small.dcm"])
    admin = api.client("admin")
    center = admin.post("/api/imaging-centers", json={"name": "Main", "code": "MAIN"}).json()
    admin.post(
        "/api/modalities",
        json={
            "imaging_center_id": center["id"],
            "name": "MR 1",
            "type": "MR",
            "dicom_ae_title": "MR1",
        },
    )
    page.sign_in(api.user("admin"))
    loaded = {
        ADMIN_URL: lambda driver: driver.find_elements("css selector", ".admin-sections a"),
        USERS_URL: lambda driver: driver.find_elements("css selector", "#users tr[data-username]"),
        FACILITIES_URL: lambda driver: "MR1" in driver.find_element("id", "modalities").text,
        STATUS_URL: lambda driver: "Open now" in driver.find_element("id", "associations").text,
        SEND_URL: lambda driver: len(Select(driver.find_element("id", "peer")).options) == 2,
    }
    for path, ready in loaded.items():
        page.open(path)
        page.wait_for(ready)
        if path == SEND_URL:  # with a result row, the widest this page gets
            Select(page.find("#search-key")).select_by_value("PatientID")
            page.find("#search-value").send_keys("TX1" + Keys.ENTER)
            page.wait_for(lambda driver: driver.find_elements("css selector", "#studies button"))
        page.check_accessibility()
        overflow = page.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        page.screenshot(path.strip("/").replace("/", "-"))
