"""Subscriptions over graphql-transport-ws: the change feed live, resumed with
``since``, capped per user, ended by a revoked token or a trimmed feed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from gql import GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportError, TransportQueryError
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from api.streams import RETRY_AFTER_SECONDS
from dicom_node.db import notify
from dicom_node.db.models import ChangeLogEntry
from dicom_node.jobs.maintenance import run_change_log_trim
from dicom_node.settings import Settings
from tests.api.conftest import ApiServer
from tests.api.graphql.conftest import Graph, GraphClient
from tests.builders import seed_study
from tests.conftest import node_settings

T = TypeVar("T")
CAP = 2
# how long a test waits for an event before it fails (never reached when it passes)
WAIT_SECONDS = 20.0

EVENT = "seq at entity entityId action payload"
WORKLIST = f"subscription($since: Int) {{ worklistChanges(since: $since) {{ {EVENT} }} }}"
ORDERS = f"subscription($since: Int) {{ orderChanges(since: $since) {{ {EVENT} }} }}"
REPORTS = f"subscription($since: Int) {{ reportChanges(since: $since) {{ {EVENT} }} }}"
CHANGES = (
    "subscription($since: Int, $entities: [String!]) "
    f"{{ changes(since: $since, entities: $entities) {{ {EVENT} }} }}"
)


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", graphql_max_subscriptions_per_user=CAP)


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), timeout=120))


def latest(rest: httpx.Client) -> int:
    return int(rest.get("/api/changes", params={"limit": 1}).json()["latest"])


def rest_feed(rest: httpx.Client, since: int, entity: str) -> list[dict[str, Any]]:
    """The feed after ``since`` as REST pages it, in the subscription's shape."""
    body = rest.get("/api/changes", params={"since": since, "entity": entity}).json()
    return [
        {
            "seq": item["seq"],
            "entity": item["entity"],
            "entityId": item["entity_id"],
            "action": item["action"],
            "payload": item["payload"],
        }
        for item in body["items"]
    ]


def shape(event: dict[str, Any]) -> dict[str, Any]:
    return {key: event[key] for key in ("seq", "entity", "entityId", "action", "payload")}


async def events(
    session: AsyncClientSession, document: str, **variables: Any
) -> AsyncIterator[dict[str, Any]]:
    async for result in session.subscribe(GraphQLRequest(document, variable_values=variables)):
        for event in result.values():
            yield event


async def next_event(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(stream), WAIT_SECONDS)


async def refusal(client: GraphClient, document: str, **variables: Any) -> list[str]:
    """The codes of the errors a subscription gets instead of (or after) events."""
    async with client.websocket() as session:
        with pytest.raises(TransportQueryError) as refused:
            async for _ in events(session, document, **variables):
                pass
    return codes(refused.value)


def codes(refused: TransportQueryError) -> list[str]:
    return [str((error.get("extensions") or {}).get("code")) for error in refused.errors or []]


def claim(rest: httpx.Client, item_id: int) -> None:
    assert rest.post(f"/api/worklist/{item_id}/claim").status_code == 200


def release(rest: httpx.Client, item_id: int) -> None:
    assert rest.post(f"/api/worklist/{item_id}/release").status_code == 200


def test_worklist_changes_made_over_rest_arrive_live_and_a_reconnect_resumes_after_since(
    graph: Graph, api: ApiServer
) -> None:
    reader = graph.client("radiologist")
    radiologist = api.client("radiologist")
    seeded = seed_study(api.db)
    start = latest(radiologist)

    async def test() -> None:
        async with reader.websocket() as session:
            stream = events(session, WORKLIST, since=start)
            claim(radiologist, seeded.item_id)
            first = await next_event(stream)
            # made while the subscription waits: it wakes up for it
            release(radiologist, seeded.item_id)
            second = await next_event(stream)
            await stream.aclose()
        assert [shape(first), shape(second)] == rest_feed(radiologist, start, "worklist_item")
        assert first["entityId"] == seeded.item_id and first["seq"] > start
        datetime.fromisoformat(first["at"])

        # the connection is gone; changes meanwhile are not lost
        claim(radiologist, seeded.item_id)
        release(radiologist, seeded.item_id)
        missed = rest_feed(radiologist, second["seq"], "worklist_item")
        assert len(missed) == 2
        async with reader.websocket() as session:
            stream = events(session, WORKLIST, since=second["seq"])
            resumed = [shape(await next_event(stream)) for _ in missed]
            await stream.aclose()
        assert resumed == missed

    run(test)


def test_without_since_a_subscription_starts_at_the_present(graph: Graph, api: ApiServer) -> None:
    scheduler = api.client("scheduler")
    watcher = graph.client("scheduler")
    before = scheduler.post("/api/orders", json=order_body("PAST")).json()["id"]
    start = latest(scheduler)
    stop = threading.Event()
    made: list[int] = []

    def keep_ordering() -> None:
        # the subscription's start is not observable from here: orders keep
        # coming until one arrives
        while not stop.is_set():
            answer = scheduler.post("/api/orders", json=order_body(f"NOW{len(made)}"))
            made.append(answer.json()["id"])
            stop.wait(0.05)

    async def test() -> dict[str, Any]:
        async with watcher.websocket() as session:
            stream = events(session, ORDERS)
            writer = threading.Thread(target=keep_ordering)
            writer.start()
            try:
                return await next_event(stream)
            finally:
                stop.set()
                await asyncio.to_thread(writer.join)
                await stream.aclose()

    first = run(test)
    assert first["entity"] == "order" and first["action"] == "created"
    assert first["entityId"] != before and first["entityId"] in made
    assert first["seq"] > start


def order_body(patient_id: str) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "issuer_of_patient_id": "HOSP",
        "patient_name": "DOE^JANE",
        "requested_modality": "CT",
        "study_description": "CT HEAD",
        "priority": "routine",
    }


def test_each_subscription_needs_the_areas_read_permission_and_good_arguments(
    graph: Graph,
) -> None:
    technologist = graph.client("technologist")
    physician = graph.client("referring_physician")

    async def test() -> None:
        assert await refusal(technologist, REPORTS) == ["FORBIDDEN"]
        assert await refusal(physician, WORKLIST) == ["FORBIDDEN"]
        assert await refusal(technologist, ORDERS, since=-1) == ["BAD_USER_INPUT"]
        assert await refusal(technologist, CHANGES, entities=["patient"]) == ["BAD_USER_INPUT"]

    run(test)


def test_a_referring_physician_gets_only_their_orders_changes(graph: Graph, api: ApiServer) -> None:
    physician = graph.client("referring_physician")
    own = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {physician.token}"}
    )
    api.clients.append(own)
    scheduler = api.client("scheduler")
    start = latest(scheduler)
    scheduler.post("/api/orders", json=order_body("OTHER"))
    mine = own.post("/api/orders", json=order_body("MINE"))
    assert mine.status_code == 201, mine.text

    async def test() -> dict[str, Any]:
        async with physician.websocket() as session:
            stream = events(session, CHANGES, since=start, entities=["order", "report"])
            event = await next_event(stream)
            await stream.aclose()
            return event

    event = run(test)
    # the other order's entry came first in the feed: skipped, not sent
    assert (event["entity"], event["entityId"]) == ("order", mine.json()["id"])


def test_a_user_holds_at_most_the_cap_over_all_connections_and_a_dropped_one_frees_its_slot(
    graph: Graph, api: ApiServer
) -> None:
    watcher = graph.client("scheduler")
    other = graph.client("scheduler")
    scheduler = api.client("scheduler")
    start = latest(scheduler)
    scheduler.post("/api/orders", json=order_body("CAP"))

    async def holding(
        client: GraphClient, until: asyncio.Event, held: asyncio.Event, *, abrupt: bool = False
    ) -> None:
        # one connection holding one subscription, with its first event received
        async with client.websocket() as session:
            stream = events(session, ORDERS, since=start)
            await next_event(stream)
            held.set()
            await until.wait()
            if abrupt:
                # the TCP connection cut, no close frame (a client that crashed)
                socket = session.transport.adapter.websocket  # type: ignore[attr-defined]
                socket.transport.abort()
                with contextlib.suppress(TransportError, ConnectionClosed):
                    await stream.aclose()
                return
            await stream.aclose()

    async def hold(**options: bool) -> tuple[asyncio.Task[None], asyncio.Event]:
        until, held = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(holding(watcher, until, held, **options))
        await asyncio.wait_for(held.wait(), WAIT_SECONDS)
        return task, until

    async def wait_for_a_slot() -> None:
        # the server frees a slot once it sees the socket closed
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                async with watcher.websocket() as session:
                    stream = events(session, ORDERS, since=start)
                    await next_event(stream)
                    await stream.aclose()
                return
            except TransportQueryError as exc:
                refused = codes(exc)
            assert refused == ["TOO_MANY_REQUESTS"]
            assert time.monotonic() < deadline, "a closed subscription kept its slot"
            await asyncio.sleep(0.05)  # the poll interval of this wait

    async def test() -> None:
        first, drop_first = await hold()
        second, drop_second = await hold(abrupt=True)
        async with watcher.websocket() as session:
            with pytest.raises(TransportQueryError) as refused:
                await next_event(events(session, ORDERS, since=start))
        assert refused.value.errors == [
            {
                "message": f"{CAP} subscriptions already open for this user (at most {CAP} "
                "on this node): stop one first",
                "extensions": {"code": "TOO_MANY_REQUESTS", "retryAfter": RETRY_AFTER_SECONDS},
            }
        ]
        # per user: another user is not refused
        done, other_held = asyncio.Event(), asyncio.Event()
        done.set()
        await holding(other, done, other_held)
        assert other_held.is_set()

        drop_first.set()
        await first
        await wait_for_a_slot()
        third, drop_third = await hold()
        assert await refusal(watcher, ORDERS, since=start) == ["TOO_MANY_REQUESTS"]
        drop_second.set()
        await second
        await wait_for_a_slot()
        drop_third.set()
        await third

    run(test)


def test_signing_out_over_rest_ends_the_subscription_unauthenticated(
    graph: Graph, api: ApiServer
) -> None:
    watcher = graph.client("scheduler")
    scheduler = api.client("scheduler")
    start = latest(scheduler)
    scheduler.post("/api/orders", json=order_body("BYE"))
    signed_in = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {watcher.token}"}
    )
    api.clients.append(signed_in)

    async def test() -> list[str]:
        async with watcher.websocket() as session:
            stream = events(session, ORDERS, since=start)
            await next_event(stream)
            assert signed_in.post("/api/auth/logout").status_code == 204
            with pytest.raises(TransportQueryError) as ended:
                await next_event(stream)
        return codes(ended.value)

    assert run(test) == ["UNAUTHENTICATED"]


def test_resuming_from_a_trimmed_part_of_the_feed_is_gone_with_the_feed_start(
    graph: Graph, api: ApiServer
) -> None:
    watcher = graph.client("scheduler")
    scheduler = api.client("scheduler")
    for index in range(3):
        scheduler.post("/api/orders", json=order_body(f"TRIM{index}"))
    with api.db.read() as session:
        seqs = list(session.scalars(select(ChangeLogEntry.seq).order_by(ChangeLogEntry.seq)))
    run_change_log_trim(api.db, keep_days=1, now=datetime.now(UTC) + timedelta(days=2))

    async def test() -> list[dict[str, Any]]:
        async with watcher.websocket() as session:
            with pytest.raises(TransportQueryError) as gone:
                async for _ in events(session, ORDERS, since=seqs[0]):
                    pass
        return list(gone.value.errors or [])

    errors = run(test)
    assert [e["extensions"]["code"] for e in errors] == ["GONE"]
    assert errors[0]["extensions"]["feedStart"] == seqs[-1]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("accept", ["application/json", "multipart/mixed;subscriptionSpec=1.0"])
def test_a_subscription_over_http_is_refused_before_it_runs(
    graph: Graph, api: ApiServer, accept: str
) -> None:
    client = graph.client("scheduler")
    document = "query Me { me { username } } subscription Feed { changes(since: 0) { seq } }"

    def post(operation: str) -> httpx.Response:
        return api.anonymous().post(
            "/graphql",
            json={"query": document, "operationName": operation},
            headers={"Authorization": f"Bearer {client.token}", "Accept": accept},
        )

    refused = post("Feed")
    assert refused.status_code == 400
    assert "WebSocket" in refused.text
    # the same document's query runs
    answered = post("Me")
    assert answered.status_code == 200
    assert answered.json()["data"]["me"]["username"] == client.username


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_with_change_notifications_a_subscription_is_woken_by_a_commit(
    graph: Graph, api: ApiServer
) -> None:
    # as a node runs on PostgreSQL (node.py starts it): waits on LISTEN, not a poll
    listener = notify.start_listener(api.db)
    assert listener is not None and listener.connected.is_set()
    try:
        watcher = graph.client("scheduler")
        scheduler = api.client("scheduler")
        start = latest(scheduler)

        async def test() -> list[dict[str, Any]]:
            async with watcher.websocket() as session:
                stream = events(session, ORDERS, since=start)
                scheduler.post("/api/orders", json=order_body("WOKEN1"))
                received = [await next_event(stream)]
                # the subscription now waits for a notification
                scheduler.post("/api/orders", json=order_body("WOKEN2"))
                received.append(await next_event(stream))
                await stream.aclose()
                return received

        received = run(test)
    finally:
        notify.stop_listener(api.db)
    assert [shape(event) for event in received] == rest_feed(scheduler, start, "order")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_events_record_edge_needs_its_read_permission_and_is_null_for_another_entity(
    graph: Graph, api: ApiServer
) -> None:
    scheduler = graph.client("scheduler")
    physician = graph.client("referring_physician")
    own = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {physician.token}"}
    )
    api.clients.append(own)
    start = latest(own)
    assert own.post("/api/orders", json=order_body("EDGE")).status_code == 201
    edge = (
        "subscription($since: Int) "
        f"{{ orderChanges(since: $since) {{ {EVENT} worklistItem {{ id }} }} }}"
    )

    async def test() -> tuple[dict[str, Any], list[str]]:
        # a scheduler may read worklist items: an order's event has none
        async with scheduler.websocket() as session:
            stream = events(session, edge, since=start)
            event = await next_event(stream)
            await stream.aclose()
        # a referring physician may not: the edge is refused, not silently null
        return event, await refusal(physician, edge, since=start)

    event, codes_ = run(test)
    assert event["entity"] == "order" and event["worklistItem"] is None
    assert codes_ == ["FORBIDDEN"]
