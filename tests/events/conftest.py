"""Fixtures for the event bus tests.

Tests on the shared Redis (127.0.0.1:6379) use unique channel names; a test that stops Redis gets a
private redis-server of its own on a free loopback port.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from api.events.bus import EventBus
from tests.events.helpers import RedisServer, free_loopback_port, redis_answers

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"

BusFactory = Callable[..., Awaitable[EventBus]]


@pytest.fixture
def channel() -> str:
    return f"test-bus:{uuid.uuid4().hex}"


@pytest.fixture
async def shared_redis_url() -> str:
    if not await redis_answers(SHARED_REDIS_URL):
        pytest.skip("no Redis at 127.0.0.1:6379")
    return SHARED_REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def bus_url(request: pytest.FixtureRequest) -> str | None:
    """Both transports: the embedded mode must behave like the real one."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("shared_redis_url")
    return url


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    """Started EventBus instances ("replicas"), all stopped at teardown."""
    buses: list[EventBus] = []

    async def factory(redis_url: str | None, **options: Any) -> EventBus:
        bus = EventBus(redis_url, **options)
        await bus.start()
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        await bus.stop()


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")


@pytest.fixture
async def private_redis() -> AsyncIterator[RedisServer]:
    """A running redis-server of this test's own, stopped in the finaliser whatever the test did."""
    _need_redis_server()
    server = RedisServer(free_loopback_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def idle_redis() -> AsyncIterator[RedisServer]:
    """Like private_redis, but not started yet: for "Redis is down when the bus starts"."""
    _need_redis_server()
    server = RedisServer(free_loopback_port())
    try:
        yield server
    finally:
        await server.stop()
