"""graphql-transport-ws done right, and the tenant-wide session feed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import start_ok, wait_for_run
from tests.support.cluster import cluster
from tests.support.graphql_ws import GraphQLWSClient, Subscription, raw_ws, recv_json, send_json, wait_close
from tests.support.servers import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

SESSION_CHANGES = "subscription { sessionChanges { kind session { id status title totalCostUsd } } }"


async def test_a_duplicate_operation_id_closes_4409(stack: Stack) -> None:
    async with raw_ws(stack.api.ws_url) as ws:
        await send_json(ws, {"type": "connection_init", "payload": {"Authorization": f"Bearer {stack.key}"}})
        assert (await recv_json(ws))["type"] == "connection_ack"
        subscribe = {"query": "subscription { sessionChanges { kind } }"}
        await send_json(ws, {"id": "same", "type": "subscribe", "payload": subscribe})
        await send_json(ws, {"id": "same", "type": "subscribe", "payload": subscribe})
        code, _ = await wait_close(ws, timeout=10)
    assert code == 4409


async def test_session_changes_feed_the_tenants_dashboard_and_only_theirs(stack: Stack) -> None:
    async with (
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as mine,
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.other_key) as theirs,
    ):
        my_feed = await mine.subscribe(SESSION_CHANGES)
        their_feed = await theirs.subscribe(SESSION_CHANGES)
        async with stack.client() as client, stack.client(stack.other_key) as other_client:
            started = await start_ok(client, prompt="dashboard me")
            session_id = started["session"]["id"]
            changes: list[dict[str, Any]] = []
            while not changes or changes[-1]["session"]["status"] != "IDLE":
                change = (await my_feed.next(timeout=30))["data"]["sessionChanges"]
                if change["session"]["id"] == session_id:
                    changes.append(change)
            theirs_started = await start_ok(other_client, prompt="someone else's")
            await wait_for_run(other_client, theirs_started["run"]["id"])
            their_ids = set()
            while theirs_started["session"]["id"] not in their_ids:
                their_ids.add((await their_feed.next(timeout=30))["data"]["sessionChanges"]["session"]["id"])
    assert changes[0]["kind"] == "CREATED"
    assert changes[0]["session"]["title"] == "dashboard me"
    assert {c["kind"] for c in changes[1:]} == {"STATUS_CHANGED"}
    assert "RUNNING" in [c["session"]["status"] for c in changes]
    assert changes[-1]["session"]["totalCostUsd"] > 0
    assert session_id not in their_ids


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455), for a peer that speaks WebSocket by hand."""
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_peer_that_stops_answering_is_noticed_and_its_subscription_freed(tmp_path: Path) -> None:
    env = {"WS_PING_INTERVAL_SECONDS": "0.5", "WS_PING_TIMEOUT_SECONDS": "0.5"}
    async with cluster(tmp_path, embedded=True, env=env) as c:
        replica = c.replicas[0]
        baseline = await c.metric(replica, "agent_bus_live_watchers")
        reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {c.key}"}}
        subscribe = {"id": "1", "type": "subscribe", "payload": {"query": SESSION_CHANGES}}
        writer.write(_frame(json.dumps(init).encode()) + _frame(json.dumps(subscribe).encode()))
        await writer.drain()
        # From here on the peer is dead: it reads nothing and answers no ping.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while await c.metric(replica, "agent_bus_live_watchers") <= baseline:
            assert loop.time() < deadline, "the subscription never started"
            await asyncio.sleep(0.1)
        while await c.metric(replica, "agent_bus_live_watchers") > baseline:
            assert loop.time() < deadline, "the dead peer's subscription is still held"
            await asyncio.sleep(0.1)
        writer.close()


@pytest.mark.parametrize("payload", [None, "not an object"])
async def test_a_malformed_connection_init_is_refused_and_the_server_goes_on(
    stack: Stack, payload: object
) -> None:
    async with raw_ws(stack.api.ws_url) as ws:
        await send_json(ws, {"type": "connection_init", "payload": payload})
        code, _ = await wait_close(ws, timeout=10)
    assert code in (4400, 4403)
    async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws_ok:
        assert "errors" not in await ws_ok.execute("{ sessions { edges { cursor } } }")


async def test_session_changes_dropped_by_a_redis_outage_come_again_after_the_resync(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    url = await create_postgres_database("caga_feed")
    stack = await start_stack("postgres", tmp_path / "data", scripted_model, url, redis_url=redis.url)
    try:
        async with (
            stack.client() as client,
            GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws,
        ):
            feed = await ws.subscribe(SESSION_CHANGES)
            before = await start_ok(client, prompt="before the outage")
            await _until_change(feed, before["session"]["id"], status="IDLE")

            redis.stop()
            # While Redis is down a whole run happens: every change message of it is lost.
            during = await start_ok(client, prompt="during the outage")
            session_id = during["session"]["id"]
            run = await wait_for_run(client, during["run"]["id"])
            assert run["status"] == "COMPLETED"
            redis.start()

            # The bus reconnects, RESYNC reaches the feed, and it sends the session's current state.
            change = await _until_change(feed, session_id, status="IDLE", timeout=60)
    finally:
        await stack.api.stop()
        redis.stop()
        await drop_postgres_database(url)
    assert change["kind"] == "UPDATED"
    assert change["session"]["totalCostUsd"] > 0


async def _until_change(
    feed: Subscription, session_id: str, *, status: str, timeout: float = 30
) -> dict[str, Any]:
    """The first change of `session_id` in `status` on the feed (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        change: dict[str, Any] = (await feed.next(timeout=max(0.1, deadline - loop.time())))["data"][
            "sessionChanges"
        ]
        if change["session"]["id"] == session_id and change["session"]["status"] == status:
            return change
