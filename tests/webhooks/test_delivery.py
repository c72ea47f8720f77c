"""One signed POST, on real sockets: pinned to the vetted address, redirects not followed."""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from api.webhooks.dispatcher import post_signed
from api.webhooks.signing import verify
from api.webhooks.ssrf import AllowList, VettedTarget, parse_target, vet
from tests.webhooks.receiver import WebhookReceiver

SECRET = "delivery-test-secret-0123456789"
BODY = orjson.dumps({"hookEvent": "Stop"})


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


async def test_a_named_host_is_called_at_the_vetted_address_with_its_name_as_host(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    token = uuid.uuid4().hex
    url = receiver.url("allow", token, SECRET).replace("127.0.0.1", "webhooks.example")
    # The name does not resolve at all: the call can only have gone to the vetted address.
    vetted = VettedTarget(parse_target(url), ipaddress.ip_address("127.0.0.1"))
    status, content = await post_signed(client, vetted, BODY, SECRET)
    assert status == 200
    assert orjson.loads(content)["decision"] == "allow"
    [call] = receiver.calls[token]
    assert call.host == f"webhooks.example:{receiver.port}"
    assert call.verified


async def test_a_redirect_is_not_followed(receiver: WebhookReceiver, client: httpx.AsyncClient) -> None:
    token = uuid.uuid4().hex
    url = receiver.url("redirect", token, SECRET)
    vetted = await vet(url, AllowList.parse([f"127.0.0.1:{receiver.port}"]))
    status, _ = await post_signed(client, vetted, BODY, SECRET)
    assert status == 307
    assert [call.behaviour for call in receiver.calls[token]] == ["redirect"]
    assert verify(SECRET, BODY, receiver.calls[token][0].signature, now=time.time())
