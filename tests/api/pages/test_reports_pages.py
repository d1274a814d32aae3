"""The printable report and the referring physician's page (issue 18), over
plain HTTP: who may open them (the permission table and the one visibility
rule: another physician's report is the same 404 page as a missing one), the
audit events of GET /api/reports/{id} recorded for a printed report, the
sign-in redirect, and the pages' CSP with no inline script or style."""

from __future__ import annotations

import httpx

from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from tests.api.conftest import ApiServer
from tests.builders import (
    amend,
    audit_actions,
    claimed_study,
    finalize,
    new_report,
    signed_report,
    submit,
    user_id,
)


def _person(api: ApiServer, role: Role) -> tuple[httpx.Client, Principal]:
    """A signed-in client of a new user of ``role`` and the same user as a Principal."""
    client = api.client(role.value)
    name = client.username  # type: ignore[attr-defined]
    return client, Principal(user_id=user_id(api, name), username=name, role=role)


def _assert_page(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "<script>" not in answer.text and "<style" not in answer.text
    assert "style=" not in answer.text and "onclick" not in answer.text


def test_a_referrer_prints_their_signed_report_audited_as_the_api_reads_it(
    api: ApiServer,
) -> None:
    referrer, physician = _person(api, Role.REFERRING_PHYSICIAN)
    _, author = _person(api, Role.RADIOLOGIST)
    _, reviewer = _person(api, Role.RADIOLOGIST)
    study = claimed_study(api.db, author, referring_physician_id=physician.user_id)
    report_id = signed_report(api.db, study, author, reviewer)

    page = referrer.get(f"/reports/{report_id}/print")

    _assert_page(page, 200)
    assert "Clear lungs." in page.text and "Normal." in page.text
    assert reviewer.username.title() in page.text  # the signer, by display name
    assert 'id="print-button"' in page.text and "/static/css/report.css" in page.text
    assert "<title>Report " in page.text and "PATIENT^" not in page.text.split("</title>")[0]
    actions = [event.action for event in audit_actions(api, "Report", report_id)]
    assert "report_read" in actions and "report_versions_read" in actions
    viewed = [e.action for e in audit_actions(api, "DicomStudy", study.study_id)]
    assert "study_viewed" in viewed


def test_another_physicians_report_an_unsigned_one_and_a_missing_one_are_one_404(
    api: ApiServer,
) -> None:
    _, physician = _person(api, Role.REFERRING_PHYSICIAN)
    other, _ = _person(api, Role.REFERRING_PHYSICIAN)
    owner, _ = _person(api, Role.REFERRING_PHYSICIAN)
    _, author = _person(api, Role.RADIOLOGIST)
    _, reviewer = _person(api, Role.RADIOLOGIST)
    theirs = signed_report(
        api.db,
        claimed_study(api.db, author, referring_physician_id=physician.user_id),
        author,
        reviewer,
    )
    owner_id = user_id(api, owner.username)  # type: ignore[attr-defined]
    draft = new_report(api.db, claimed_study(api.db, author, requested_by_id=owner_id), author)

    refused = other.get(f"/reports/{theirs}/print")
    unsigned = owner.get(f"/reports/{draft}/print")
    missing = other.get("/reports/999999/print")

    for answer in (refused, unsigned, missing):
        _assert_page(answer, 404)
    assert "Clear lungs." not in refused.text + unsigned.text


def test_an_unsigned_report_has_nothing_to_print_and_a_role_without_reports_read_is_refused(
    api: ApiServer,
) -> None:
    radiologist, author = _person(api, Role.RADIOLOGIST)
    technologist, _ = _person(api, Role.TECHNOLOGIST)
    draft = new_report(api.db, claimed_study(api.db, author), author)

    _assert_page(radiologist.get(f"/reports/{draft}/print"), 409)
    refused = technologist.get(f"/reports/{draft}/print")
    _assert_page(refused, 403)
    assert "Clear lungs." not in refused.text


def test_an_addendum_prints_the_new_text_above_the_earlier_signed_version(
    api: ApiServer,
) -> None:
    auditor, _ = _person(api, Role.AUDITOR)
    _, author = _person(api, Role.RADIOLOGIST)
    _, reviewer = _person(api, Role.RADIOLOGIST)
    report_id = signed_report(api.db, claimed_study(api.db, author), author, reviewer)
    with api.db.unit_of_work() as session:
        amend(session, report_id, author)
    with api.db.unit_of_work() as session:
        submit(session, report_id, author)
    with api.db.unit_of_work() as session:
        finalize(session, report_id, reviewer)

    page = auditor.get(f"/reports/{report_id}/print")

    _assert_page(page, 200)
    latest, earlier = page.text.split("Earlier signed versions")
    assert "Addendum: small nodule." in latest
    assert "Addendum" not in earlier and "Normal." in earlier


def test_signed_out_is_sent_to_the_sign_in_form(api: ApiServer) -> None:
    for path in ("/referrals", "/reports/1/print"):
        answer = api.anonymous().get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"


def test_the_referrals_page_is_the_referring_physicians_own(api: ApiServer) -> None:
    referrer, _ = _person(api, Role.REFERRING_PHYSICIAN)
    radiologist, _ = _person(api, Role.RADIOLOGIST)

    page = referrer.get("/referrals")

    _assert_page(page, 200)
    assert "/static/js/referrals.js" in page.text and 'id="referral-reports"' in page.text
    assert 'id="not-a-referrer"' not in page.text
    # a role the rule does not narrow would see every order as "theirs": the
    # page only tells it where its work is, and loads nothing
    other = radiologist.get("/referrals")
    _assert_page(other, 200)
    assert 'id="not-a-referrer"' in other.text and "referrals.js" not in other.text
