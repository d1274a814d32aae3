"""A node that stops completes its GraphQL subscriptions instead of dropping them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.node import Node
from dicom_node.services.access.users import create_user
from tests.api.conftest import PASSWORD
from tests.builders import seed_study

SUBSCRIBE = "subscription { worklistChanges(since: 0) { seq } }"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_stopping_the_node_completes_a_live_subscription(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    assert node.db is not None
    with node.db.unit_of_work() as session:
        create_user(
            session,
            username="watcher",
            password=PASSWORD,
            role="radiologist",
            display_name="Watcher",
            actor=Actor.system(SystemActor.CLI),
        )
    seed_study(node.db)  # one worklist change in the feed
    base = f"127.0.0.1:{node.http_port}"
    token = httpx.post(
        f"http://{base}/api/auth/token", data={"username": "watcher", "password": PASSWORD}
    ).json()["access_token"]
    subscribed = threading.Event()

    async def listen() -> str:
        client = Client(
            transport=WebsocketsTransport(
                url=f"ws://{base}/graphql",
                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
                init_payload={"Authorization": f"Bearer {token}"},
            )
        )
        async with client as session:
            subscription = session.subscribe(GraphQLRequest(SUBSCRIBE))
            # the seeded item's event: the subscription is live on the server
            assert await anext(subscription, None) is not None
            subscribed.set()
            after = await anext(subscription, None)
            return "completed" if after is None else f"event {after}"

    stopper = threading.Thread(target=lambda: (subscribed.wait(30), node.stop()))
    stopper.start()
    try:
        outcome = asyncio.run(asyncio.wait_for(listen(), timeout=30))
    finally:
        stopper.join(30)
    assert outcome == "completed"
