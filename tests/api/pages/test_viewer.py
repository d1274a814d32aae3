"""The viewer's page route (issue 18): the shell for a study the user may
see, the same 404 page for one they may not (a referring physician cannot
learn that another physician's study exists), the sign-in redirect, the
pages' CSP, and the report panel's slot with the study's UID and id."""

from __future__ import annotations

import re

import httpx

from api.deps import SESSION_COOKIE
from tests.api.conftest import PASSWORD, ApiServer
from tests.builders import seed_study, user_id


def _browser(api: ApiServer, role: str) -> tuple[httpx.Client, str]:
    """A client signed in through the form (the session cookie), and its username."""
    username = api.user(role)
    client = api.anonymous()
    answer = client.post("/sign-in", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    client.headers["Cookie"] = f"{SESSION_COOKIE}={answer.cookies[SESSION_COOKIE]}"
    return client, username


def test_the_viewer_renders_a_study_with_the_report_panel_slot(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    client, _ = _browser(api, "radiologist")
    page = client.get(f"/viewer/{seeded.study_uid}")
    assert page.status_code == 200, page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert f'data-study-uid="{seeded.study_uid}"' in page.text
    assert f'data-study-id="{seeded.study_id}"' in page.text
    assert 'class="report-panel-slot"' in page.text
    # no patient data in the shell: the scripts read it through the API (audited there)
    assert "PATIENT^" not in page.text
    # nothing inline that the pages' policy would have to allow
    assert not re.search(r"<script(?![^>]*\bsrc=)|<style\b|\sstyle=|\son\w+=", page.text)


def test_a_referring_physician_sees_only_their_studies(api: ApiServer) -> None:
    client, username = _browser(api, "referring_physician")
    theirs = seed_study(api.db, requested_by_id=user_id(api, username))
    other = seed_study(api.db)
    assert client.get(f"/viewer/{theirs.study_uid}").status_code == 200
    refused = client.get(f"/viewer/{other.study_uid}")
    missing = client.get("/viewer/1.2.3.4.5.6.7")
    assert refused.status_code == missing.status_code == 404
    assert refused.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in refused.text and other.study_uid not in refused.text


def test_signed_out_is_sent_to_the_sign_in_form_and_a_bad_uid_is_a_page(api: ApiServer) -> None:
    seeded = seed_study(api.db)
    answer = api.anonymous().get(f"/viewer/{seeded.study_uid}")
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"
    client, _ = _browser(api, "radiologist")
    bad = client.get("/viewer/not-a-uid")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
