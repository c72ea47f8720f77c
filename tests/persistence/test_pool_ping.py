"""PostgreSQL's pool pings a connection only after it sat idle (persistence/database.py), and a connection
that died unseen costs one failed statement, after which the whole pool is replaced."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

import persistence.database
from persistence.database import Database, is_unavailable
from tests.support.servers import postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable on loopback")


@pytest.fixture
def db(bare_postgres: Database) -> Database:
    return bare_postgres


async def backend_pid(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(pid: int) -> None:
    admin = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_an_idle_connection_that_died_is_replaced_before_it_is_handed_out(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await backend_pid(db)
    await terminate(pid)
    # Every checkout counts as idle: the dead connection fails its ping and a new one serves.
    monkeypatch.setattr(persistence.database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert await backend_pid(db) != pid


async def test_a_busy_connection_is_not_pinged_and_a_dead_one_fails_once_then_the_pool_is_renewed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = 0
    ping = db.engine.sync_engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        nonlocal pings
        pings += 1
        return ping(dbapi_connection)

    monkeypatch.setattr(db.engine.sync_engine.dialect, "do_ping", counted)
    monkeypatch.setattr(persistence.database, "PING_AFTER_IDLE_SECONDS", 60.0)
    pid = await backend_pid(db)
    assert await backend_pid(db) == pid
    assert pings == 0
    await terminate(pid)
    with pytest.raises(sa_exc.DBAPIError) as failed:
        await backend_pid(db)
    assert is_unavailable(failed.value)
    assert await backend_pid(db) != pid
