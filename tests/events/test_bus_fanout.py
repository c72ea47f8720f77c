"""Defects B and D: concurrent first watchers, and slow watchers, on both transports."""

from __future__ import annotations

import asyncio

import pytest

from api.events import metrics
from api.events.bus import RESYNC
from tests.events.conftest import BusFactory
from tests.events.helpers import collect, eventually, numsub


@pytest.mark.parametrize("watchers", [2, 3, 10])
async def test_watchers_entering_at_the_same_moment_all_receive_everything(
    bus_url: str | None, make_bus: BusFactory, channel: str, watchers: int
) -> None:
    """Defect B: plain broadcaster gives one of two simultaneous first subscribers nothing, then KeyError."""
    bus = await make_bus(bus_url)
    entered = asyncio.Barrier(watchers + 1)
    messages = [f"m{i}" for i in range(5)]

    async def watch() -> list[str | object]:
        async with bus.watch(channel) as watcher:
            await entered.wait()
            return list(await collect(watcher, len(messages)))

    tasks = [asyncio.create_task(watch()) for _ in range(watchers)]  # all enter in the same loop turn
    await entered.wait()
    if bus_url is not None:
        assert await numsub(bus_url, channel) == 1  # one subscription per channel per replica
    for message in messages:
        assert await bus.publish(channel, message)
    results = await asyncio.gather(*tasks)
    assert results == [messages] * watchers

    # The last watcher out tore the subscription down ...
    assert channel not in bus._channels
    if bus_url is not None:
        await eventually(lambda: _unsubscribed(bus_url, channel))
    # ... and subscribing again afterwards works.
    async with bus.watch(channel) as again:
        assert await bus.publish(channel, "again")
        assert await collect(again, 1) == ["again"]


async def _unsubscribed(url: str, channel: str) -> bool:
    return await numsub(url, channel) == 0


async def test_watchers_leaving_while_others_enter(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    """Churn on one channel: entering and leaving interleave with teardown; the steady watcher hears all."""
    bus = await make_bus(bus_url)
    async with bus.watch(channel) as steady:

        async def churn(i: int) -> None:
            async with bus.watch(channel) as watcher:
                assert await bus.publish(channel, f"c{i}")
                item = await watcher.next(timeout=5)
                assert item is not None

        await asyncio.gather(*(churn(i) for i in range(20)))
        received = await collect(steady, 20)
        assert sorted(received, key=str) == sorted(f"c{i}" for i in range(20))
    assert channel not in bus._channels


async def test_a_stalled_watcher_is_bounded_and_does_not_hold_up_the_others(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    """Defect D: plain broadcaster queues without bound for a subscriber that stops reading."""
    queue_size = 20
    bus = await make_bus(bus_url, watcher_queue_size=queue_size)
    overflows_before = metrics.WATCHER_OVERFLOWS._value.get()
    async with bus.watch(channel) as stalled, bus.watch(channel) as reader:
        sent: list[str] = []
        received: list[object] = []
        for batch in range(50):  # 500 messages, 25 times the queue size
            for i in range(10):
                message = f"b{batch}-{i}"
                assert await bus.publish(channel, message)
                sent.append(message)
            received += await collect(reader, 10)
            assert stalled.pending() <= queue_size
        assert received == sent  # in order, nothing lost, no RESYNC for the reader
        assert metrics.WATCHER_OVERFLOWS._value.get() > overflows_before

        # The stalled watcher wakes up: RESYNC first (re-read the log), then live messages again.
        assert await stalled.next(timeout=1) is RESYNC
        assert await stalled.next(timeout=0.1) is None
        assert await bus.publish(channel, "after")
        assert await collect(stalled, 1) == ["after"]
        assert await collect(reader, 1) == ["after"]
