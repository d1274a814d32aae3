"""The audit trail and turnaround pages over plain HTTP (issue 18): who gets
the page and who the error page, the sign-in redirect, the pages' policy with
nothing inline, and the assets they load."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import ApiServer

INLINE = re.compile(r"<script(?![^>]*\bsrc=)|<style\b|\sstyle=|\son\w+=")
PAGES = {
    "/audit": ("/static/js/audit.js", "/static/css/audit.css", {"admin", "auditor"}),
    "/turnaround": (
        "/static/js/turnaround.js",
        "/static/css/turnaround.css",
        {"admin", "scheduler", "radiologist", "auditor"},
    ),
}


@pytest.fixture
def backend() -> str:
    """Who may open a page depends on the role alone; one database is enough."""
    return "sqlite"


ROLES = ["admin", "scheduler", "technologist", "radiologist", "referring_physician", "auditor"]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_the_page_or_the_error_page_by_permission(api: ApiServer, path: str, role: str) -> None:
    script, stylesheet, allowed = PAGES[path]
    page = api.client(role).get(path)
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert not INLINE.search(page.text)
    if role in allowed:
        assert page.status_code == 200
        assert f'src="{script}"' in page.text and f'href="{stylesheet}"' in page.text
    else:
        # a page saying why, never the API's JSON, and nothing of the page itself
        assert page.status_code == 403
        assert 'role="alert"' in page.text and script not in page.text


@pytest.mark.parametrize("path", PAGES)
def test_signed_out_the_page_sends_to_the_sign_in_form(api: ApiServer, path: str) -> None:
    answer = api.anonymous().get(path)
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"


def test_the_audit_page_offers_the_event_codes_and_the_export_cap(api: ApiServer) -> None:
    text = api.client("auditor").get("/audit").text
    assert '<option value="110101">' in text and '<option value="minor_failure">' in text
    assert "at most 100,000 rows" in text


@pytest.mark.parametrize(
    "asset", [p for s, c, _ in PAGES.values() for p in (s, c)] + ["/static/js/charts.js"]
)
def test_the_pages_assets_are_served(api: ApiServer, asset: str) -> None:
    answer = api.anonymous().get(asset)
    assert answer.status_code == 200
    kind = "javascript" if asset.endswith(".js") else "css"
    assert kind in answer.headers["content-type"]
