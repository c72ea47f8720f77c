"""The control channel is the deployment's own: deployments on one Redis don't hear each other, and
replicas of releases before it (the fixed `control:runs`) still do, through a rolling upgrade."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.control import commands
from api.control.channel import LEGACY, MARK, ControlChannel
from api.control.commands import Interrupt
from api.events import metrics
from api.events.bus import EventBus
from api.events.bus_watcher import Watcher
from persistence.database import Database
from persistence.migrations import upgrade_head
from tests.events.conftest import BusFactory

WITHIN = 10.0


def interrupt(session_id: str) -> dict[str, Any]:
    return commands.message_of(Interrupt(session_id=session_id, run_id=str(uuid.uuid4())))


def session_of(message: dict[str, Any] | None) -> str | None:
    command = commands.decode(message) if message is not None else None
    return command.session_id if command is not None else None


class Heard:
    """What one replica's listener handed on, by session id (other suites on the Redis may talk too)."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[str | None] = asyncio.Queue()

    def __call__(self, message: dict[str, Any] | None) -> None:
        self.sessions.put_nowait(session_of(message))

    async def until(self, session_id: str) -> list[str | None]:
        """Everything heard up to and including `session_id`'s command."""
        heard: list[str | None] = []
        async with asyncio.timeout(WITHIN):
            while not heard or heard[-1] != session_id:
                heard.append(await self.sessions.get())
        return heard


async def old_replica_reads(watcher: Watcher, session_id: str) -> list[dict[str, Any]]:
    """What a replica of an earlier release, watching `control:runs`, reads up to `session_id`'s command."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(WITHIN):
        while not messages or session_of(messages[-1]) != session_id:
            item = await watcher.next(timeout=WITHIN)
            assert isinstance(item, str)
            messages.append(orjson.loads(item))
    return messages


@asynccontextmanager
async def listening(channel: ControlChannel) -> AsyncIterator[Heard]:
    heard = Heard()
    ready = asyncio.Event()
    task = asyncio.create_task(channel.listen(heard, ready))
    try:
        await asyncio.wait_for(ready.wait(), WITHIN)
        yield heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def deployment_db(tmp_path: Path, name: str) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite3'}"
    await upgrade_head(url)
    return Database(url)


@pytest.fixture
async def two_deployments(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    first, second = await deployment_db(tmp_path, "a"), await deployment_db(tmp_path, "b")
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_deployments_on_one_redis_hear_only_their_own(
    two_deployments: tuple[Database, Database], shared_redis_url: str, make_bus: BusFactory
) -> None:
    db_a, db_b = two_deployments
    # Two replicas of deployment A, one of B, each on its own connection to the one Redis.
    a1 = ControlChannel(await make_bus(shared_redis_url), db_a, legacy=True)
    a2 = ControlChannel(await make_bus(shared_redis_url), db_a, legacy=True)
    b = ControlChannel(await make_bus(shared_redis_url), db_b, legacy=True)
    assert await a1.name() == await a2.name() != await b.name()

    async with listening(a2) as heard_a2, listening(b) as heard_b:
        for_a, for_b = str(uuid.uuid4()), str(uuid.uuid4())
        await a1.publish(interrupt(for_a))
        assert await heard_a2.until(for_a) == [for_a]
        # B hears its own command next: had A's reached it (on either channel), it would have come first.
        await b.publish(interrupt(for_b))
        assert for_a not in await heard_b.until(for_b)


async def test_a_replica_of_an_earlier_release_hears_and_is_heard_on_the_fixed_channel(
    two_deployments: tuple[Database, Database], shared_redis_url: str, make_bus: BusFactory
) -> None:
    db_a, _ = two_deployments
    old = await make_bus(shared_redis_url)
    new = ControlChannel(await make_bus(shared_redis_url), db_a, legacy=True)
    async with old.watch(LEGACY) as old_replica, listening(new) as heard:
        # New to old: the copy on `control:runs` is a command the old release decodes as before.
        to_old = str(uuid.uuid4())
        await new.publish(interrupt(to_old))
        message = (await old_replica_reads(old_replica, to_old))[-1]
        assert message[MARK] == await new.name()
        # The new replica acted on it once, from its named channel.
        assert await heard.until(to_old) == [to_old]

        # Old to new: an unmarked message on `control:runs` reaches the new replica, and is counted
        # (how an operator knows old replicas still talk).
        heard_before = metrics.LEGACY_CONTROL_MESSAGES._value.get()
        to_new = str(uuid.uuid4())
        await old.publish(LEGACY, orjson.dumps(interrupt(to_new)).decode())
        assert to_new in await heard.until(to_new)
        assert metrics.LEGACY_CONTROL_MESSAGES._value.get() > heard_before

        # Another deployment's marked copy on `control:runs` is not for it.
        foreign, after = str(uuid.uuid4()), str(uuid.uuid4())
        marked = {**interrupt(foreign), MARK: f"control:{uuid.uuid4().hex}:runs"}
        await old.publish(LEGACY, orjson.dumps(marked).decode())
        await old.publish(LEGACY, orjson.dumps(interrupt(after)).decode())
        assert foreign not in await heard.until(after)


async def test_with_the_fixed_channel_off_a_replica_neither_sends_nor_hears_there(
    two_deployments: tuple[Database, Database], shared_redis_url: str, make_bus: BusFactory
) -> None:
    db_a, _ = two_deployments
    old = await make_bus(shared_redis_url)
    bus = await make_bus(shared_redis_url)
    new = ControlChannel(bus, db_a, legacy=False)
    async with old.watch(LEGACY) as old_replica, listening(new) as heard:
        unheard, sent = str(uuid.uuid4()), str(uuid.uuid4())
        await old.publish(LEGACY, orjson.dumps(interrupt(unheard)).decode())
        await new.publish(interrupt(sent))
        await new.publish_soon(interrupt(sent))
        assert await heard.until(sent) == [sent]
        # Whatever the replica queued for `control:runs` has left once its outbox is flushed; a
        # message of our own sent after that comes back after any of them.
        await bus.flush()
        done = str(uuid.uuid4())
        await bus.publish(LEGACY, orjson.dumps(interrupt(done)).decode())
        seen = [session_of(message) for message in await old_replica_reads(old_replica, done)]
        assert unheard in seen
        assert sent not in seen
        assert await heard.until(sent) == [sent]  # the publish_soon


async def test_a_garbled_message_is_skipped_and_the_next_one_heard(
    two_deployments: tuple[Database, Database], make_bus: BusFactory
) -> None:
    db_a, _ = two_deployments
    bus: EventBus = await make_bus(None)
    channel = ControlChannel(bus, db_a, legacy=False)
    async with listening(channel) as heard:
        after = str(uuid.uuid4())
        await bus.publish(await channel.name(), "\xff not json")
        await channel.publish(interrupt(after))
        assert await heard.until(after) == [after]
