"""The scheduler's pages over plain HTTP: who may open which (from the
permission table), a refusal as a page (never JSON), the sign-in redirect, the
pages' CSP, and what the new-order form offers each role."""

from __future__ import annotations

import re

import pytest

from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from tests.api.conftest import ApiServer
from tests.builders import user_id

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

PAGES = {
    "/orders": Permission.ORDERS_READ,
    "/orders/new": Permission.ORDERS_CREATE,
    "/orders/1": Permission.ORDERS_READ,
    "/scheduled-steps": Permission.ORDERS_READ,
    "/reconciliation": Permission.RECONCILE,
}
CSP_NEEDS = ("script-src 'self'", "style-src 'self'")


def test_each_role_opens_the_pages_its_permissions_allow(api: ApiServer) -> None:
    clients = {role: api.client(role.value) for role in Role}
    for path, permission in PAGES.items():
        for role, client in clients.items():
            answer = client.get(path)
            assert answer.headers["content-type"].startswith("text/html"), (path, role)
            csp = answer.headers["content-security-policy"]
            assert all(part in csp for part in CSP_NEEDS), (path, csp)
            if role in ROLE_PERMISSIONS[permission]:
                assert answer.status_code == 200, (path, role, answer.text[:200])
            else:
                assert answer.status_code == 403, (path, role)
                assert permission.value in answer.text and '"error"' not in answer.text


def test_signed_out_the_pages_send_to_the_sign_in_form(api: ApiServer) -> None:
    client = api.anonymous()
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/sign-in", path


def test_an_id_that_is_no_order_id_is_a_page_not_json(api: ApiServer) -> None:
    client = api.client("scheduler")
    for path in ("/orders/abc", "/orders/0", "/orders/99999999999999999999"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")


def test_buttons_only_for_what_the_role_may_do(api: ApiServer) -> None:
    scheduler = api.client("scheduler").get("/orders").text
    assert 'href="/orders/new"' in scheduler
    technologist = api.client("technologist").get("/orders").text
    assert 'href="/orders/new"' not in technologist  # reads orders, creates none
    detail = api.client("technologist").get("/orders/1").text
    assert 'id="schedule-form"' not in detail and 'id="cancel-form"' not in detail
    detail = api.client("scheduler").get("/orders/1").text
    assert 'id="schedule-form"' in detail and 'id="cancel-form"' in detail
    # a referring physician cancels their own orders, schedules none
    detail = api.client("referring_physician").get("/orders/1").text
    assert 'id="schedule-form"' not in detail and 'id="cancel-form"' in detail


def test_the_form_offers_the_active_referring_physicians(api: ApiServer) -> None:
    active = api.user("referring_physician", display_name="Dr Rita Referrer")
    gone = api.user("referring_physician", display_name="Dr Gone Away")
    deactivated = api.client("admin").patch(
        f"/api/users/{user_id(api, gone)}", json={"is_active": False}
    )
    assert deactivated.status_code == 200, deactivated.text
    api.user("radiologist", display_name="Dr Ray Reader")
    page = api.client("scheduler").get("/orders/new").text
    offered = re.findall(r'<option value="\d+">([^<]+)</option>', page)
    assert "Dr Rita Referrer" in offered
    assert "Dr Gone Away" not in offered and "Dr Ray Reader" not in offered
    # a referring physician may name only themselves
    referrer = api.client("referring_physician", display_name="Dr Own Orders")
    own = referrer.get("/orders/new").text
    assert re.findall(r'<option value="\d+">([^<]+)</option>', own) == ["Dr Own Orders"]
    assert active not in own


def test_no_inline_script_or_style(api: ApiServer) -> None:
    client = api.client("admin")
    for path in PAGES:
        html = client.get(path).text
        assert "<style" not in html and " style=" not in html and " onclick=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
