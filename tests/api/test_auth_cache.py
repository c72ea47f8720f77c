"""A verified key is remembered for AUTH_CACHE_SECONDS: no lookup meanwhile; revocation holds after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from api.auth import Authenticator, create_key
from api.key_watch import KeyWatch
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import utcnow
from persistence.repositories.tenants import ApiKeyRepository


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.sqlite3'}"
    await upgrade_head(url)
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()


def count_statements(db: Database) -> list[str]:
    statements: list[str] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    return statements


async def revoke(db: Database, key_id: str) -> None:
    async with db.session() as session:
        keys = ApiKeyRepository(session)
        key = await keys.get(key_id)
        assert key is not None
        await keys.revoke(key, utcnow())
        await session.commit()


async def test_a_verified_key_is_trusted_for_the_ttl_and_a_revoked_one_refused_after_it(db: Database) -> None:
    key = await create_key(db, tenant_name="t", name=None)
    clock = Clock()
    authenticator = Authenticator(db, ttl=5.0, clock=clock)
    statements = count_statements(db)

    first = await authenticator(key.secret)
    looked_up = len(statements)
    await revoke(db, key.key_id)
    after_revoke = len(statements)
    clock.now += 4.9
    within_ttl = await authenticator(key.secret)
    assert len(statements) == after_revoke  # answered from memory
    clock.now += 0.2
    past_ttl = await authenticator(key.secret)

    assert first is not None
    assert first.api_key_id == key.key_id
    assert looked_up == 1
    assert within_ttl == first
    assert past_ttl is None


async def test_unknown_keys_are_never_remembered_and_ttl_zero_remembers_nothing(db: Database) -> None:
    key = await create_key(db, tenant_name="t", name=None)
    statements = count_statements(db)
    uncached = Authenticator(db, ttl=0)
    cached = Authenticator(db, ttl=5.0)

    assert await cached(key.secret[:-2] + "xx") is None
    assert await cached(key.secret[:-2] + "xx") is None
    assert len(statements) == 2
    assert await uncached(key.secret) is not None
    assert await uncached(key.secret) is not None
    assert len(statements) == 4


class Socket:
    def __init__(self, api_key_id: str) -> None:
        self.api_key_id: str | None = api_key_id
        self.closed = False

    async def close_revoked(self) -> None:
        self.closed = True


async def test_the_key_watch_keeps_an_open_sockets_key_trusted_and_drops_a_revoked_one(db: Database) -> None:
    key = await create_key(db, tenant_name="t", name=None)
    clock = Clock()
    authenticator = Authenticator(db, ttl=5.0, clock=clock)
    watch = KeyWatch(db, interval=2.0, authenticator=authenticator)
    socket = Socket(key.key_id)
    watch.add(socket)
    statements = count_statements(db)

    first = await authenticator(key.secret)
    clock.now += 4.0
    await watch.check()
    clock.now += 4.0  # past the lookup's ttl, within the check's
    before = len(statements)
    renewed = await authenticator(key.secret)
    answered_from_memory = len(statements) == before
    await revoke(db, key.key_id)
    await watch.check()
    after_revoke = await authenticator(key.secret)

    assert first is not None
    assert renewed == first
    assert answered_from_memory
    assert socket.closed
    assert after_revoke is None
