"""The administration pages server-side (plain HTTP, no browser): each page for
the roles the permission table allows, a refusal as a page, a redirect when
signed out, the pages' CSP, and no inline script or style in what is served."""

from __future__ import annotations

import re

import pytest

from api.pages.admin import FACILITIES_URL, SEND_URL, STATUS_URL, USERS_URL
from api.pages.paths import ADMIN_URL
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from tests.api.conftest import ApiServer

PAGES = {
    ADMIN_URL: Permission.USERS_MANAGE,
    USERS_URL: Permission.USERS_MANAGE,
    FACILITIES_URL: Permission.FACILITIES_MANAGE,
    STATUS_URL: Permission.VIEW_METRICS,
    SEND_URL: Permission.STUDIES_SEND,
}
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", re.IGNORECASE)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_each_page_is_for_the_roles_the_table_allows(api: ApiServer) -> None:
    clients = {role: api.client(role.value) for role in Role}
    for path, permission in PAGES.items():
        for role, client in clients.items():
            response = client.get(path)
            assert response.headers["content-type"].startswith("text/html"), (path, role)
            if role in ROLE_PERMISSIONS[permission]:
                assert response.status_code == 200, (path, role, response.text[:200])
                assert "script-src 'self'" in response.headers["content-security-policy"]
                assert not INLINE.search(response.text), (path, INLINE.search(response.text))
            else:
                assert response.status_code == 403, (path, role)
                assert f"may not {permission.value}" in response.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_technologist_may_send_but_sees_no_other_admin_section(api: ApiServer) -> None:
    technologist = api.client("technologist")
    assert technologist.get(SEND_URL).status_code == 200
    assert technologist.get(ADMIN_URL).status_code == 403
    overview = api.client("admin").get(ADMIN_URL).text
    for path in (USERS_URL, FACILITIES_URL, STATUS_URL, SEND_URL):
        assert f'href="{path}"' in overview


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_signed_out_is_sent_to_the_sign_in_form(api: ApiServer) -> None:
    anonymous = api.anonymous()
    for path in PAGES:
        response = anonymous.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/sign-in")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_scripts_and_the_stylesheet_are_served(api: ApiServer) -> None:
    anonymous = api.anonymous()
    for name in ("admin-users", "admin-facilities", "admin-status", "admin-send"):
        response = anonymous.get(f"/static/js/{name}.js")
        assert response.status_code == 200, name
        assert "import { api" in response.text
    assert anonymous.get("/static/css/admin.css").status_code == 200
