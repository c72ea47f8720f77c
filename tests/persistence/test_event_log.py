"""The log's invariant: seq is 1, 2, 3… per session with no gaps, whatever the concurrency."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.events import EventRepository
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import TenantRepository


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
    """EventRepository.append_alone (on PostgreSQL one statement) beside append: the row lock orders them
    alike, and what it wrote reads back as given."""
    session_id = await _session(db)

    async def alone(name: str) -> None:
        for i in range(10):
            async with db.session() as session:
                items = [
                    (None if n else "run-1", "system", {"writer": name, "batch": i, "n": n}) for n in range(3)
                ]
                seqs = await EventRepository(session).append_alone(session_id, items, at=utcnow())
                await session.commit()
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
    async with db.session() as session:
        repository = EventRepository(session)
        [seq] = await repository.append_alone(session_id, [(None, "assistant", odd)], at=utcnow())
        await session.commit()
    async with db.session() as session:
        [event] = await EventRepository(session).list_after(session_id, seq - 1, 1)
    assert (event.seq, event.kind, event.payload) == (121, "assistant", odd)


async def test_a_one_statement_append_to_no_session_writes_nothing(db: Database) -> None:
    async with db.session() as session:
        with pytest.raises(sa.exc.NoResultFound):
            await EventRepository(session).append_alone("nowhere", [(None, "system", {})], at=utcnow())
