"""Users, imaging centers and modalities through GraphQL: REST's listings and
filters, users:manage for accounts, and only a colleague's public fields
through a User edge."""

from __future__ import annotations

from typing import Any

import pytest
from gql.transport.exceptions import TransportServerError
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.api.graphql.test_reports import drafted
from tests.builders import user_id

USERS = """
query($first: Int, $after: String, $role: Role, $isActive: Boolean, $q: String, $sort: String) {
  users(first: $first, after: $after, role: $role, isActive: $isActive, q: $q, sort: $sort) {
    totalCount
    edges { node { id username role displayName isLead email isActive specialty } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
CENTERS = """
query($q: String, $sort: String) {
  imagingCenters(q: $q, sort: $sort) { totalCount edges { node { id code name location } } }
}
"""
MODALITIES = """
query($centerId: Int, $status: ModalityStatus, $type: String) {
  modalities(imagingCenterId: $centerId, status: $status, type: $type) {
    totalCount edges { node { id name type dicomAeTitle status imagingCenterId } }
  }
}
"""


def _names(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["username"] for edge in connection["edges"]]


def test_the_user_listing_filters_sorts_and_pages_as_rest(graph: Graph, api: ApiServer) -> None:
    admin = graph.client("admin")
    http = api.client("admin")
    for name in ("gq-rad-b", "gq-rad-a", "gq-rad-c"):
        api.user("radiologist", username=name, email=f"{name}@example.org")
    api.user("scheduler", username="gq-sched-z")
    off = http.patch(f"/api/users/{user_id(api, 'gq-sched-z')}", json={"is_active": False})
    assert off.status_code == 200, off.text

    page = admin.execute(USERS, role="RADIOLOGIST", sort="-username", first=2)["users"]
    rest_page = http.get(
        "/api/users", params={"role": "radiologist", "sort": "-username", "limit": 2}
    ).json()
    assert _names(page) == [u["username"] for u in rest_page["items"]]
    assert page["totalCount"] == rest_page["total"]
    assert page["edges"][0]["node"]["email"] == rest_page["items"][0]["email"]
    rest_next = http.get(
        "/api/users", params={"role": "radiologist", "sort": "-username", "offset": 2}
    ).json()
    following = admin.execute(
        USERS, role="RADIOLOGIST", sort="-username", after=page["pageInfo"]["endCursor"]
    )["users"]
    assert _names(following) == [u["username"] for u in rest_next["items"]]

    found = admin.execute(USERS, q="SCHED")["users"]
    assert _names(found) == [
        u["username"] for u in http.get("/api/users", params={"q": "SCHED"}).json()["items"]
    ]
    inactive = admin.execute(USERS, isActive=False)["users"]
    assert "gq-sched-z" in _names(inactive)
    assert all(edge["node"]["isActive"] is False for edge in inactive["edges"])
    bad = admin.attempt(USERS, sort="password_hash")
    assert bad.codes == ["BAD_USER_INPUT"] and bad.errors[0]["extensions"]["field"] == "sort"
    assert admin.attempt(USERS, q="a\u0000").codes == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    "role", ["scheduler", "technologist", "radiologist", "referring_physician", "auditor"]
)
def test_only_admins_list_users(graph: Graph, role: str) -> None:
    assert graph.client(role).attempt(USERS).codes == ["FORBIDDEN"]


def test_a_user_edge_shows_a_colleague_but_their_account_only_to_admins(graph: Graph) -> None:
    author = graph.client("radiologist", email="author@example.org", is_lead=True)
    _, report = drafted(graph, author)
    public = """
    query($id: Int!) { report(id: $id) { radiologist { username role displayName isLead } } }
    """
    private = "query($id: Int!) { report(id: $id) { radiologist { username email } } }"

    shown = author.execute(public, id=report["id"])["report"]["radiologist"]
    refused = graph.client("radiologist").attempt(private, id=report["id"])
    by_admin = graph.client("admin").execute(private, id=report["id"])

    assert shown == {
        "username": author.username,
        "role": "radiologist",
        "displayName": author.username.title(),
        "isLead": True,
    }
    assert refused.codes == ["FORBIDDEN"]
    assert by_admin["report"]["radiologist"] == {
        "username": author.username,
        "email": "author@example.org",
    }


def test_centers_and_modalities_list_as_rest_for_staff(graph: Graph, api: ApiServer) -> None:
    http = api.client("admin")
    centers = []
    for code in ("GQ-MAIN", "GQ-NORTH"):
        created = http.post("/api/imaging-centers", json={"name": f"Center {code}", "code": code})
        assert created.status_code == 201, created.text
        centers.append(created.json())
    for title, kind, status in (("GQ_CT_1", "CT", "active"), ("GQ_MR_1", "MR", "maintenance")):
        body = {
            "imaging_center_id": centers[0]["id"],
            "name": title,
            "type": kind,
            "dicom_ae_title": title,
            "status": status,
        }
        assert http.post("/api/modalities", json=body).status_code == 201
    tech = graph.client("technologist")

    listed = tech.execute(CENTERS, sort="-code", q="gq-")["imagingCenters"]
    rest = http.get("/api/imaging-centers", params={"sort": "-code", "q": "gq-"}).json()
    assert [e["node"]["code"] for e in listed["edges"]] == [c["code"] for c in rest["items"]]
    assert [e["node"]["code"] for e in listed["edges"]] == ["GQ-NORTH", "GQ-MAIN"]
    active = tech.execute(MODALITIES, centerId=centers[0]["id"], status="ACTIVE")["modalities"]
    assert [e["node"]["dicomAeTitle"] for e in active["edges"]] == ["GQ_CT_1"]
    mr = tech.execute(MODALITIES, type="MR")["modalities"]
    rest_mr = http.get("/api/modalities", params={"type": "MR"}).json()
    assert [e["node"]["id"] for e in mr["edges"]] == [m["id"] for m in rest_mr["items"]]
    assert tech.attempt(MODALITIES, type="mri").codes == ["BAD_USER_INPUT"]
    referring = graph.client("referring_physician")
    assert referring.attempt(CENTERS).codes == ["FORBIDDEN"]
    assert referring.attempt(MODALITIES).codes == ["FORBIDDEN"]


USER_FIELDS = "id username role displayName isActive isLead email"


def test_admins_create_and_change_users_audited_as_rest(graph: Graph, api: ApiServer) -> None:
    admin = graph.client("admin")
    created = admin.execute(
        f"mutation($input: CreateUserInput!) {{ createUser(input: $input) {{ {USER_FIELDS} }} }}",
        input={
            "username": "gq-new-rad",
            "password": "a long secret 1",
            "role": "RADIOLOGIST",
            "email": "new@example.org",
        },
    )["createUser"]
    assert (created["username"], created["role"], created["isActive"]) == (
        "gq-new-rad",
        "radiologist",
        True,
    )
    assert api.token("gq-new-rad", "a long secret 1")  # the account signs in
    update = f"""mutation($id: Int!, $input: UpdateUserInput!) {{
        updateUser(id: $id, input: $input) {{ {USER_FIELDS} }} }}"""
    changed = admin.execute(update, id=created["id"], input={"isLead": True, "role": None})[
        "updateUser"
    ]
    assert (changed["isLead"], changed["role"]) == (True, "radiologist")  # null: unchanged

    taken = admin.attempt(
        """mutation { createUser(input: {username: "gq-new-rad", password: "0123456789ab",
           role: SCHEDULER}) { id } }"""
    )
    short = admin.attempt(
        """mutation { createUser(input: {username: "gq-short", password: "short",
           role: SCHEDULER}) { id } }"""
    )
    me = user_id(api, admin.username)
    last_admin = admin.attempt(update, id=me, input={"isActive": False})

    assert taken.codes == ["CONFLICT"]
    assert (
        short.codes == ["BAD_USER_INPUT"] and short.errors[0]["extensions"]["field"] == "password"
    )
    assert last_admin.codes == ["CONFLICT"]  # the only admin of this test's database
    with api.db.read() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.target_id == str(created["id"]))
        ).all()
    assert sorted(actions) == ["sign_in", "user_created", "user_updated"]
    with api.db.read() as session:
        texts = [
            str(details)
            for details in session.scalars(
                select(AuditEvent.details).where(AuditEvent.actor == admin.username)
            )
        ]
    assert not any("a long secret 1" in text for text in texts)
    assert graph.client("scheduler").attempt(update, id=me, input={}).codes == ["FORBIDDEN"]


def test_admins_create_and_change_centers_and_modalities(graph: Graph) -> None:
    admin = graph.client("admin")
    center = admin.execute(
        """mutation { createImagingCenter(input: {name: "Center GQ-C", code: "GQ-C",
           location: "Here"}) { id code location } }"""
    )["createImagingCenter"]
    moved = admin.execute(
        """mutation($id: Int!) { updateImagingCenter(id: $id, input: {location: "There",
           name: null}) { name location } }""",
        id=center["id"],
    )["updateImagingCenter"]
    modality = admin.execute(
        """mutation($c: Int!) { createModality(input: {imagingCenterId: $c, name: "CT 9",
           type: "CT", dicomAeTitle: "GQ_CT_9"}) { id status type } }""",
        c=center["id"],
    )["createModality"]
    serviced = admin.execute(
        """mutation($id: Int!) { updateModality(id: $id, input: {status: MAINTENANCE}) {
           status dicomAeTitle } }""",
        id=modality["id"],
    )["updateModality"]

    assert moved == {"name": "Center GQ-C", "location": "There"}
    assert (modality["status"], modality["type"]) == ("ACTIVE", "CT")
    assert serviced == {"status": "MAINTENANCE", "dicomAeTitle": "GQ_CT_9"}
    again = admin.attempt(
        """mutation($c: Int!) { createModality(input: {imagingCenterId: $c, name: "CT 10",
           type: "CT", dicomAeTitle: "GQ_CT_9"}) { id } }""",
        c=center["id"],
    )
    bad_ae = admin.attempt(
        """mutation($c: Int!) { createModality(input: {imagingCenterId: $c, name: "CT 10",
           type: "CT", dicomAeTitle: "BAD\\\\AE"}) { id } }""",
        c=center["id"],
    )
    assert again.codes == ["CONFLICT"]
    assert bad_ae.codes == ["BAD_USER_INPUT"]
    tech = graph.client("technologist")
    assert tech.attempt(
        'mutation { createImagingCenter(input: {name: "T", code: "T"}) { id } }'
    ).codes == ["FORBIDDEN"]


def test_one_user_center_or_modality_by_id(graph: Graph, api: ApiServer) -> None:
    http = api.client("admin")
    center = http.post("/api/imaging-centers", json={"name": "One", "code": "GQ-ONE"}).json()
    body = {
        "imaging_center_id": center["id"],
        "name": "US",
        "type": "US",
        "dicom_ae_title": "GQ_US",
    }
    modality = http.post("/api/modalities", json=body).json()
    api.user("scheduler", username="gq-one-user", email="one@example.org")
    admin = graph.client("admin")
    one = "query($id: Int!) { user(id: $id) { username email } }"

    assert admin.execute(one, id=user_id(api, "gq-one-user"))["user"] == {
        "username": "gq-one-user",
        "email": "one@example.org",
    }
    assert admin.attempt(one, id=987654).codes == ["NOT_FOUND"]
    assert graph.client("radiologist").attempt(one, id=1).codes == ["FORBIDDEN"]
    tech = graph.client("technologist")
    assert tech.execute(
        "query($id: Int!) { imagingCenter(id: $id) { code } }", id=center["id"]
    ) == {"imagingCenter": {"code": "GQ-ONE"}}
    assert tech.execute(
        "query($id: Int!) { modality(id: $id) { dicomAeTitle } }", id=modality["id"]
    ) == {"modality": {"dicomAeTitle": "GQ_US"}}
    assert tech.attempt("{ modality(id: 987654) { id } }").codes == ["NOT_FOUND"]


def test_a_password_reset_revokes_the_users_tokens_and_is_audited_without_the_secret(
    graph: Graph, api: ApiServer
) -> None:
    admin = graph.client("admin")
    tech = graph.client("technologist")
    reset = "mutation($id: Int!, $p: String!) { resetUserPassword(id: $id, password: $p) { id } }"
    tech_id = user_id(api, tech.username)
    short = admin.attempt(reset, id=tech_id, p="short")
    assert (
        short.codes == ["BAD_USER_INPUT"] and short.errors[0]["extensions"]["field"] == "password"
    )

    admin.execute(reset, id=tech_id, p="brand new secret")

    with pytest.raises(TransportServerError) as revoked:
        tech.execute("{ me { username } }")
    assert revoked.value.code == 401  # the old token no longer signs in
    assert api.token(tech.username, "brand new secret")
    with api.db.read() as session:
        (details,) = session.scalars(
            select(AuditEvent.details).where(
                AuditEvent.action == "user_password_reset", AuditEvent.target_id == str(tech_id)
            )
        ).all()
    assert details == {"tokens_revoked": 1}
    assert graph.client("scheduler").attempt(reset, id=tech_id, p="another secret 2").codes == [
        "FORBIDDEN"
    ]
