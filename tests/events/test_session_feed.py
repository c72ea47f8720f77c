"""The tenant feed after a RESYNC: on the in-process bus, a watcher whose queue overflowed gets the current
state of every session changed meanwhile, once, and nothing it already had."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from api.events.bus import EventBus
from api.events.records import tenant_channel
from api.events.session_feed import session_changes
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import AgentSession, utcnow
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import TenantRepository
from tests.events.helpers import eventually


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'feed.sqlite3'}"
    await upgrade_head(url)
    database = Database(url)
    yield database
    await database.dispose()


async def _new_session(db: Database, tenant_id: str) -> str:
    session_id = str(uuid.uuid4())
    async with db.session() as session:
        await SessionRepository(session).create(
            session_id=session_id, tenant_id=tenant_id, title=None, at=utcnow()
        )
        await session.commit()
    return session_id


async def _set_status(db: Database, session_id: str, status: str) -> None:
    async with db.session() as session:
        await SessionRepository(session).set_status(session_id, status, utcnow())
        await session.commit()


async def test_after_an_overflow_the_feed_sends_each_changed_session_once_in_its_current_state(
    db: Database,
) -> None:
    async with db.session() as session:
        tenant_id = (await TenantRepository(session).get_or_create("feed-tenant")).id
        await session.commit()
    bus = EventBus(None, watcher_queue_size=2)
    await bus.start()
    feed = session_changes(db, bus, tenant_id, catchup_seconds=3600)
    try:
        first = asyncio.ensure_future(anext(feed))

        # The feed is live once its watcher is registered on the tenant's channel.
        async def watching() -> bool:
            state = bus._channels.get(tenant_channel(tenant_id))
            return state is not None and state.subscription is not None

        await eventually(watching, within=10)

        async def announce(session_id: str, kind: str = "STATUS_CHANGED") -> None:
            await bus.publish(
                tenant_channel(tenant_id), orjson.dumps({"kind": kind, "sessionId": session_id}).decode()
            )

        a = await _new_session(db, tenant_id)
        await announce(a, "CREATED")
        kind, row = await asyncio.wait_for(first, 10)
        assert (kind, row.id) == ("CREATED", a)

        # While nobody reads the feed, three sessions change and five messages pass: the queue of two
        # overflows, and the watcher gets RESYNC instead of the messages.
        b, c = await _new_session(db, tenant_id), await _new_session(db, tenant_id)
        await _set_status(db, b, "RUNNING")
        await _set_status(db, b, "IDLE")
        await _set_status(db, c, "QUEUED")
        for session_id in (b, b, c, b, c):
            await announce(session_id)

        resent: list[tuple[str, AgentSession]] = []
        async with asyncio.timeout(10):
            while {row.id for _, row in resent} != {b, c}:
                resent.append(await anext(feed))
    finally:
        await feed.aclose()
        await bus.stop()
    # `a` was already sent in its current state; b and c come once each, as they are now.
    assert sorted((kind, row.id, row.status) for kind, row in resent) == sorted(
        [("UPDATED", b, "IDLE"), ("UPDATED", c, "QUEUED")]
    )


async def test_a_change_whose_message_was_lost_comes_after_a_quiet_while(db: Database) -> None:
    """A publish can fail on the writer's side alone: no RESYNC comes, and the quiet catch-up finds it."""
    async with db.session() as session:
        tenant_id = (await TenantRepository(session).get_or_create("quiet-tenant")).id
        await session.commit()
    bus = EventBus(None)
    await bus.start()
    feed = session_changes(db, bus, tenant_id, catchup_seconds=0.2)
    try:
        pending = asyncio.ensure_future(anext(feed))
        # Committed, never announced.
        lost = await _new_session(db, tenant_id)
        await _set_status(db, lost, "RUNNING")
        kind, row = await asyncio.wait_for(pending, 10)
        # Quiet rounds after it send nothing more: it was sent in its current state already.
        again = asyncio.ensure_future(anext(feed))
        done, _ = await asyncio.wait([again], timeout=1.0)
        assert not done
        await _set_status(db, lost, "IDLE")
        later_kind, later = await asyncio.wait_for(again, 10)
    finally:
        await feed.aclose()
        await bus.stop()
    assert (kind, row.id, row.status) == ("UPDATED", lost, "RUNNING")
    assert (later_kind, later.id, later.status) == ("UPDATED", lost, "IDLE")
