"""Wake-ups queued for one channel leave as one bus message and arrive split again, in order."""

from __future__ import annotations

from api.events import metrics
from api.events.outbox import BATCH_MARK, pack, unpack
from tests.events.conftest import BusFactory
from tests.events.helpers import collect


def test_a_batch_unpacks_to_its_messages() -> None:
    messages = ['{"q":1}', '{"q":2,"t":"a\\\\nb"}', "plain"]
    assert unpack(pack(messages)) == messages
    assert pack(messages[:1]) == messages[0]
    assert unpack('{"q":1}') == ['{"q":1}']
    assert pack(messages).startswith(BATCH_MARK)


async def test_a_burst_is_published_in_batches_and_delivered_whole(
    bus_url: str | None, make_bus: BusFactory, channel: str
) -> None:
    bus = await make_bus(bus_url)
    async with bus.watch(channel) as watcher, bus.watch(channel + ":other") as other:
        published = metrics.MESSAGES_PUBLISHED._value.get()
        burst = [f'{{"n":{i}}}' for i in range(300)]
        for i, message in enumerate(burst):
            bus.publish_soon(channel, message)
            if i == 150:
                bus.publish_soon(channel + ":other", "interleaved")
        bus.publish_soon(channel, "with\na newline")  # never batched: it could not be split again
        await bus.flush(timeout=30)
        assert await collect(watcher, 301) == [*burst, "with\na newline"]
        assert await collect(other, 1) == ["interleaved"]
        if bus_url is not None:
            # The drainer was busy with the first publish while the rest queued up. (One process hands
            # each message to its watchers as it is published: there is nothing to batch.)
            assert metrics.MESSAGES_PUBLISHED._value.get() - published <= 5
