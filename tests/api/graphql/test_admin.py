"""Users, imaging centers and modalities through GraphQL: REST's listings and
filters, users:manage for accounts, and only a colleague's public fields
through a User edge."""

from __future__ import annotations

from typing import Any

import pytest

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
