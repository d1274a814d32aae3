"""The two live moments integrators subscribe for (issue 19, item 5): a new
study arriving, and the report of a referring physician's order being signed,
each pushed over graphql-transport-ws with the record it is about."""

from __future__ import annotations

import asyncio
from typing import Any

from gql import GraphQLRequest

from dicom_node.domain.audit import SystemActor
from dicom_node.domain.enums import Role
from dicom_node.services.ingest.importing import import_files
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.storage import FileStore
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph
from tests.builders import add_user, claimed_study, signed_report, user_id
from tests.support import SAMPLE_DIR

WAIT_SECONDS = 20.0
STUDIES = """subscription ($since: Int) {
  changes(since: $since, entities: ["study"]) { seq entity entityId action }
}"""
REPORTS = """subscription ($since: Int) {
  reportChanges(since: $since) { seq entityId report { id status impression } }
}"""


def latest(api: ApiServer) -> int:
    rest = api.client("admin")
    return int(rest.get("/api/changes", params={"limit": 1}).json()["latest"])


async def first_matching(
    session: Any, document: str, since: int, wanted: Any, trigger: Any
) -> dict[str, Any]:
    """Subscribe, run ``trigger`` (blocking: on a thread), and return the first
    event ``wanted`` accepts."""
    stream = session.subscribe(GraphQLRequest(document, variable_values={"since": since}))
    waiting = asyncio.ensure_future(asyncio.to_thread(trigger))
    try:
        while True:
            result = await asyncio.wait_for(anext(stream), WAIT_SECONDS)
            (event,) = result.values()
            if wanted(event):
                return dict(event)
    finally:
        await waiting
        await stream.aclose()


def test_a_new_study_is_pushed_to_a_radiologist(graph: Graph, api: ApiServer) -> None:
    radiologist = graph.client("radiologist")
    since = latest(api)
    files = sorted(SAMPLE_DIR.rglob("*.dcm"))[:1]

    def store() -> None:
        store = FileStore(api.settings.data_dir, fsync=False)
        import_files(api.db, store, files, policy=IngestPolicy(), actor=SystemActor.IMPORT)

    async def run() -> dict[str, Any]:
        async with radiologist.websocket() as session:
            return await first_matching(
                session, STUDIES, since, lambda e: e["action"] == "created", store
            )

    event = asyncio.run(asyncio.wait_for(run(), 60))
    assert event["entity"] == "study" and event["seq"] > since
    found = radiologist.execute("query ($id: Int!) { study(id: $id) { id } }", id=event["entityId"])
    assert found["study"]["id"] == event["entityId"]


def test_the_referring_physician_is_pushed_the_sign_off_of_their_order_s_report(
    graph: Graph, api: ApiServer
) -> None:
    referrer = graph.client("referring_physician")
    author = add_user(api.db, Role.RADIOLOGIST)
    reviewer = add_user(api.db, Role.RADIOLOGIST)
    theirs = claimed_study(api.db, author, referring_physician_id=user_id(api, referrer.username))
    another = claimed_study(api.db, author)
    since = latest(api)
    signed: list[int] = []

    def sign_both() -> None:
        # another physician's order first: its sign-off must not reach this referrer
        signed.append(signed_report(api.db, another, author, reviewer))
        signed.append(signed_report(api.db, theirs, author, reviewer))

    async def run() -> dict[str, Any]:
        async with referrer.websocket() as session:
            return await first_matching(
                session, REPORTS, since, lambda e: e["report"] is not None, sign_both
            )

    event = asyncio.run(asyncio.wait_for(run(), 60))
    assert event["report"]["status"] == "FINAL"
    assert event["report"]["id"] == event["entityId"] == signed[1]
    assert event["report"]["impression"]
