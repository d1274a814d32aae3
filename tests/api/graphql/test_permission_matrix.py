"""Every role against every GraphQL permission case (``cases_<area>.py``), and
the schema walk that keeps the cases complete.

As the REST route matrix (tests/api/test_permissions.py) does for the routes:
a role the one permission table (``ROLE_PERMISSIONS``) grants a case's
permission must not get FORBIDDEN, every other role must. One server, one user
per role, every case once per role (queries and mutations over HTTP, the
subscriptions over one WebSocket connection per role).
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from strawberry.types.base import StrawberryObjectDefinition

import tests.api.graphql as cases_package
from api.graphql.access import Requires
from api.graphql.schema import build_schema
from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import ROLE_PERMISSIONS, Permission
from dicom_node.settings import Settings
from tests.api.graphql.conftest import Graph, GraphClient, Outcome, PermissionCase

# root fields anyone signed in may ask for
OPEN_FIELDS = {"me"}
ROOTS = {"Query", "Mutation", "Subscription"}


def all_cases() -> list[tuple[str, PermissionCase]]:
    """Every ``CASES`` of every ``cases_*.py`` next to this file, named by module."""
    found: list[tuple[str, PermissionCase]] = []
    folder = str(Path(cases_package.__file__).parent)
    for module in sorted(pkgutil.iter_modules([folder]), key=lambda info: info.name):
        if module.name.startswith("cases_"):
            cases = importlib.import_module(f"{cases_package.__name__}.{module.name}").CASES
            found.extend((f"{module.name}[{index}]", case) for index, case in enumerate(cases))
    return found


def is_subscription(case: PermissionCase) -> bool:
    return case.document.lstrip().startswith("subscription")


def required_permissions() -> dict[str, list[Permission]]:
    """Each field's Requires permissions, by ``Type.field``, over the whole schema."""
    schema = build_schema(Settings())
    found: dict[str, list[Permission]] = {}
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition):
            continue
        for field in definition.fields:
            permissions = [e.permission for e in field.extensions if isinstance(e, Requires)]
            found[f"{definition.name}.{field.graphql_name or field.python_name}"] = permissions
    return found


def test_every_root_field_but_me_requires_a_permission_and_each_has_a_case() -> None:
    fields = required_permissions()
    roots = {name for name in fields if name.split(".")[0] in ROOTS}
    assert roots, "no root field found"
    unguarded = sorted(
        name for name in roots if not fields[name] and name.split(".")[1] not in OPEN_FIELDS
    )
    assert unguarded == [], "root fields without requires(...)"
    used = {permission for permissions in fields.values() for permission in permissions}
    covered = {case.permission for _, case in all_cases()}
    assert sorted(used - covered) == [], "permissions used in the schema without a case"


async def subscription_outcomes(
    client: GraphClient, cases: list[tuple[str, PermissionCase]]
) -> dict[str, Outcome]:
    """Each subscription case's first result or error, over one connection."""
    outcomes: dict[str, Outcome] = {}
    async with client.websocket() as session:
        for name, case in cases:
            request = GraphQLRequest(case.document, variable_values=case.variables)
            try:
                async for result in session.subscribe(request):
                    outcomes[name] = Outcome(result, [])
                    break
            except TransportQueryError as exc:
                outcomes[name] = Outcome(exc.data, list(exc.errors or []))
    return outcomes


def test_each_role_is_refused_exactly_the_permissions_the_table_does_not_grant(
    graph: Graph,
) -> None:
    cases = all_cases()
    assert cases, "no cases_*.py with CASES"
    subscriptions = [(name, case) for name, case in cases if is_subscription(case)]
    wrong: list[dict[str, Any]] = []
    for role in Role:
        # the radiologist is a lead: reassigning is the table's (worklist:reassign)
        # and the service's (a lead only) rule; the matrix checks the table
        client = graph.client(role.value, is_lead=role is Role.RADIOLOGIST)
        outcomes = asyncio.run(
            asyncio.wait_for(subscription_outcomes(client, subscriptions), timeout=60)
        )
        for name, case in cases:
            outcome = (
                outcomes[name]
                if is_subscription(case)
                else client.attempt(case.document, **case.variables)
            )
            allowed = role in ROLE_PERMISSIONS[case.permission]
            if allowed == ("FORBIDDEN" in outcome.codes):
                wrong.append(
                    {
                        "case": name,
                        "permission": case.permission.value,
                        "role": role.value,
                        "allowed": allowed,
                        "got": outcome.codes or "data",
                    }
                )
    assert wrong == []
