"""The OpenAPI document is complete and the API keeps to it (schemathesis).

Every operation is called with generated input, as an admin (who may use most
routes) and as a referring physician (the most restricted role): no answer may
be a 5xx, and every answer must match the documented status codes and schemas.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api.conftest import ApiServer

# enough to reach every documented answer of most operations, small enough for CI
EXAMPLES_PER_OPERATION = 12
# Rules across parameters that OpenAPI cannot state (turnaround: ``from`` before
# ``to``, at most 366 days apart) answer 422 to input the schema allows; there the
# "schema-valid input is accepted" check does not apply. Every other check does.
CROSS_FIELD_RULES = {"/api/turnaround"}
# Fields naming another record that must be of a kind (a referring physician or a
# radiologist, by user id): a schema-valid id of another user is 422, as it should
# be; the other checks apply
REFERENCE_RULES = {"/api/orders", "/api/orders/{order_id}", "/api/worklist/{item_id}/reassign"}
# STOW-RS takes a multipart/related body whose boundary is in the Content-Type:
# OpenAPI cannot describe it so that schemathesis generates one, so a request the
# schema allows (no body) is rightly refused (415); the other checks apply
MULTIPART_BODIES = {("POST", "/dicomweb/studies"), ("POST", "/dicomweb/studies/{study}")}


def test_every_api_operation_documents_security_and_error_answers(api: ApiServer) -> None:
    spec = httpx.get(f"{api.base_url}/openapi.json").json()
    assert "OAuth2PasswordBearer" in spec["components"]["securitySchemes"]
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/") or path == "/api/auth/token":
            continue
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("security"), f"{where} does not declare its security"
            assert {"401", "403"} <= set(operation["responses"]), where
            assert operation.get("summary") or operation.get("description"), where


@pytest.mark.parametrize("role", ["admin", "referring_physician"])
def test_generated_requests_get_no_server_error_and_match_the_schema(
    api: ApiServer, role: str
) -> None:
    client = api.client(role)
    headers = {"Authorization": client.headers["Authorization"]}
    own_id = client.get("/api/me").json()["id"]
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/api/events", "/api/auth/logout"):
            continue  # an endless stream; and logout would end the run's own token
        try:
            _exercise(operation, api.base_url, headers, own_id)
        except Exception as exc:  # collect all, report together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # the run's own token still works: every operation was tried signed in, not
    # answered 401 after a generated request ended the session
    assert client.get("/api/me").status_code == 200


def _exercise(operation: Any, base_url: str, headers: dict[str, str], own_id: int) -> None:
    excluded = (
        [positive_data_acceptance]
        if operation.path in CROSS_FIELD_RULES | REFERENCE_RULES
        or (operation.method.upper(), operation.path) in MULTIPART_BODIES
        else []
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        if (case.path_parameters or {}).get("user_id") == own_id:
            # a new password, role or deactivation of the run's own user would end
            # its session, and every later operation would only be tried as a 401
            return
        case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=excluded)

    run()
