"""Leases on the database's clock, and the fencing token that refuses a stale holder's writes.

A run's begin and outcome end with their commit: an outage that starts as one commits cannot make the
caller take the written transition for a failed write.

Two "replicas" in one process (two replica ids on one real database), on both storage modes: SQLite (the
embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session

from api.events.bus import EventBus
from api.events.log import EventLog
from api.events.records import EventKind, NewEvent
from api.runtime import lifecycle
from api.runtime.leases import OrphanReaper, orphan_error
from api.settings import Settings
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.repositories.leases import Fence, LeaseRepository, StaleLease
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository
from tests.support.leases import queued_run, take_over
from tests.support.servers import create_postgres_database, drop_postgres_database, postgres_available


@pytest.fixture(params=["embedded", "postgres"])
async def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fencing.sqlite3'}"
    if request.param == "postgres":
        if not postgres_available():
            pytest.skip("PostgreSQL is not reachable on loopback")
        url = await create_postgres_database("caga_fencing")
    await upgrade_head(url)
    db = Database(url)
    bus = EventBus(None, watcher_queue_size=100)
    await bus.start()
    try:
        yield EventLog(db, bus)
    finally:
        await bus.stop()
        await db.dispose()
        if request.param == "postgres":
            await drop_postgres_database(url)


async def claim(event_log: EventLog, session_id: str, owner: str, ttl: float) -> int | None:
    async with event_log.db.session() as session:
        token = await LeaseRepository(session).claim(session_id, owner, ttl_seconds=ttl)
        await session.commit()
    return token


def text(run_id: str | None, words: str) -> NewEvent:
    return NewEvent(run_id, EventKind.ASSISTANT, {"content": [{"type": "text", "text": words}]})


async def test_a_lease_lapses_by_the_database_clock_and_its_next_holder_gets_a_newer_token(
    event_log: EventLog,
) -> None:
    run = await queued_run(event_log.db)
    loop = asyncio.get_running_loop()
    claimed_at = loop.time()
    first = await claim(event_log, run.session_id, "r1", ttl=1.5)
    assert first is not None
    # Held: the other replica cannot take it; the holder claiming again keeps its generation.
    assert await claim(event_log, run.session_id, "r2", ttl=1.5) is None
    assert await claim(event_log, run.session_id, "r1", ttl=1.5) == first
    async with event_log.db.session() as session:
        assert await LeaseRepository(session).is_live(run.session_id)
    deadline = loop.time() + 30
    while (second := await claim(event_log, run.session_id, "r2", ttl=30)) is None:
        assert loop.time() < deadline, "the lease never lapsed"
        await asyncio.sleep(0.05)
    # Not before the database's clock says so (the second claim by r1 restarted the 1.5 s).
    assert loop.time() - claimed_at >= 1.4
    assert second > first
    async with event_log.db.session() as session:
        assert await LeaseRepository(session).renew("r1", {run.session_id: first}, ttl_seconds=30) == set()
        assert await LeaseRepository(session).renew("r2", {run.session_id: second}, ttl_seconds=30) == {
            run.session_id
        }
        await session.commit()


async def test_a_stale_holders_appends_and_outcome_are_refused(event_log: EventLog) -> None:
    run = await queued_run(event_log.db)
    transition = await lifecycle.begin(event_log, run, replica="r1", lease_seconds=30)
    assert transition is not None
    assert transition.lease_token is not None
    old = Fence("r1", transition.lease_token)
    await event_log.append(run.session_id, [text(run.id, "from r1")], fence=old)

    new_token = await take_over(event_log.db, run.session_id, owner="r2")
    assert new_token > old.token
    async with event_log.db.session() as session:
        before = await SessionRepository(session).last_seq(run.session_id)

    with pytest.raises(StaleLease):
        await event_log.append(run.session_id, [text(run.id, "late r1")], fence=old)
    with pytest.raises(StaleLease):
        await lifecycle.finish(event_log, run.id, status="COMPLETED", fence=old)
    # The old holder releasing its lease leaves the new holder's alone.
    async with event_log.db.session() as session:
        await LeaseRepository(session).release(run.session_id, old)
        await session.commit()
        assert await LeaseRepository(session).is_live(run.session_id)

    async with event_log.db.session() as session:
        assert await SessionRepository(session).last_seq(run.session_id) == before
        fresh = await RunRepository(session).get(run.id)
    assert fresh is not None
    assert fresh.status == "RUNNING"
    # The new holder writes; then a reaper settles the run the old holder left (its lease moved on).
    await event_log.append(run.session_id, [text(None, "from r2")], fence=Fence("r2", new_token))
    finished = await lifecycle.finish(
        event_log, run.id, status="FAILED", error=orphan_error("r1"), orphan=True
    )
    assert finished is not None
    assert finished.run.status == "FAILED"


async def test_the_reaper_fences_off_a_lapsed_holder_and_spares_a_live_one(event_log: EventLog) -> None:
    live = await queued_run(event_log.db)
    lapsing = await queued_run(event_log.db)
    started_live = await lifecycle.begin(event_log, live, replica="r1", lease_seconds=60)
    started = await lifecycle.begin(event_log, lapsing, replica="r1", lease_seconds=1.0)
    assert started_live is not None
    assert started is not None
    assert started.lease_token is not None
    settings = Settings(data_dir=Path("/nonexistent"), orphan_poll_seconds=0.1)
    reaped: list[int] = []
    reaper = OrphanReaper(settings, event_log, is_local=lambda _: False, on_reaped=lambda: reaped.append(1))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await reaper.reap_once() == 0:
        assert loop.time() < deadline, "the lapsed lease's run was never reaped"
        await asyncio.sleep(0.05)
    assert reaped == [1]
    async with event_log.db.session() as session:
        runs = {run.id: run for run in await RunRepository(session).get_many([live.id, lapsing.id])}
    assert runs[lapsing.id].status == "FAILED"
    assert runs[lapsing.id].error == orphan_error("r1")
    assert runs[live.id].status == "RUNNING"
    # The lapsed holder is fenced off: whatever it still sends is refused.
    with pytest.raises(StaleLease):
        await event_log.append(
            lapsing.session_id, [text(lapsing.id, "late")], fence=Fence("r1", started.lease_token)
        )


@contextmanager
def outage_from_next_commit() -> Iterator[list[str]]:
    """Every ORM statement fails once a transaction has committed, as when the database goes away just
    as a commit is acknowledged; yields the statements refused so far."""
    refused: list[str] = []
    down = False

    def on_commit(_: Session) -> None:
        nonlocal down
        down = True

    def on_execute(state: ORMExecuteState) -> None:
        if down:
            refused.append(str(state.statement))
            raise OperationalError(str(state.statement), {}, Exception("the database went away"))

    event.listen(Session, "after_commit", on_commit)
    event.listen(Session, "do_orm_execute", on_execute)
    try:
        yield refused
    finally:
        event.remove(Session, "after_commit", on_commit)
        event.remove(Session, "do_orm_execute", on_execute)


async def test_an_outage_as_a_transition_commits_does_not_fail_it(event_log: EventLog) -> None:
    # Before, each read its run back after the commit: the outcome was written, its writer saw an
    # error, retried through the outage and gave the session up (a follow-up begun meanwhile stayed
    # RUNNING until reaped).
    run = await queued_run(event_log.db)
    with outage_from_next_commit() as refused:
        started = await lifecycle.begin(event_log, run, replica="r1", lease_seconds=30)
    assert started is not None
    assert started.run.status == "RUNNING"
    assert started.lease_token is not None
    with outage_from_next_commit() as refused_after_outcome:
        finished = await lifecycle.finish(
            event_log, run.id, status="COMPLETED", fence=Fence("r1", started.lease_token)
        )
        # Nothing of the database is needed to announce it.
        await lifecycle.announce(event_log, finished)
    assert finished is not None
    assert finished.run.status == "COMPLETED"
    assert [record.payload["status"] for record in finished.records] == ["COMPLETED"]
    assert refused == refused_after_outcome == []
    async with event_log.db.session() as session:
        stored = await RunRepository(session).get(run.id)
    assert stored is not None
    assert stored.status == "COMPLETED"
