"""Delivery, "live first", cross-replica fan-out and a clean stop(), on both transports."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from broadcaster import Broadcast

from api.events.bus import RESYNC, BusClosedError, EventBus
from tests.events.conftest import BusFactory
from tests.events.helpers import RedisServer, collect, numsub


async def test_first_watcher_receives_what_is_published_right_after_entering(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    """Defect A: plain broadcaster + redis-py 8 delivers nothing to the first subscription."""
    bus = await make_bus(bus_url)
    async with bus.watch(channel) as watcher:
        # No waiting of any kind: entering watch() means the SUBSCRIBE was acknowledged.
        assert await bus.publish(channel, "m0")
        assert await bus.publish(channel, "m1")
        assert await collect(watcher, 2) == ["m0", "m1"]


async def test_resubscribing_after_the_last_watcher_left_still_delivers(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    """Defect A again: the subscribed-channel count dropping to zero used to park broadcaster's listener."""
    bus = await make_bus(bus_url)
    for round_ in range(3):
        async with bus.watch(channel) as watcher:
            assert await bus.publish(channel, f"r{round_}")
            assert await collect(watcher, 1) == [f"r{round_}"]
        assert channel not in bus._channels  # torn down: refcount reached zero


async def test_plain_broadcaster_still_loses_the_first_subscription(
    shared_redis_url: str, channel: str
) -> None:
    """Pins defect A of broadcaster 0.3.1 with redis-py 8: if this starts failing, upstream fixed it and
    our custom backend could be reconsidered."""
    broadcast = Broadcast(shared_redis_url)
    await broadcast.connect()
    try:
        async with broadcast.subscribe(channel) as subscriber:
            await broadcast.publish(channel, "lost")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await subscriber.get()
    finally:
        await broadcast.disconnect()
        await asyncio.wait([broadcast._listener_task])


async def test_two_replicas_deliver_across_each_other(
    shared_redis_url: str, make_bus: BusFactory, channel: str
) -> None:
    replica_a = await make_bus(shared_redis_url)
    replica_b = await make_bus(shared_redis_url)
    async with replica_a.watch(channel) as on_a, replica_b.watch(channel) as on_b:
        assert await replica_a.publish(channel, "from-a")
        assert await replica_b.publish(channel, "from-b")
        assert await collect(on_a, 2) == ["from-a", "from-b"]
        assert await collect(on_b, 2) == ["from-a", "from-b"]
        # One Redis subscription per channel per replica, whatever the number of local watchers.
        assert await numsub(shared_redis_url, channel) == 2


async def test_next_times_out_with_none_and_channels_are_isolated(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    bus = await make_bus(bus_url)
    async with bus.watch(channel) as watcher:
        assert await bus.publish(channel + ":other", "not for you")
        assert await watcher.next(timeout=0.2) is None
        assert await watcher.next(timeout=0) is None


async def test_a_short_timeout_after_a_long_one_still_times_out_on_time(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    """The watcher keeps one timer across calls: a later, earlier deadline must not wait for it."""
    bus = await make_bus(bus_url)
    async with bus.watch(channel) as watcher:
        # Waits (so arms the timer for 60 s) until the message comes.
        waiting = asyncio.create_task(watcher.next(timeout=60))
        await asyncio.sleep(0.05)
        assert await bus.publish(channel, "m")
        assert await waiting == "m"
        async with asyncio.timeout(5):
            assert await watcher.next(timeout=0.2) is None
        assert await bus.publish(channel, "n")
        async with asyncio.timeout(5):
            assert await watcher.next(timeout=60) == "n"


async def test_memory_bus_is_healthy_and_publish_needs_start() -> None:
    bus = EventBus(None)
    assert not await bus.is_healthy()
    with pytest.raises(RuntimeError):
        await bus.publish("c", "m")
    await bus.start()
    try:
        assert await bus.is_healthy()
    finally:
        await bus.stop()
    assert not await bus.is_healthy()


async def test_shared_redis_bus_is_healthy(shared_redis_url: str, make_bus: BusFactory) -> None:
    bus = await make_bus(shared_redis_url)
    assert await bus.is_healthy()


@pytest.mark.parametrize("transport", ["memory", "redis"])
async def test_stop_is_clean(transport: str, private_redis: RedisServer, channel: str) -> None:
    """No task left behind, no warning, no Redis connection left open; a watcher still waiting is told."""
    url = None if transport == "memory" else private_redis.url
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bus = EventBus(url)
        await bus.start()
        async with bus.watch(channel) as watcher:
            assert await bus.publish(channel, "m")
            assert await watcher.next(timeout=5) == "m"
            waiting = asyncio.create_task(watcher.next())
            await asyncio.sleep(0)  # let it block on the empty queue
            await bus.stop()
            with pytest.raises(BusClosedError):
                await waiting
        del bus, watcher
        gc.collect()
    # A task a library left to finish on its own (seen once under heavy load: an Event.wait from a
    # wait_for) is not a leak if it ends; one still waiting after the bound is.
    leftover = asyncio.all_tasks() - before
    if leftover:
        await asyncio.wait(leftover, timeout=5)
    assert {task for task in leftover if not task.done()} == set()
    assert [str(w.message) for w in caught] == []
    if url is not None:
        client_count = await _client_count(url)
        assert client_count == 1  # only the connection asking


async def _client_count(url: str) -> int:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return len(await client.client_list())
    finally:
        await client.aclose()


async def test_resync_marker_is_a_singleton() -> None:
    assert repr(RESYNC) == "RESYNC"
    assert type(RESYNC)() is not RESYNC  # a marker type; compare with `is RESYNC`


async def test_local_first_reaches_this_replica_at_once_and_once(
    shared_redis_url: str, make_bus: BusFactory, channel: str
) -> None:
    replica_a = await make_bus(shared_redis_url)
    replica_b = await make_bus(shared_redis_url)
    async with replica_a.watch(channel) as on_a, replica_b.watch(channel) as on_b:
        replica_a.publish_soon(channel, '{"q":1}', local_first=True)
        # Already queued for the watcher here, before any bus message could have come back.
        assert on_a.pending() == 1
        # A plain message after it: through Redis, so by the time it arrives the copy of the first
        # would have too (one connection, in order).
        replica_a.publish_soon(channel, "marker")
        await replica_a.flush()
        assert await collect(on_a, 2) == ['{"q":1}', "marker"]
        assert await collect(on_b, 2) == ['{"q":1}', "marker"]
        assert on_a.pending() == 0
