"""Every route tried with every role, against the one permission table.

The expected answer comes from ``ROLE_PERMISSIONS`` (the table the README
shows), the permission from the route's own ``require(...)`` dependency. So a
route that forgets its check, or checks the wrong permission, fails here.
Records are addressed with ids that do not exist: a role that holds the
permission gets past the check (404, 409 or 422, never 401/403); one that does
not gets 403 before anything is looked up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.app import ROUTERS
from api.deps import current_principal
from api.pages.common import PageRoute
from api.routes.metrics import metrics_reader
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission, permission_table_markdown
from tests.api.conftest import ApiServer

# public by decision (docs/security.md): liveness, and sign-in (the API's and the
# web form's, api/pages/)
PUBLIC = {"/health", "/api/auth/token", "/sign-in"}
# routes that also take a credential other than a user's token, and so call
# current_principal themselves when that is what they were given (GET /metrics:
# Prometheus's static scrape token). The matrix below still checks their 401/403.
OWN_SIGN_IN = {"/metrics": metrics_reader}
MISSING_ID = "987654"


def _dependency_calls(dependant: Any) -> list[Any]:
    calls = []
    for sub in dependant.dependencies:
        calls.append(sub.call)
        calls.extend(_dependency_calls(sub))
    return calls


def _api_routes() -> list[tuple[str, str, Permission | None]]:
    """(method, path, required permission or None for 'any signed-in user')."""
    routes = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute) or route.path in PUBLIC:
            continue
        calls = _dependency_calls(route.dependant)
        permissions = {c.permission for c in calls if hasattr(c, "permission")}
        assert len(permissions) <= 1, f"{route.path} names several permissions"
        signs_in = OWN_SIGN_IN.get(route.path, current_principal)
        assert signs_in in calls, f"{route.path} does not require sign-in"
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, route.path, next(iter(permissions), None)))
    return routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING_ID, path)


def test_every_route_answers_each_role_as_the_permission_table_says(api: ApiServer) -> None:
    routes = _api_routes()
    assert len(routes) > 20, "the route table looks empty"
    clients = {role: api.client(role.value) for role in Role}
    wrong: list[str] = []
    for method, path, permission in routes:
        if path in ("/api/events", "/api/auth/logout", "/sign-out"):
            continue  # a stream, and sign-outs: covered in their own tests
        for role, client in clients.items():
            body = None if method in ("GET", "DELETE") else {}
            response = client.request(method, _concrete(path), json=body)
            code = response.status_code
            may = permission is None or role in ROLE_PERMISSIONS[permission]
            if may and code in (401, 403):
                wrong.append(f"{role} {method} {path}: {code} {response.text[:120]}")
            if not may and code != 403:
                wrong.append(f"{role} {method} {path}: expected 403, got {code}")
            if code >= 500:
                wrong.append(f"{role} {method} {path}: {code}")
            if code >= 400 and path in _page_paths():
                if not response.headers["content-type"].startswith("text/html"):
                    wrong.append(f"{role} {method} {path}: a page answered {code} without a page")
            elif code >= 400 and "error" not in response.json():
                wrong.append(f"{role} {method} {path}: error body not in the one shape")
    assert not wrong, "\n".join(wrong)


def _page_paths() -> set[str]:
    return {r.path for router in ROUTERS for r in router.routes if isinstance(r, PageRoute)}


def test_every_route_refuses_a_caller_without_a_token(api: ApiServer) -> None:
    client = api.anonymous()
    pages = _page_paths()
    assert "/" in pages
    for method, path, _ in _api_routes():
        response = client.request(method, _concrete(path))
        if path in pages:
            # a person's page sends them to the sign-in form instead of a 401
            assert response.status_code == 303, f"{method} {path}: {response.status_code}"
            assert response.headers["location"] == "/sign-in"
            continue
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_readme_shows_the_permission_table_of_the_code(backend: str) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert permission_table_markdown() in readme
