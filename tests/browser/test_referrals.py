"""The referring physician's page and the printable report in a real browser
(issue 18): a referrer sees their own orders, studies and signed reports and
not another physician's; a report signed through the API while the page is
open shows up as a notice and in the list without a reload; the printable
report has a print stylesheet and a Print button. axe-core on each page, a
screenshot of each."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from dicom_node.db.models import DicomStudy
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from tests.api.conftest import ApiServer
from tests.browser.conftest import Page
from tests.builders import Study, claimed_study, signed_report, user_id

pytestmark = pytest.mark.browser


@pytest.fixture
def window() -> tuple[int, int]:
    """One size for the journeys; the layout test asks for both."""
    return (1280, 800)


@dataclass
class Radiologist:
    client: httpx.Client
    principal: Principal


def _radiologist(api: ApiServer) -> Radiologist:
    client = api.client("radiologist")
    name = client.username  # type: ignore[attr-defined]
    return Radiologist(client, Principal(user_id(api, name), name, Role.RADIOLOGIST))


def _referrer(api: ApiServer) -> tuple[str, int]:
    name = api.user("referring_physician")
    return name, user_id(api, name)


def _accession_and_uid(api: ApiServer, study: Study) -> tuple[str, str]:
    with api.db.read() as session:
        row = session.execute(
            select(DicomStudy.accession_number, DicomStudy.study_instance_uid).where(
                DicomStudy.id == study.study_id
            )
        ).one()
    return str(row[0]), str(row[1])


def _open_referrals(page: Page, username: str) -> None:
    page.sign_in(username)
    page.open("/referrals")
    page.wait_for(
        lambda d: d.execute_script(
            "const r = document.getElementById('referrals');"
            "return r.dataset.loaded === 'true' && r.dataset.live === 'true';"
        )
    )


def _table_text(page: Page, table: str) -> str:
    return str(page.find(f"#{table} tbody").text)


@pytest.mark.parametrize("window", [(1280, 800), (768, 1024)], ids=["1280x800", "768x1024"])
def test_a_referrer_sees_only_their_orders_studies_and_signed_reports(
    page: Page, api: ApiServer
) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    mine, me = _referrer(api)
    _, colleague = _referrer(api)
    signed = claimed_study(api.db, author.principal, referring_physician_id=me)
    report_id = signed_report(api.db, signed, author.principal, reviewer.principal)
    pending = claimed_study(api.db, author.principal, requested_by_id=me)
    theirs = claimed_study(api.db, author.principal, referring_physician_id=colleague)
    their_report = signed_report(api.db, theirs, author.principal, reviewer.principal)
    (signed_acc, signed_uid), (pending_acc, _) = (
        _accession_and_uid(api, signed),
        _accession_and_uid(api, pending),
    )
    their_acc, their_uid = _accession_and_uid(api, theirs)

    _open_referrals(page, mine)

    orders = _table_text(page, "referral-orders")
    assert signed_acc in orders and pending_acc in orders and their_acc not in orders
    studies = _table_text(page, "referral-studies")
    assert signed_acc in studies and their_acc not in studies
    viewer_links = [
        a.get_attribute("href")
        for a in page.driver.find_elements("css selector", "#referral-studies a")
    ]
    assert any(href.endswith(f"/viewer/{signed_uid}") for href in viewer_links)
    assert not any(their_uid in href for href in viewer_links)
    reports = page.driver.find_elements("css selector", "#referral-reports tr[data-report-id]")
    assert [r.get_attribute("data-report-id") for r in reports] == [str(report_id)]
    assert page.find(f'#referral-reports a[href="/reports/{report_id}/print"]')
    assert str(their_report) not in _table_text(page, "referral-reports").split()
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    page.check_accessibility()
    page.screenshot("referrals")


def test_a_report_signed_while_the_page_is_open_is_announced_and_listed(
    page: Page, api: ApiServer
) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    mine, me = _referrer(api)
    study = claimed_study(api.db, author.principal, referring_physician_id=me)
    accession, _ = _accession_and_uid(api, study)
    _open_referrals(page, mine)
    assert not page.driver.find_elements("css selector", "#referral-reports tr[data-report-id]")

    created = author.client.post(
        "/api/reports",
        json={"study_id": study.study_id, "findings": "No fracture.", "impression": "Normal."},
    )
    assert created.status_code == 201, created.text
    report_id = created.json()["id"]
    assert author.client.post(f"/api/reports/{report_id}/submit").status_code == 200
    # a draft and a submitted report are not news for the referrer
    signed = reviewer.client.post(f"/api/reports/{report_id}/finalize")
    assert signed.status_code == 200, signed.text

    notice = page.wait_for(
        lambda d: next(
            (e for e in d.find_elements("css selector", "#notices .message") if e.text), None
        )
    )
    assert f"report {report_id}" in notice.text and accession in notice.text
    read = notice.find_element("css selector", "a")
    assert read.get_attribute("href").endswith(f"/reports/{report_id}/print")
    listed = f'#referral-reports tr[data-report-id="{report_id}"]'
    page.wait_for(lambda d: d.find_elements("css selector", listed))
    assert len(page.driver.find_elements("css selector", "#notices .message")) == 1
    page.screenshot("referrals-notice")


def test_the_printable_report_prints_with_its_own_stylesheet(page: Page, api: ApiServer) -> None:
    author, reviewer = _radiologist(api), _radiologist(api)
    mine, me = _referrer(api)
    study = claimed_study(api.db, author.principal, referring_physician_id=me)
    report_id = signed_report(api.db, study, author.principal, reviewer.principal)
    accession, _ = _accession_and_uid(api, study)
    page.sign_in(mine)
    page.open(f"/reports/{report_id}/print")
    page.wait_for_path(f"/reports/{report_id}/print")

    assert page.find("#print-accession").text == accession
    assert page.find("#print-patient").text.startswith("PATIENT, ")  # not PATIENT^n
    assert page.find("#print-findings").text == "Clear lungs."
    assert page.find("#print-signer").text == reviewer.principal.username.title()
    # the times are the browser's: local-time.js rewrote the ISO text
    assert "T" not in page.find(".report-header time").text
    print_rules = page.driver.execute_script(
        """
        const rules = [];
        for (const sheet of document.styleSheets) {
          if (!sheet.href || !sheet.href.endsWith('/static/css/report.css')) continue;
          for (const rule of sheet.cssRules) {
            if (rule.media && rule.media.mediaText === 'print') rules.push(rule.cssText);
          }
        }
        return rules;
        """
    )
    assert print_rules and ".site-header" in print_rules[0]
    # the button calls window.print(): replaced here, a headless print dialog never closes
    page.driver.execute_script("window.print = () => { document.body.dataset.printed = 'yes'; };")
    page.find("#print-button").click()
    page.wait_for(lambda d: d.execute_script("return document.body.dataset.printed") == "yes")
    page.check_accessibility()
    page.screenshot("report-print")
