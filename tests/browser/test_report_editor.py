"""The report editor beside the viewer's images, in a real browser (issue 18):
a radiologist drafts (autosave survives a reload), records the critical-result
communication and submits with Ctrl+Enter; another radiologist signs, writes
an addendum and reads the version history; a role without reports:write sees
the report without any editing control, one without reports:read sees
nothing of it; a save from another tab since the text was read is refused
by the API and shown as a message (autosave stops until the report is
reloaded); a report submitted elsewhere reaches the open panel live."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from dicom_node.db.models import DicomStudy
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from tests.api.conftest import ApiServer
from tests.browser.conftest import Page
from tests.builders import Study, claimed_study, new_report, signed_report, submit, user_id

T = TypeVar("T")

pytestmark = pytest.mark.browser

# the panel's controls that change a report
EDITING = ("#report-save", "#report-submit", "#report-sign", "#report-addendum", "#report-create")


@pytest.fixture
def window() -> tuple[int, int]:
    """The editor's journeys at the reading-room size (the viewer's tests check both)."""
    return (1280, 800)


def _radiologist(api: ApiServer) -> Principal:
    name = api.user("radiologist")
    return Principal(user_id(api, name), name, Role.RADIOLOGIST)


def _uid(api: ApiServer, study: Study) -> str:
    with api.db.read() as session:
        uid = session.scalar(
            select(DicomStudy.study_instance_uid).where(DicomStudy.id == study.study_id)
        )
    assert uid is not None
    return uid


def _open_panel(page: Page, username: str, uid: str) -> None:
    page.driver.delete_all_cookies()
    page.sign_in(username)
    page.open(f"/viewer/{uid}")
    page.wait_for(
        lambda d: (
            d.find_element("id", "report-state").text
            and not d.find_element("id", "report-state").text.startswith("Loading")
        )
    )


def _shown(page: Page, css: str) -> bool:
    found = page.driver.find_elements("css selector", css)
    return bool(found) and found[0].is_displayed()


def _state(page: Page, text: str) -> None:
    page.wait_for(lambda d: text in d.find_element("id", "report-state").text)


def _saved(page: Page) -> None:
    page.wait_for(lambda d: d.find_element("id", "report-save-status").text.startswith("Saved at"))


def _fresh(read: Callable[[], T]) -> T | None:
    """``read()``, or None when its element was redrawn under it (to retry)."""
    try:
        return read()
    except StaleElementReferenceException:
        return None


def _ctrl(page: Page, key: str) -> None:
    ActionChains(page.driver).key_down(Keys.CONTROL).send_keys(key).key_up(Keys.CONTROL).perform()


def test_a_report_is_drafted_submitted_signed_and_amended_in_the_panel(
    page: Page, api: ApiServer
) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    study = claimed_study(api.db, author)
    uid = _uid(api, study)

    _open_panel(page, author.username, uid)
    assert "No report" in page.find("#report-state").text
    page.find("#report-create").click()
    page.wait_for(
        lambda d: d.find_element("id", "report-findings").get_attribute("readonly") is None
    )
    page.find("#report-findings").send_keys("Spiculated nodule, right upper lobe.")
    page.find("#report-impression").send_keys("Suspicious for malignancy.")
    _saved(page)  # autosave: no button pressed

    _open_panel(page, author.username, uid)  # a reload shows what was saved
    assert page.find("#report-findings").get_attribute("value") == (
        "Spiculated nodule, right upper lobe."
    )
    assert page.find("#report-impression").get_attribute("value") == "Suspicious for malignancy."

    page.find("#report-critical").click()
    page.wait_for(lambda d: _shown(page, "#report-communication-form"))
    page.find("#communication-to").send_keys("Dr Ward (ED)")
    Select(page.find("#communication-method")).select_by_value("phone")
    page.find("#communication-record").click()
    page.wait_for(
        lambda d: "told Dr Ward (ED) by phone" in d.find_element("id", "report-communications").text
    )
    page.find("#report-communications button").click()  # the read-back
    page.wait_for(lambda d: "acknowledged" in d.find_element("id", "report-communications").text)

    page.find("#report-findings").click()
    _ctrl(page, Keys.ENTER)  # submit for review
    _state(page, "In review")
    assert not _shown(page, "#report-sign")  # the author does not sign their own report
    assert page.find("#report-findings").get_attribute("readonly") is not None
    page.screenshot("report-submitted")

    _open_panel(page, reviewer.username, uid)
    _state(page, "In review")
    assert _shown(page, "#report-sign") and not _shown(page, "#report-submit")
    page.find("#report-sign").click()
    _state(page, "Signed")
    assert _shown(page, "#report-print") and _shown(page, "#report-addendum")

    page.find("#report-addendum").click()
    _state(page, "Addendum being written")
    impression = page.find("#report-impression")
    impression.send_keys(" Addendum: compare with the 2023 CT.")
    _saved(page)
    page.find("#report-submit").click()
    _state(page, "In review")

    # the addendum is stored when started and again when submitted
    page.wait_for(lambda d: len(d.find_elements("css selector", "#report-versions li")) == 4)
    # read and clicked again if the list is redrawn meanwhile (the panel re-reads
    # its report when the feed says it changed): a stale element is no failure
    kinds = page.wait_for(lambda d: _fresh(lambda: d.find_element("id", "report-versions").text))
    assert "Version 1: submitted" in kinds and "Version 2: signed" in kinds
    assert "Version 3: addendum started" in kinds and "Version 4: addendum submitted" in kinds
    first = "#report-versions li:first-child button"
    page.wait_for(lambda d: _fresh(lambda: d.find_element("css selector", first).click() or True))
    page.wait_for(lambda d: _shown(page, "#report-version-view"))
    older = page.find("#report-version-view").text
    assert "Suspicious for malignancy." in older and "Addendum" not in older
    page.check_accessibility(exclude=[".viewer-images"])
    page.screenshot("report-history")


@pytest.mark.parametrize("window", [(1280, 800), (768, 1024)], ids=["1280x800", "768x1024"])
def test_roles_see_only_what_they_may_do_with_a_report(page: Page, api: ApiServer) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    study = claimed_study(api.db, author)
    signed_report(api.db, study, author, reviewer)
    uid = _uid(api, study)

    auditor = api.user("auditor")  # reports:read, nothing else
    _open_panel(page, auditor, uid)
    _state(page, "Signed")
    assert page.find("#report-findings").get_attribute("value") == "Clear lungs."
    assert page.find("#report-findings").get_attribute("readonly") is not None
    assert not any(_shown(page, css) for css in EDITING)
    assert not _shown(page, "#report-communication-form")
    page.wait_for(lambda d: _shown(page, "#report-history"))
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    page.check_accessibility(exclude=[".viewer-images"])
    page.screenshot("report-read-only")

    technologist = api.user("technologist")  # studies:read, no reports:read
    page.driver.delete_all_cookies()
    page.sign_in(technologist)
    page.open(f"/viewer/{uid}")
    page.wait_for_path(f"/viewer/{uid}")
    assert "Your role may not read reports." in page.find("#report-panel").text
    assert not page.driver.find_elements("id", "report-findings")


def test_a_submitted_report_reaches_the_reviewer_live_and_goes_back_with_a_comment(
    page: Page, api: ApiServer
) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    study = claimed_study(api.db, author)
    report_id = new_report(api.db, study, author)
    _open_panel(page, reviewer.username, _uid(api, study))
    _state(page, "Draft")  # another radiologist's draft: read only
    assert not any(_shown(page, css) for css in EDITING)
    page.wait_for(lambda d: d.find_element("id", "report-panel").get_attribute("data-live"))

    with api.db.unit_of_work() as session:  # the author submits, elsewhere
        submit(session, report_id, author)
    _state(page, "In review")  # live, from the event stream: no reload
    assert _shown(page, "#report-sign")

    page.find("#report-return").click()  # no comment: said in the page, nothing sent
    page.wait_for(lambda d: "Write a comment" in d.find_element("id", "notices").text)
    page.find("#report-return-comment").send_keys("Measure the nodule.")
    page.find("#report-return").click()

    _state(page, "Draft")
    assert not _shown(page, "#report-sign") and not _shown(page, "#report-submit")
    returned = page.wait_for(
        lambda d: next(
            (
                b
                for b in d.find_elements("css selector", "#report-versions button")
                if "returned to the author" in b.text
            ),
            None,
        )
    )
    returned.click()
    page.wait_for(
        lambda d: (
            "Reviewer's comment: Measure the nodule."
            in d.find_element("id", "report-version-view").text
        )
    )


def _refused_save(page: Page, typed: str) -> str:
    """Type, save with Ctrl+S, and answer the error message the page shows."""
    page.find("#report-findings").send_keys(typed)
    _ctrl(page, "s")
    message = page.wait_for(
        lambda d: next(
            (e for e in d.find_elements("css selector", "#notices .message.error") if e.text),
            None,
        )
    )
    text = str(message.text)
    assert "Not saved" in text and "{" not in text  # a sentence, never raw JSON
    assert "changed elsewhere" in page.find("#report-save-status").text
    assert _shown(page, "#report-reload")
    page.driver.execute_script("document.getElementById('notices').replaceChildren()")
    return text


def test_a_concurrent_edit_is_refused_as_a_message_and_a_submit_elsewhere_followed_live(
    page: Page, api: ApiServer
) -> None:
    author = _radiologist(api)
    study = claimed_study(api.db, author)
    report_id = new_report(api.db, study, author)
    uid = _uid(api, study)
    _open_panel(page, author.username, uid)
    _state(page, "Draft")
    page.expected_errors.append(r"status of 409")  # the refused PATCHes, in the console
    # the same author's other tab (or a script) saves the draft meanwhile
    elsewhere = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {api.token(author.username)}"}
    )
    url = f"/api/reports/{report_id}"
    with elsewhere:
        saved = elsewhere.patch(url, json={"findings": "Saved in the other tab."})
        assert saved.status_code == 200, saved.text

        assert "changed since you read it" in _refused_save(page, " Typed here.")
        page.find("#report-reload").click()  # the other tab's text, and editing again
        page.wait_for(
            lambda d: (
                d.find_element("id", "report-findings").get_attribute("value")
                == "Saved in the other tab."
            )
        )
        assert not _shown(page, "#report-reload")

        # then the draft is submitted elsewhere: the panel follows, live
        assert elsewhere.post(f"{url}/submit").status_code == 200
    _state(page, "In review")
    assert page.find("#report-findings").get_attribute("readonly") is not None
    assert page.find("#report-findings").get_attribute("value") == "Saved in the other tab."
