"""The edges between the GraphQL areas end to end (each area was built and
tested alone): a worklist page with its studies, patients, orders, reports and
holders in a fixed number of statements, an order's and a study's neighbours,
a referring physician's view through the edges, subscription records' edges,
and a field refused on its own while the rest of the page comes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sql_event

from dicom_node.domain.enums import Role
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.api.graphql.test_orders import create, user_id
from tests.api.graphql.test_reconciliation import LINK, scheduled_order
from tests.api.test_reconciliation import arrive
from tests.builders import add_user, claimed_study, new_report


@contextmanager
def statements(api: ApiServer) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (the server runs in this process)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sql_event.listen(api.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sql_event.remove(api.db.engine, "before_cursor_execute", record)


# --------------------------------------------------------------------------- worklist page

PAGE = """
query ($first: Int!) { worklist(first: $first) { edges { node {
  id priority
  study { studyInstanceUid patientName }
  patient { patientId }
  order { accessionNumber }
  report { status }
  assignedTo { username }
} } } }
"""


BATCHES = {
    "SELECT dicom_studies.id, patients.id": 1,
    "SELECT imaging_requests.id": 1,
    "SELECT reports.id": 1,
    "SELECT users.id": 2,
}


def test_a_worklist_page_with_its_neighbours_costs_the_same_statements_at_any_size(
    graph: Graph, api: ApiServer
) -> None:
    admin = graph.client("admin")
    holder = add_user(api.db, Role.RADIOLOGIST)
    for _ in range(40):
        new_report(api.db, claimed_study(api.db, holder), holder)

    counts: dict[int, int] = {}
    for size in (5, 40):
        with statements(api) as seen:
            nodes = [edge["node"] for edge in admin.execute(PAGE, first=size)["worklist"]["edges"]]
        assert len(nodes) == size
        for node in nodes:
            assert node["study"]["studyInstanceUid"] and node["study"]["patientName"]
            assert node["patient"]["patientId"].startswith("RS")
            assert node["order"]["accessionNumber"].startswith("RSA")
            assert node["report"] == {"status": "DRAFT"}
            assert node["assignedTo"] == {"username": holder.username}
        # BEGIN is a statement of its own on SQLite only (the engine's
        # transaction hook): counted apart so that one bound fits both backends
        work = [s for s in seen if not s.startswith("BEGIN")]
        counts[size] = len(work)
        # one batch per kind (users: the caller's token and the holders' batch)
        for batch, times in BATCHES.items():
            assert len([s for s in work if s.startswith(batch)]) == times, (batch, work)
    # One page of any size: the caller's token (1), the listing and its total
    # (2), the listing's audit event (2: the chain's head and the insert; 3 on
    # PostgreSQL with its advisory lock), then one batch per neighbour kind:
    # patients (1), orders (1), reports (1), users (1); the study comes with the
    # listing's entries. Measured: 9 on SQLite, 10 on PostgreSQL.
    assert counts[5] == counts[40] <= 10, counts


# --------------------------------------------------------------------------- orders

ORDER_EDGES = """
query ($id: Int!) { order(id: $id) {
  id studies { id order { id } } requestedBy { id username } referringPhysician { id }
} }
"""
ORDERS_PAGE = """
{ orders(first: 50) { edges { node { id studies { id } requestedBy { id } } } } }
"""


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


def test_an_orders_studies_and_users_through_the_other_areas(
    graph: Graph, api: ApiServer, store: FileStore
) -> None:
    admin = graph.client("admin")
    physician = graph.client("referring_physician", display_name="Who Refers")
    order = scheduled_order(api, admin)
    study_id = arrive(api, store)
    admin.execute(LINK, studyId=study_id, input={"orderId": order["id"], "reason": "x"})
    data = admin.execute(ORDER_EDGES, id=order["id"])["order"]
    assert data["studies"] == [{"id": study_id, "order": {"id": order["id"]}}]
    assert data["requestedBy"] == {"id": user_id(api, admin.username), "username": admin.username}
    assert data["referringPhysician"] is None

    # the user records are users:manage (as REST's /api/users): refused field
    # by field, the order itself comes back
    own = create(physician, patientId="P-OWN")
    mine = physician.attempt(ORDER_EDGES, id=own["id"])
    assert mine.codes == ["FORBIDDEN", "FORBIDDEN"]
    assert mine.data is not None and mine.data["order"]["studies"] == []

    for n in range(5):
        create(admin, patientId=f"PAGE{n}")
    with statements(api) as seen:
        page = admin.execute(ORDERS_PAGE)["orders"]["edges"]
    assert len(page) == 7
    # two batches for the whole page, not one per order: the orders' study
    # ids, then those studies
    studies = [s for s in seen if "FROM dicom_studies" in s]
    assert len(studies) == 2, studies
