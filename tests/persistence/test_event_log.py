"""The log's invariant: seq is 1, 2, 3… per session with no gaps, whatever the concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import utcnow
from persistence.repositories.events import EventRepository, append_committed
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import TenantRepository
from persistence.sqlite_driver import run_committed


async def _session(db: Database) -> str:
    session_id = str(uuid.uuid4())
    async with db.session() as session:
        tenant = await TenantRepository(session).get_or_create(f"t-{session_id}")
        await SessionRepository(session).create(
            session_id=session_id, tenant_id=tenant.id, title=None, at=utcnow()
        )
        await session.commit()
    return session_id


async def test_concurrent_writers_get_gapless_seqs_in_commit_order(db: Database) -> None:
    session_id = await _session(db)

    async def writer(name: str, batches: int) -> None:
        for i in range(batches):
            async with db.session() as session:
                items = [(None, "system", {"writer": name, "batch": i, "n": n}) for n in range(3)]
                await EventRepository(session).append(session_id, items, at=utcnow())
                await session.commit()

    await asyncio.gather(*(writer(f"w{k}", 10) for k in range(4)))
    async with db.session() as session:
        events = await EventRepository(session).list_after(session_id, 0, 1000)
        last_seq = await SessionRepository(session).last_seq(session_id)
    assert [e.seq for e in events] == list(range(1, 121))
    assert last_seq == 120
    # Each batch landed contiguously: a writer's three events are never split by another's.
    for start in range(0, 120, 3):
        chunk = events[start : start + 3]
        assert len({(e.payload["writer"], e.payload["batch"]) for e in chunk}) == 1


async def test_reading_after_a_cursor_pages_in_order(db: Database) -> None:
    session_id = await _session(db)
    async with db.session() as session:
        await EventRepository(session).append(
            session_id, [(None, "system", {"i": i}) for i in range(10)], at=utcnow()
        )
        await session.commit()
        page = await EventRepository(session).list_after(session_id, 4, 3)
    assert [e.seq for e in page] == [5, 6, 7]
    assert [e.payload["i"] for e in page] == [4, 5, 6]


async def test_one_statement_appends_interleave_gaplessly_with_the_others(db: Database) -> None:
    """append_committed (on PostgreSQL one statement, on SQLite one trip to the driver's thread) beside
    append: the row lock orders them alike, and what it wrote reads back as given."""
    session_id = await _session(db)

    async def alone(name: str) -> None:
        for i in range(10):
            items = [
                (None if n else "run-1", "system", {"writer": name, "batch": i, "n": n}) for n in range(3)
            ]
            seqs = await append_committed(db.engine, session_id, items, at=utcnow())
            assert seqs == list(range(seqs[0], seqs[0] + 3))

    async def in_transaction(name: str) -> None:
        for i in range(10):
            async with db.session() as session:
                items = [(None, "system", {"writer": name, "batch": i, "n": n}) for n in range(3)]
                await EventRepository(session).append(session_id, items, at=utcnow())
                await session.commit()

    await asyncio.gather(alone("a1"), alone("a2"), in_transaction("t1"), in_transaction("t2"))
    async with db.session() as session:
        events = await EventRepository(session).list_after(session_id, 0, 1000)
        last_seq = await SessionRepository(session).last_seq(session_id)
    assert [e.seq for e in events] == list(range(1, 121))
    assert last_seq == 120
    for start in range(0, 120, 3):
        chunk = events[start : start + 3]
        assert len({(e.payload["writer"], e.payload["batch"]) for e in chunk}) == 1
        assert [e.payload["n"] for e in chunk] == [0, 1, 2]
        if chunk[0].payload["writer"].startswith("a"):
            assert [e.run_id for e in chunk] == ["run-1", None, None]

    odd = {"text": 'naïve ☃ "quoted" \\ back', "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    at = utcnow()
    [seq] = await append_committed(db.engine, session_id, [(None, "assistant", odd)], at=at)
    async with db.session() as session:
        [event] = await EventRepository(session).list_after(session_id, seq - 1, 1)
    assert (event.seq, event.kind, event.payload, event.created_at) == (121, "assistant", odd, at)


async def test_a_one_statement_append_to_no_session_writes_nothing(db: Database) -> None:
    with pytest.raises(sa.exc.NoResultFound):
        await append_committed(db.engine, "nowhere", [(None, "system", {})], at=utcnow())


async def test_a_one_trip_commit_whose_writer_was_cancelled_writes_nothing_even_when_its_thread_ran_on(
    tmp_path: Path,
) -> None:
    """SQLite's one-trip commit (run_committed) keeps a transaction's guarantee: the writer is cancelled
    while its thread waits for another writer's lock; that writer then commits (a run's outcome), and the
    thread, going on, rolls back instead of committing after it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'one_trip.sqlite3'}"
    await upgrade_head(url)
    db = Database(url)
    try:
        session_id = await _session(db)
        waiting = threading.Event()

        def work(sqlite: sqlite3.Connection) -> None:
            waiting.set()
            sqlite.execute("UPDATE sessions SET last_seq = last_seq + 1 WHERE id = ?", (session_id,))
            sqlite.execute(
                "INSERT INTO events (session_id, seq, run_id, kind, payload, created_at) VALUES "
                "(?, (SELECT last_seq FROM sessions WHERE id = ?), NULL, 'system', '{}', '2026-01-01')",
                (session_id, session_id),
            )

        async with db.session() as holder:
            # The other writer takes the database's write lock first.
            outcome = await EventRepository(holder).append(session_id, [(None, "status", {})], at=utcnow())
            async with db.engine.connect() as connection:
                cancelled = asyncio.create_task(run_committed(connection, work))
                assert await asyncio.to_thread(waiting.wait, 10)
                cancelled.cancel()
                await holder.commit()
                with pytest.raises(asyncio.CancelledError):
                    await cancelled
        async with db.session() as session:
            events = await EventRepository(session).list_after(session_id, 0, 10)
            last_seq = await SessionRepository(session).last_seq(session_id)
        assert [(e.seq, e.kind) for e in events] == [(outcome[0].seq, "status")]
        assert last_seq == outcome[0].seq
    finally:
        await db.dispose()
