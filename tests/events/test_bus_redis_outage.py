"""Defects C and E, on a private redis-server that these tests stop and restart."""

from __future__ import annotations

import asyncio
import time

from redis import asyncio as aioredis

from api.events import metrics
from api.events.bus import RESYNC, EventBus
from tests.events.conftest import BusFactory
from tests.events.helpers import RedisServer, collect, eventually, next_after_resync, numsub

FAST = {"ping_interval": 0.5, "backoff_max": 0.5, "subscribe_timeout": 1.0, "publish_timeout": 0.5}


async def _healthy(*buses: EventBus) -> bool:
    return all([await bus.is_healthy() for bus in buses])


async def _unhealthy(*buses: EventBus) -> bool:
    return not any([await bus.is_healthy() for bus in buses])


async def test_a_redis_restart_resyncs_every_watcher_and_delivery_resumes(
    private_redis: RedisServer, make_bus: BusFactory, channel: str
) -> None:
    """Defect C: plain broadcaster's listener dies on the restart and the replica stays deaf, silently."""
    replica_a = await make_bus(private_redis.url, **FAST)
    replica_b = await make_bus(private_redis.url, **FAST)
    other = channel + ":other"
    reconnects_before = metrics.RECONNECTS._value.get()
    async with (
        replica_a.watch(channel) as a1,
        replica_a.watch(channel) as a2,
        replica_a.watch(other) as a3,
        replica_b.watch(channel) as b1,
    ):
        assert await replica_a.publish(channel, "before")
        for watcher in (a1, a2, b1):
            assert await collect(watcher, 1) == ["before"]

        await private_redis.stop()
        await eventually(lambda: _unhealthy(replica_a, replica_b), within=5)
        started = time.monotonic()
        assert not await replica_a.publish(channel, "during")  # no exception
        assert time.monotonic() - started < 2.0  # and no long hang

        await private_redis.start()
        reconnect_s = await eventually(lambda: _healthy(replica_a, replica_b), within=10)
        print(f"replicas healthy again {reconnect_s:.3f} s after Redis accepted connections")
        for watcher in (a1, a2, a3, b1):
            assert await watcher.next(timeout=5) is RESYNC

        # Both replicas re-subscribed every channel and hear each other again.
        assert await numsub(private_redis.url, channel) == 2
        assert await numsub(private_redis.url, other) == 1
        assert await replica_b.publish(channel, "after")
        assert await replica_b.publish(other, "after-other")
        for watcher in (a1, a2, b1):
            assert await collect(watcher, 1) == ["after"]
        assert await collect(a3, 1) == ["after-other"]
    assert metrics.RECONNECTS._value.get() - reconnects_before == 2


async def test_redis_down_at_start_then_up(
    idle_redis: RedisServer, make_bus: BusFactory, channel: str
) -> None:
    """A replica started before Redis: unhealthy, publishes fail fast, watchers are told to resync, and
    everything works once Redis comes up."""
    bus = await make_bus(idle_redis.url, **FAST)
    assert not await bus.is_healthy()
    assert not await bus.publish(channel, "nobody hears this")
    async with bus.watch(channel) as watcher:  # returns although SUBSCRIBE can't be confirmed ...
        assert await watcher.next(timeout=1) is RESYNC  # ... and says so
        await idle_redis.start()
        await eventually(lambda: _healthy(bus), within=10)
        await next_after_resync(watcher)
        assert await bus.publish(channel, "hello")
        assert await collect(watcher, 1) == ["hello"]


async def test_restart_while_nobody_watches_then_watch(
    private_redis: RedisServer, make_bus: BusFactory, channel: str
) -> None:
    """Zero subscribed channels across a restart: the listener still comes back (cf. defect A)."""
    bus = await make_bus(private_redis.url, **FAST)
    await private_redis.stop()
    await eventually(lambda: _unhealthy(bus), within=5)
    await private_redis.start()
    await eventually(lambda: _healthy(bus), within=10)
    async with bus.watch(channel) as watcher:
        assert await bus.publish(channel, "m")
        assert await collect(watcher, 1) == ["m"]


async def test_publishing_leaves_nothing_in_the_redis_keyspace(
    private_redis: RedisServer, make_bus: BusFactory, channel: str
) -> None:
    """Defect E: broadcaster's redis-stream backend XADDs without MAXLEN; we use pub/sub only."""
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        bus = await make_bus(private_redis.url)
        assert await client.dbsize() == 0
        async with bus.watch(channel) as w1, bus.watch(channel) as w2:
            for i in range(500):
                assert await bus.publish(channel, f"m{i}")
            assert len(await collect(w1, 500)) == len(await collect(w2, 500)) == 500
            assert await client.dbsize() == 0
            assert await client.exists(channel) == 0
            assert await numsub(private_redis.url, channel) == 1
    finally:
        await client.aclose()


async def test_publish_throughput_to_many_watchers(
    private_redis: RedisServer, make_bus: BusFactory, channel: str
) -> None:
    """Not a benchmark, a smoke measure: 1000 sequential publishes fanned out to 50 local watchers."""
    bus = await make_bus(private_redis.url, watcher_queue_size=2000)
    count, watchers = 1000, 50
    async with asyncio.TaskGroup() as group:
        entered = asyncio.Barrier(watchers + 1)

        async def watch() -> None:
            async with bus.watch(channel) as watcher:
                await entered.wait()
                items = await collect(watcher, count)
                assert items[-1] == f"m{count - 1}"

        for _ in range(watchers):
            group.create_task(watch())
        await entered.wait()
        started = time.monotonic()
        for i in range(count):
            assert await bus.publish(channel, f"m{i}")
        published_s = time.monotonic() - started
    delivered_s = time.monotonic() - started
    print(
        f"{count} publishes in {published_s:.3f} s ({count / published_s:.0f}/s); "
        f"{count * watchers} deliveries done after {delivered_s:.3f} s"
    )
