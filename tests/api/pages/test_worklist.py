"""The worklist page's route over real HTTP (no browser): who gets the page,
who gets a refusal page instead, the sign-in redirect, the pages' CSP, and a
shell with no inline script or style (the browser tests in
tests/browser/test_worklist_page.py drive the page itself)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import update

from api.deps import SESSION_COOKIE
from api.headers import APP_CSP
from api.pages.paths import WORKLIST_URL
from dicom_node.db.models import User
from tests.api.conftest import PASSWORD, ApiServer


def _page_client(api: ApiServer, role: str, **extra: object) -> httpx.Client:
    """Signed in through the form, as a browser: the session cookie only."""
    username = api.user(role, **extra)
    answer = api.anonymous().post("/sign-in", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    client = api.anonymous()
    client.headers["Cookie"] = f"{SESSION_COOKIE}={answer.cookies[SESSION_COOKIE]}"
    return client


@pytest.mark.parametrize("role", ["radiologist", "admin", "auditor", "technologist", "scheduler"])
def test_roles_with_worklist_read_get_the_page_with_the_pages_csp(
    api: ApiServer, role: str
) -> None:
    answer = _page_client(api, role).get(WORKLIST_URL)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-security-policy"] == APP_CSP
    html = answer.text
    assert "<h1>Reading worklist</h1>" in html
    assert '<script type="module" src="/static/js/worklist.js"></script>' in html
    # the CSP has no 'unsafe-inline': no inline script, style or handler
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert 'href="/worklist" aria-current="page"' in html
    for column in ("Patient name", "Patient ID", "Accession", "Body part", "Due", "Assigned to"):
        assert f'<th scope="col">{column}</th>' in html


def test_the_page_offers_claim_to_radiologists_and_reassign_to_leads_and_admins(
    api: ApiServer,
) -> None:
    reader = _page_client(api, "radiologist").get(WORKLIST_URL).text
    assert 'data-can-claim="true"' in reader and 'data-can-reassign="false"' in reader
    assert "reassign-dialog" not in reader
    api.user("radiologist", username="dr-active", display_name="Dr Active")
    api.user("radiologist", username="dr-gone")
    with api.db.unit_of_work() as session:
        session.execute(update(User).where(User.username == "dr-gone").values(is_active=False))
    lead = _page_client(api, "radiologist", is_lead=True).get(WORKLIST_URL).text
    assert 'data-can-reassign="true"' in lead
    # the dialog offers active radiologists only
    assert "Dr Active (dr-active)" in lead and "dr-gone" not in lead
    admin = _page_client(api, "admin").get(WORKLIST_URL).text
    assert 'data-can-claim="false"' in admin and 'data-can-reassign="true"' in admin
    auditor = _page_client(api, "auditor").get(WORKLIST_URL).text
    assert 'data-can-claim="false"' in auditor and 'data-can-reassign="false"' in auditor


def test_a_referring_physician_gets_a_refusal_page_not_json(api: ApiServer) -> None:
    client = _page_client(api, "referring_physician")
    home = client.get("/")
    assert home.status_code == 200 and 'href="/worklist"' not in home.text  # not in the nav
    answer = client.get(WORKLIST_URL)
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "role referring_physician may not worklist:read" in answer.text
    assert answer.headers["content-security-policy"] == APP_CSP


def test_signed_out_the_page_sends_the_browser_to_the_sign_in_form(api: ApiServer) -> None:
    answer = api.anonymous().get(WORKLIST_URL)
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"


def test_the_pages_script_and_style_are_served(api: ApiServer) -> None:
    client = api.anonymous()
    script = client.get("/static/js/worklist.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    style = client.get("/static/css/worklist.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
