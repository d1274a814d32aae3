"""The browser session (issue 18): the sign-in form sets a cookie holding a
sign-in token, which authenticates the API, the event stream and DICOMweb
like a bearer token; a cookie-borne request that changes something needs the
session's CSRF token; a bearer request does not (a browser never adds it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from api.deps import SESSION_COOKIE, csrf_token_for
from dicom_node.db.models import ApiToken
from dicom_node.db.types import utcnow
from dicom_node.settings import Settings
from tests.api.conftest import PASSWORD, ApiServer
from tests.conftest import node_settings


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    # one test sits behind a TLS-terminating proxy on 127.0.0.1
    proxies = ["127.0.0.1"] if "behind_a_tls_proxy" in request.node.name else []
    return node_settings(db_url, tmp_path / "data", trusted_proxies=proxies)


def _sign_in(
    api: ApiServer, username: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return api.anonymous().post(
        "/sign-in", data={"username": username, "password": password}, headers=headers
    )


def _session(api: ApiServer, role: str = "radiologist") -> str:
    answer = _sign_in(api, api.user(role))
    assert answer.status_code == 303, answer.text
    return answer.cookies[SESSION_COOKIE]


def _cookie_client(api: ApiServer, session: str) -> httpx.Client:
    client = api.anonymous()
    client.headers["Cookie"] = f"{SESSION_COOKIE}={session}"
    return client


def test_the_form_sets_an_httponly_strict_cookie_for_the_token_lifetime(api: ApiServer) -> None:
    name = api.user("radiologist", display_name="Dr Ada Reader")
    answer = _sign_in(api, name)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert f"max-age={api.settings.api_token_ttl_minutes * 60}" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    home = _cookie_client(api, answer.cookies[SESSION_COOKIE]).get("/")
    assert home.status_code == 200
    assert "Dr Ada Reader" in home.text and "Radiologist" in home.text
    assert "worklist:claim" in home.text and "users:manage" not in home.text


def test_the_cookie_is_secure_behind_a_tls_proxy(api: ApiServer) -> None:
    answer = _sign_in(api, api.user("radiologist"), **{"X-Forwarded-Proto": "https"})
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def test_the_cookie_alone_reads_the_api_the_event_stream_and_dicomweb(api: ApiServer) -> None:
    client = _cookie_client(api, _session(api))
    me = client.get("/api/me")
    assert me.status_code == 200 and me.json()["role"] == "radiologist"
    studies = client.get("/dicomweb/studies")
    assert studies.status_code in (200, 204), studies.text
    with client.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert next(stream.iter_text()).startswith("retry:")


def test_a_cookie_request_that_changes_something_needs_the_csrf_token(api: ApiServer) -> None:
    session = _session(api)
    client = _cookie_client(api, session)
    refused = client.post("/api/auth/logout")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "forbidden" and "CSRF" in error["message"]
    wrong = client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf_token_for("other")})
    assert wrong.status_code == 403
    # the form field does as well, for the pages' forms; a wrong one gets a page
    page = client.post("/sign-out", data={"csrf_token": "x" * 64})
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "CSRF" in page.text and '"error"' not in page.text
    assert client.get("/api/me").status_code == 200  # nothing was signed out
    signed_out = client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf_token_for(session)})
    assert signed_out.status_code == 204
    # revoked: the cookie no longer signs in, the pages send it to the form
    assert client.get("/api/me").status_code == 401
    home = client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/sign-in"
    assert f"{SESSION_COOKIE}=" in home.headers["set-cookie"]  # the stale cookie is dropped


def test_the_sign_out_form_revokes_the_session_and_drops_the_cookie(api: ApiServer) -> None:
    session = _session(api)
    client = _cookie_client(api, session)
    answer = client.post("/sign-out", data={"csrf_token": csrf_token_for(session)})
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"
    assert "max-age=0" in answer.headers["set-cookie"].lower()
    assert client.get("/api/me").status_code == 401


def test_a_bearer_request_needs_no_csrf_token_even_with_a_cookie(api: ApiServer) -> None:
    other_session = _session(api)
    client = api.client("radiologist")
    client.headers["Cookie"] = f"{SESSION_COOKIE}={other_session}"
    assert client.get("/api/me").json()["username"] == client.username  # type: ignore[attr-defined]
    assert client.post("/api/auth/logout").status_code == 204
    # the bearer token was the one signed out; the cookie's session is untouched
    assert _cookie_client(api, other_session).get("/api/me").status_code == 200


def test_an_expired_cookie_is_refused(api: ApiServer) -> None:
    session = _session(api)
    with api.db.unit_of_work() as db:
        db.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    client = _cookie_client(api, session)
    answer = client.get("/api/me")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    assert client.get("/").status_code == 303


def test_an_api_key_is_never_taken_from_the_cookie(api: ApiServer) -> None:
    client = _cookie_client(api, "dnk_" + "a" * 40)
    assert client.get("/api/me").status_code == 401


def test_wrong_credentials_get_the_form_again_with_a_message(api: ApiServer) -> None:
    name = api.user("radiologist")
    answer = _sign_in(api, name, "not the password")
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "wrong username or password" in answer.text and '"error"' not in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    assert f'value="{name}"' in answer.text  # the username is kept, never the password


def test_a_sign_in_posted_from_another_site_is_refused(api: ApiServer) -> None:
    """Login CSRF: another site signing the browser in to an account it chose."""
    name = api.user("radiologist")
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host: SameSite would not stop it
        {"Origin": "null"},  # a sandboxed frame's, with no Sec-Fetch-Site to go by
    ):
        answer = _sign_in(api, name, **headers)
        assert answer.status_code == 403, headers
        assert "set-cookie" not in answer.headers
    own = _sign_in(api, name, Origin=api.base_url)
    assert own.status_code == 303
    # what Chromium sends from the node's own form under Referrer-Policy: no-referrer
    own = _sign_in(api, name, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 303


def test_the_form_sends_someone_already_signed_in_home_and_a_stale_cookie_to_the_form(
    api: ApiServer,
) -> None:
    session = _session(api)
    answer = _cookie_client(api, session).get("/sign-in")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    # a cookie that is no sign-in (revoked, expired, made up) gets the form
    stale = _cookie_client(api, "not-a-session").get("/sign-in")
    assert stale.status_code == 200 and 'id="username"' in stale.text


def test_the_home_page_links_only_the_pages_the_role_may_open(api: ApiServer) -> None:
    pages = {}
    for role in ("radiologist", "referring_physician", "auditor", "admin", "technologist"):
        home = _cookie_client(api, _session(api, role)).get("/")
        assert home.status_code == 200, home.text
        pages[role] = home.text
    assert 'href="/worklist"' in pages["radiologist"]
    assert 'href="/referrals"' not in pages["radiologist"]
    assert 'href="/audit"' not in pages["radiologist"]
    assert 'href="/referrals"' in pages["referring_physician"]
    assert 'href="/worklist"' not in pages["referring_physician"]
    assert 'href="/audit"' in pages["auditor"] and 'href="/admin"' not in pages["auditor"]
    assert 'href="/admin"' in pages["admin"]
    # a technologist may send studies: a link of its own; an admin reaches it
    # from Administration
    assert 'href="/admin/send"' in pages["technologist"]
    assert 'href="/admin"' not in pages["technologist"]
    assert 'href="/admin/send"' not in pages["admin"]
