"""The test WebSocket and HTTP clients against a real Strawberry server."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import (
    ConnectionClosedWithCode,
    GraphQLWSClient,
    GraphQLWSError,
    SubscriptionCompleted,
    raw_ws,
    recv_json,
    send_json,
    wait_close,
)
from tests.support_selftest.app import GOOD_TOKEN

COUNT = "subscription Count($to: Int!, $delay: Float! = 0) { count(to: $to, delay: $delay) }"
HELLO = "query Hello { hello }"


async def test_query_over_socket_and_ack_payload(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        assert client.ack_payload == {"welcome": True}
        assert await client.execute(HELLO) == {"data": {"hello": "world"}}
    assert client.close_code == 1000


async def test_subscription_yields_then_stops_on_complete(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        sub = await client.subscribe(COUNT, {"to": 3})
        assert [p["data"]["count"] async for p in sub] == [0, 1, 2]
        with pytest.raises(SubscriptionCompleted):
            await sub.next(timeout=1)


async def test_concurrent_operations_share_one_socket(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        slow = await client.subscribe(COUNT, {"to": 3, "delay": 0.05})
        fast = await client.subscribe(COUNT, {"to": 5})
        hello, slow_items, fast_items = await asyncio.gather(
            client.execute(HELLO), slow.collect(timeout=5), fast.collect(timeout=5)
        )
        assert hello["data"] == {"hello": "world"}
        assert [p["data"]["count"] for p in slow_items] == [0, 1, 2]
        assert [p["data"]["count"] for p in fast_items] == [0, 1, 2, 3, 4]


async def test_client_complete_stops_the_stream(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        async with await client.subscribe(COUNT, {"to": 1000, "delay": 0.01}) as sub:
            assert (await sub.next(timeout=5))["data"] == {"count": 0}
        assert sub.finished
        # Late frames for the completed id are tolerated; the socket keeps serving.
        assert (await client.execute(HELLO))["data"] == {"hello": "world"}
        await client.ping()
    assert client.protocol_violations == []


async def test_validation_error_raises(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        sub = await client.subscribe("subscription { nope }")
        with pytest.raises(GraphQLWSError) as info:
            await sub.next(timeout=5)
        assert "nope" in str(info.value.payload)


@pytest.mark.parametrize("token", ["wrong", None])
async def test_rejected_key_closes_4403(ws_url: str, token: str | None) -> None:
    with pytest.raises(ConnectionClosedWithCode) as info:
        async with GraphQLWSClient.connect(ws_url, token=token, ack_timeout=5):
            pass
    assert info.value.code == 4403


async def test_raw_duplicate_id_closes_4409(ws_url: str) -> None:
    async with raw_ws(ws_url) as ws:
        await send_json(ws, {"type": "connection_init", "payload": {"Authorization": f"Bearer {GOOD_TOKEN}"}})
        assert (await recv_json(ws))["type"] == "connection_ack"
        subscribe = {
            "id": "a",
            "type": "subscribe",
            "payload": {"query": COUNT, "variables": {"to": 50, "delay": 0.1}},
        }
        await send_json(ws, subscribe)
        await send_json(ws, subscribe)
        code, reason = await wait_close(ws)
        assert code == 4409, reason


async def test_server_close_is_reported(ws_url: str) -> None:
    async with GraphQLWSClient.connect(ws_url, token=GOOD_TOKEN) as client:
        sub = await client.subscribe(COUNT, {"to": 1000, "delay": 0.05})
        # A second subscribe with the same id is a protocol error the server answers by closing.
        await client._send({"id": sub.id, "type": "subscribe", "payload": {"query": HELLO}})
        assert await client.wait_closed() == 4409
        with pytest.raises(ConnectionClosedWithCode) as info:
            async for _ in sub:
                pass
        assert info.value.code == 4409


async def test_http_client(app_url: str) -> None:
    async with GraphQLHttpClient(app_url, token="unused") as http:
        assert await http.execute(HELLO) == {"hello": "world"}
        with pytest.raises(pytest.fail.Exception, match="nope"):
            await http.execute("{ nope }")
        assert (await http.execute_raw("{ nope }")).json()["errors"]
