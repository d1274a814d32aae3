"""Security headers and the API documentation served by the node itself
(issue 13, finding 12): no ``Cache-Control: no-store`` on the token endpoint
or on patient data, no ``nosniff``, and ``/docs`` loading Swagger UI from a CDN
(a blank page on an offline hospital network, with no integrity check)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse

import httpx

from dicom_node import __version__
from tests.api.conftest import PASSWORD, ApiServer

EVERYWHERE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def _assert_security_headers(response: httpx.Response, *, cacheable: bool = False) -> None:
    for name, value in EVERYWHERE.items():
        assert response.headers.get(name) == value, f"{response.url}: {name}"
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", "")
    if not cacheable:
        assert response.headers.get("cache-control") == "no-store", response.url
        assert response.headers.get("pragma") == "no-cache", response.url


def test_the_token_and_every_api_answer_are_no_store_and_nosniff(api: ApiServer) -> None:
    name = api.user("scheduler")
    anonymous = api.anonymous()
    token = anonymous.post("/api/auth/token", data={"username": name, "password": PASSWORD})
    assert token.status_code == 200
    _assert_security_headers(token)  # RFC 6749 5.1
    refused = anonymous.post("/api/auth/token", data={"username": name, "password": "x" * 12})
    _assert_security_headers(refused)
    client = api.client("scheduler")
    for path in ("/api/orders", "/api/reconciliation", "/api/studies", "/api/me", "/api/nope"):
        _assert_security_headers(client.get(path))
    for path in ("/health", "/openapi.json", "/api/me"):
        _assert_security_headers(anonymous.get(path))  # 401 for the last
    # the JSON answers load nothing at all
    policy = client.get("/api/orders").headers["content-security-policy"]
    assert policy.startswith("default-src 'none'")
    # no HSTS over plain HTTP (it is sent over HTTPS only)
    assert "strict-transport-security" not in client.get("/api/me").headers


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html)


def _check_page_offline(api: ApiServer, path: str) -> list[str]:
    """Every script, style, icon and document the page loads comes from the node
    and answers; returns what it loaded."""
    client = api.anonymous()  # public: no token
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    _assert_security_headers(page)
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    loaded = []
    for reference in _references(page.text):
        url = urljoin(f"{api.base_url}{path}", reference)
        assert urlparse(url).netloc == urlparse(api.base_url).netloc, f"{path} loads {url}"
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["x-content-type-options"] == "nosniff"
        loaded.append(urlparse(url).path)
    assert not re.search(r"https?://", re.sub(r"<[^>]*>", "", page.text))
    return loaded


def test_swagger_ui_is_served_by_the_node_with_no_outside_reference(api: ApiServer) -> None:
    loaded = _check_page_offline(api, "/docs")
    assert "/docs-assets/swagger-ui-bundle.js" in loaded
    assert "/docs-assets/swagger-ui.css" in loaded
    init = api.anonymous().get("/docs/swagger-init.js")
    assert init.headers["content-type"].startswith("text/javascript")
    assert '"url": "/openapi.json"' in init.text
    # Swagger's validator badge would send the document's address outside
    assert '"validatorUrl": null' in init.text
    bundle = api.anonymous().get("/docs-assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    assert "no-store" not in bundle.headers.get("cache-control", "")  # static, no data


def test_redoc_is_served_by_the_node_with_no_outside_reference(api: ApiServer) -> None:
    loaded = _check_page_offline(api, "/redoc")
    assert "/docs-assets/redoc.standalone.js" in loaded
    assert "/openapi.json" in loaded
    page = api.anonymous().get("/redoc").text
    assert "fonts.googleapis" not in page


def test_the_openapi_document_is_public_and_every_route_it_lists_needs_a_token(
    api: ApiServer,
) -> None:
    spec = api.anonymous().get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths
    assert api.anonymous().get("/api/orders").status_code == 401


def test_the_pages_are_html_under_a_policy_without_inline_script_or_style(
    api: ApiServer,
) -> None:
    """The web pages (api/pages/, issue 18): the sign-in form is public, the home
    page sends a caller without a session there; the pages load only the node's
    own files, under a policy with no 'unsafe-inline'."""
    anonymous = api.anonymous()
    home = anonymous.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/sign-in"
    loaded = _check_page_offline(api, "/sign-in")
    assert {"/static/css/app.css", "/static/js/local-time.js"} <= set(loaded)
    page = anonymous.get("/sign-in")
    policy = page.headers["content-security-policy"]
    assert policy == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    # nothing inline that the policy would have to allow
    assert not re.search(r"<script(?![^>]*\bsrc=)|<style\b|\sstyle=|\son\w+=", page.text)
    assert __version__ not in page.text and api.settings.ae_title not in page.text
    head = anonymous.head("/sign-in")
    assert head.status_code == 200 and head.content == b""
    _assert_security_headers(head)
    # the assets are static files of the package: cacheable, right types, nosniff
    script = anonymous.get("/static/js/local-time.js")
    assert script.headers["content-type"].split(";")[0] in (
        "text/javascript",
        "application/javascript",
    )
    assert "no-store" not in script.headers.get("cache-control", "")
    assert anonymous.get("/static/css/app.css").headers["content-type"].startswith("text/css")
    # signed in (a bearer token works too): the home page, under the same policy
    signed_in = api.client("radiologist").get("/")
    assert signed_in.status_code == 200
    assert signed_in.headers["content-security-policy"] == policy
    _assert_security_headers(signed_in)
