"""Starting a run and finishing it (interruptRun on a queued run) at once must not deadlock: every
transaction that touches a session and one of its runs locks the session first (PostgreSQL's row locks;
SQLite serialises writers anyway). The delays hold each lock long enough for the other side to collide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from api.events.bus import EventBus
from api.events.log import EventLog
from api.runtime import lifecycle
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.repositories.leases import LeaseRepository
from persistence.repositories.runs import RunRepository
from tests.support.leases import queued_run
from tests.support.servers import create_postgres_database, drop_postgres_database, postgres_available

pytestmark = pytest.mark.postgres
HOLD_SECONDS = 0.4


@pytest.fixture
async def event_log() -> AsyncIterator[EventLog]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on loopback")
    url = await create_postgres_database("caga_locks")
    await upgrade_head(url)
    db = Database(url)
    bus = EventBus(None, watcher_queue_size=100)
    await bus.start()
    try:
        yield EventLog(db, bus)
    finally:
        await bus.stop()
        await db.dispose()
        await drop_postgres_database(url)


def holding(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def slow(*args: Any, **kwargs: Any) -> Any:
        result = await method(*args, **kwargs)
        await asyncio.sleep(HOLD_SECONDS)  # the row lock it took is held meanwhile
        return result

    return slow


async def test_starting_and_finishing_a_run_at_once_do_not_deadlock(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await queued_run(event_log.db, "locks")
    monkeypatch.setattr(LeaseRepository, "claim", holding(LeaseRepository.claim))
    monkeypatch.setattr(RunRepository, "transition", holding(RunRepository.transition))

    started, finished = await asyncio.gather(
        lifecycle.begin(event_log, run, replica="r1", lease_seconds=30),
        lifecycle.finish(event_log, run.id, status="INTERRUPTED", from_statuses=("QUEUED",)),
    )
    # Exactly one of them took the run, and neither died of "deadlock detected".
    assert (started is None) != (finished is None)
    async with event_log.db.session() as session:
        final = await RunRepository(session).get(run.id)
    assert final is not None
    assert final.status == ("RUNNING" if started else "INTERRUPTED")
