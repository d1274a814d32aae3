"""Reports through GraphQL: the life cycle over the REST services, with REST's
audit events, refusals and the referring physician's view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from dicom_node.domain.enums import Role
from dicom_node.domain.permissions import Principal
from dicom_node.services.reporting.views import ReportCore, reports_of_studies
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph, GraphClient
from tests.builders import Seeded, audit_actions, seed_study, user_id

REPORT = """
fragment R on Report {
  id status findings impression version authorId reviewerId signedAt updatedAt
  contentVersion criticalFlag
}
"""
CREATE = (
    REPORT
    + """
mutation($input: CreateReportInput!) { createReport(input: $input) { ...R } }
"""
)
UPDATE = (
    REPORT
    + """
mutation($id: Int!, $input: UpdateReportInput!) { updateReport(id: $id, input: $input) { ...R } }
"""
)
SUBMIT = REPORT + "mutation($id: Int!) { submitReport(id: $id) { ...R } }"
SIGN = REPORT + "mutation($id: Int!) { signReport(id: $id) { ...R } }"
RETURN = REPORT + "mutation($id: Int!, $c: String!) { returnReport(id: $id, comment: $c) { ...R } }"
ADDENDUM = (
    REPORT
    + "mutation($id: Int!, $input: AddendumInput!) { addendum(id: $id, input: $input) { ...R } }"
)
ONE = (
    REPORT
    + """
query($id: Int!) {
  report(id: $id) {
    ...R
    versions { version kind status findings impression authorId signedById comment }
    criticalCommunications { finding communicatedTo method deadlineMet }
  }
}
"""
)
LIST = """
query($first: Int, $after: String, $status: ReportStatus, $studyId: Int) {
  reports(first: $first, after: $after, status: $status, studyId: $studyId) {
    totalCount
    edges { cursor node { id status findings impression criticalFlag } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def rest(graph: Graph, client: GraphClient) -> httpx.Client:
    """The same user over REST (claims are REST's business)."""
    return httpx.Client(
        base_url=graph.server.base_url,
        timeout=30,
        headers={"Authorization": f"Bearer {client.token}"},
    )


def drafted(graph: Graph, author: GraphClient, **seed: Any) -> tuple[Seeded, dict[str, Any]]:
    seeded = seed_study(graph.server.db, **seed)
    with rest(graph, author) as http:
        assert http.post(f"/api/worklist/{seeded.item_id}/claim").status_code == 200
    data = author.execute(
        CREATE,
        input={"studyId": seeded.study_id, "findings": "Clear lungs.", "impression": "Normal."},
    )
    return seeded, data["createReport"]


def test_the_life_cycle_draft_submit_sign_addendum_with_rest_audit_events(
    graph: Graph, api: ApiServer
) -> None:
    author, reviewer = graph.client("radiologist"), graph.client("radiologist")
    seeded, report = drafted(graph, author)
    rid = report["id"]
    assert (report["status"], report["version"]) == ("DRAFT", 1)
    assert report["authorId"] == user_id(api, author.username)

    edited = author.execute(UPDATE, id=rid, input={"findings": "Small nodule."})["updateReport"]
    assert (edited["findings"], edited["impression"]) == ("Small nodule.", "Normal.")
    assert author.execute(SUBMIT, id=rid)["submitReport"]["status"] == "IN_REVIEW"
    signed = reviewer.execute(SIGN, id=rid)["signReport"]
    assert signed["status"] == "FINAL"
    assert signed["reviewerId"] == user_id(api, reviewer.username)
    assert signed["signedAt"] is not None
    amended = author.execute(ADDENDUM, id=rid, input={"impression": "Normal. See addendum."})
    assert amended["addendum"]["status"] == "REVISED"

    shown = author.execute(ONE, id=rid)["report"]
    assert shown["impression"] == "Normal. See addendum."
    assert [(v["kind"], v["status"]) for v in shown["versions"]] == [
        ("preliminary", "in_review"),
        ("final", "final"),
        ("addendum", "revised"),
    ]
    # the same events, with the same actions, as the REST route writes
    actions = [event.action for event in audit_actions(api, "Report", rid)]
    assert actions == [
        "report_created",
        "report_edited",
        "report_submitted",
        "report_finalized",
        "report_addendum",
        "report_read",
        "report_versions_read",
    ]
    event = audit_actions(api, "Report", rid)[1]
    assert event.details == {
        "before": {"findings": "Clear lungs."},
        "after": {"findings": "Small nodule."},
    }
    assert event.patient_id == seeded.patient_id


def test_an_edit_over_a_changed_report_is_a_conflict(graph: Graph) -> None:
    author = graph.client("radiologist")
    _, report = drafted(graph, author)
    first = author.execute(
        UPDATE, id=report["id"], input={"findings": "A", "expectedUpdatedAt": report["updatedAt"]}
    )["updateReport"]
    assert first["findings"] == "A"

    stale = author.attempt(
        UPDATE, id=report["id"], input={"findings": "B", "expectedUpdatedAt": report["updatedAt"]}
    )

    assert stale.codes == ["CONFLICT"]
    assert author.execute(ONE, id=report["id"])["report"]["findings"] == "A"


def test_the_author_may_not_sign_their_own_report_nor_another_edit_it(graph: Graph) -> None:
    author, other = graph.client("radiologist"), graph.client("radiologist")
    _, report = drafted(graph, author)
    assert other.attempt(UPDATE, id=report["id"], input={"findings": "x"}).codes == ["FORBIDDEN"]
    author.execute(SUBMIT, id=report["id"])

    assert author.attempt(SIGN, id=report["id"]).codes == ["FORBIDDEN"]
    returned = other.execute(RETURN, id=report["id"], c="Mention the nodule size.")
    assert returned["returnReport"]["status"] == "DRAFT"
    # final text is immutable: another edit of a final report is a CONFLICT
    assert other.attempt(RETURN, id=report["id"], c="again").codes == ["CONFLICT"]


def test_bad_input_is_bad_user_input_naming_the_field(graph: Graph) -> None:
    author = graph.client("radiologist")
    _, report = drafted(graph, author)
    outcome = author.attempt(UPDATE, id=report["id"], input={"findings": "bad\u0000text"})
    assert outcome.codes == ["BAD_USER_INPUT"]
    assert outcome.errors[0]["extensions"]["field"] == "findings"
    author.execute(SUBMIT, id=report["id"])
    other = graph.client("radiologist")
    assert other.attempt(RETURN, id=report["id"], c="   ").codes == ["BAD_USER_INPUT"]
    assert graph.client("admin").attempt(ONE, id=987654).codes == ["NOT_FOUND"]


@pytest.mark.parametrize(
    ("role", "document", "variables"),
    [
        ("technologist", LIST, {}),
        ("scheduler", ONE, {"id": 1}),
        ("admin", CREATE, {"input": {"studyId": 1}}),
        ("auditor", SUBMIT, {"id": 1}),
        ("referring_physician", SIGN, {"id": 1}),
        ("admin", RETURN, {"id": 1, "c": "no"}),
    ],
)
def test_roles_without_the_permission_are_forbidden(
    graph: Graph, role: str, document: str, variables: dict[str, Any]
) -> None:
    assert graph.client(role).attempt(document, **variables).codes == ["FORBIDDEN"]


def test_a_referring_physician_sees_only_signed_reports_of_their_orders(
    graph: Graph, api: ApiServer
) -> None:
    referring = graph.client("referring_physician")
    stranger = graph.client("referring_physician")
    author, reviewer = graph.client("radiologist"), graph.client("radiologist")
    _, report = drafted(graph, author, requested_by_id=user_id(api, referring.username))
    rid = report["id"]
    assert referring.attempt(ONE, id=rid).codes == ["NOT_FOUND"]  # a draft: not theirs yet
    assert referring.execute(LIST)["reports"]["totalCount"] == 0

    author.execute(SUBMIT, id=rid)
    reviewer.execute(SIGN, id=rid)
    author.execute(ADDENDUM, id=rid, input={"impression": "I2 unsigned"})

    shown = referring.execute(ONE, id=rid)["report"]
    assert (shown["impression"], shown["contentVersion"]) == ("Normal.", 2)
    assert [v["kind"] for v in shown["versions"]] == ["final"]
    listed = referring.execute(LIST)["reports"]
    assert [edge["node"]["id"] for edge in listed["edges"]] == [rid]
    assert listed["edges"][0]["node"]["impression"] == "Normal."  # the signed text
    assert stranger.attempt(ONE, id=rid).codes == ["NOT_FOUND"]
    assert stranger.execute(LIST)["reports"]["totalCount"] == 0


def test_the_listing_pages_and_filters_as_rest(graph: Graph, api: ApiServer) -> None:
    author = graph.client("radiologist")
    ids = [drafted(graph, author)[1]["id"] for _ in range(3)]
    author.execute(SUBMIT, id=ids[0])
    admin = graph.client("admin")
    http = api.client("admin")

    first = admin.execute(LIST, first=2)["reports"]
    second = admin.execute(LIST, first=2, after=first["pageInfo"]["endCursor"])["reports"]
    drafts = admin.execute(LIST, status="DRAFT")["reports"]

    rest_all = http.get("/api/reports", params={"limit": 4}).json()
    got = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert got[:4] == [item["id"] for item in rest_all["items"]][: len(got[:4])]
    assert first["totalCount"] == rest_all["total"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest_drafts = http.get("/api/reports", params={"status": "draft"}).json()
    assert [e["node"]["id"] for e in drafts["edges"]] == [i["id"] for i in rest_drafts["items"]]
    assert ids[0] not in [e["node"]["id"] for e in drafts["edges"]]


def test_a_critical_report_needs_a_communication_recorded_then_acknowledged(
    graph: Graph,
) -> None:
    author = graph.client("radiologist")
    _, report = drafted(graph, author)
    rid = report["id"]
    author.execute(UPDATE, id=rid, input={"criticalFlag": True})
    assert author.attempt(SUBMIT, id=rid).codes == ["BAD_USER_INPUT"]

    recorded = author.execute(
        """
        mutation($id: Int!, $input: CriticalCommunicationInput!) {
          recordCriticalCommunication(reportId: $id, input: $input) {
            id communicatedTo method deadlineMet acknowledgedAt
          }
        }""",
        id=rid,
        input={
            "finding": "Tension pneumothorax",
            "communicatedTo": "Dr Ward, ED attending",
            "method": "PHONE",
            "communicatedAt": datetime.now(UTC).isoformat(),
        },
    )["recordCriticalCommunication"]
    acknowledged = author.execute(
        """
        mutation($id: Int!, $cid: Int!) {
          acknowledgeCriticalCommunication(reportId: $id, communicationId: $cid) {
            acknowledgedAt
          }
        }""",
        id=rid,
        cid=recorded["id"],
    )["acknowledgeCriticalCommunication"]

    assert recorded["deadlineMet"] is True and recorded["method"] == "phone"
    assert acknowledged["acknowledgedAt"] is not None
    assert author.execute(SUBMIT, id=rid)["submitReport"]["status"] == "IN_REVIEW"
    shown = author.execute(ONE, id=rid)["report"]["criticalCommunications"]
    assert [c["communicatedTo"] for c in shown if c["communicatedTo"]] == ["Dr Ward, ED attending"]


def _statements(api: ApiServer, client: GraphClient, document: str) -> int:
    """How many SQL statements the node ran to answer ``document``."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(api.db.engine, "before_cursor_execute", count)
    try:
        client.execute(document)
    finally:
        event.remove(api.db.engine, "before_cursor_execute", count)
    return len(seen)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_page_of_reports_with_their_people_and_communications_is_a_fixed_number_of_statements(
    graph: Graph, api: ApiServer
) -> None:
    page = """
    { reports(first: 50) { edges { node {
        id radiologist { username } reviewer { username }
        criticalCommunications { finding }
    } } } }
    """
    admin = graph.client("admin")
    for _ in range(2):
        drafted(graph, graph.client("radiologist"))
    two = _statements(api, admin, page)
    for _ in range(4):
        drafted(graph, graph.client("radiologist"))

    six = _statements(api, admin, page)

    assert six == two


def test_the_batch_loads_apply_the_referring_physicians_rule_per_study(
    graph: Graph, api: ApiServer
) -> None:
    """What a worklist or study page reaches through ``report_of_study``."""
    referring = graph.client("referring_physician")
    author, reviewer = graph.client("radiologist"), graph.client("radiologist")
    seeded, report = drafted(graph, author, requested_by_id=user_id(api, referring.username))
    other, _ = drafted(graph, author)
    reader = Principal(
        user_id=user_id(api, referring.username),
        username=referring.username,
        role=Role.REFERRING_PHYSICIAN,
    )
    radiologist = Principal(
        user_id=user_id(api, author.username), username=author.username, role=Role.RADIOLOGIST
    )
    studies = [seeded.study_id, other.study_id, 987654]

    def loaded(principal: Principal) -> dict[int, ReportCore]:
        with api.db.read() as session:
            return reports_of_studies(session, studies, principal)

    assert loaded(reader) == {}  # a draft: nothing signed yet
    assert set(loaded(radiologist)) == {seeded.study_id, other.study_id}
    author.execute(SUBMIT, id=report["id"])
    reviewer.execute(SIGN, id=report["id"])
    author.execute(ADDENDUM, id=report["id"], input={"impression": "unsigned"})

    signed = loaded(reader)
    assert list(signed) == [seeded.study_id]  # not the other order's study
    assert (signed[seeded.study_id].impression, signed[seeded.study_id].content_version) == (
        "Normal.",
        2,
    )
    assert loaded(radiologist)[seeded.study_id].impression == "unsigned"


def test_text_shown_through_the_listing_is_audited_as_report_read_once_per_report(
    graph: Graph, api: ApiServer
) -> None:
    author = graph.client("radiologist")
    ids = [drafted(graph, author)[1]["id"] for _ in range(2)]
    admin = graph.client("admin")
    without_text = "{ reports { edges { node { id status } } } }"
    with_text = "{ reports { edges { node { id findings impression } } } }"

    admin.execute(without_text)
    untouched = {rid: [e.action for e in audit_actions(api, "Report", rid)] for rid in ids}
    admin.execute(with_text)

    for rid in ids:
        events = audit_actions(api, "Report", rid)
        assert [e.action for e in events] == [*untouched[rid], "report_read"]
        assert events[-1].actor == admin.username
        assert events[-1].details == {"status": "draft", "content_version": None}
    assert all(actions == ["report_created"] for actions in untouched.values())
