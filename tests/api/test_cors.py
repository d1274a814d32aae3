"""CORS (settings.cors_origins): off by default; when set, a browser viewer
served from a listed origin may call the API and DICOMweb, and no other may."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dicom_node.settings import Settings
from tests.api.conftest import PASSWORD, ApiServer
from tests.conftest import node_settings

VIEWER = "https://viewer.example.org:8443"


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    origins = [VIEWER] if "an_allowed_origin" in request.node.name else []
    return node_settings(db_url, tmp_path / "data", cors_origins=origins)


def _preflight(api: ApiServer, origin: str, path: str) -> httpx.Response:
    return api.anonymous().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_by_default_no_origin_is_allowed(api: ApiServer) -> None:
    answer = _preflight(api, VIEWER, "/dicomweb/studies")
    assert "access-control-allow-origin" not in answer.headers
    token = api.token(api.user("radiologist"))
    answer = api.anonymous().get(
        "/api/studies", headers={"Origin": VIEWER, "Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_an_allowed_origin_may_call_dicomweb_and_the_api(api: ApiServer) -> None:
    for path in ("/dicomweb/studies", "/api/studies"):
        answer = _preflight(api, VIEWER, path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == VIEWER
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    token = api.token(api.user("radiologist"))
    answer = api.anonymous().get(
        "/api/studies", headers={"Origin": VIEWER, "Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == VIEWER
    assert "warning" in answer.headers["access-control-expose-headers"].lower()
    # another origin gets no grant, on the preflight or on the request
    other = _preflight(api, "https://evil.example.com", "/dicomweb/studies")
    assert other.headers.get("access-control-allow-origin") is None
    assert other.status_code == 400


def test_a_malformed_origin_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Settings(cors_origins="https://viewer.example.org/path")  # type: ignore[arg-type]


def test_an_allowed_origin_gets_no_credentialed_access(api: ApiServer) -> None:
    """The browser session's cookie must not let a listed origin's page read
    answers: CORS never allows credentials (the viewer sends a bearer token)."""
    answer = api.anonymous().post(
        "/sign-in", data={"username": api.user("radiologist"), "password": PASSWORD}
    )
    cookie = f"dicom_node_session={answer.cookies['dicom_node_session']}"
    for path in ("/api/me", "/dicomweb/studies"):
        read = api.anonymous().get(path, headers={"Origin": VIEWER, "Cookie": cookie})
        assert read.headers["access-control-allow-origin"] == VIEWER
        assert "access-control-allow-credentials" not in read.headers
        preflight = _preflight(api, VIEWER, path)
        assert "access-control-allow-credentials" not in preflight.headers
        # the CSRF header is not one a listed origin's script may send
        assert "x-csrf-token" not in preflight.headers["access-control-allow-headers"].lower()
