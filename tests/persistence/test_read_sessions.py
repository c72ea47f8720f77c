"""A query's reads on PostgreSQL: no transaction around them, and the pool hands out the connection that
served last (persistence/database.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from persistence.database import Database
from tests.support.servers import postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable on loopback")

NOW = sa.text("SELECT now()")
PID = sa.text("SELECT pg_backend_pid()")


@pytest.fixture
def db(bare_postgres: Database) -> Database:
    return bare_postgres


async def test_each_statement_of_a_read_session_is_its_own_transaction(db: Database) -> None:
    # now() is the start of the current transaction: one value for a whole transaction.
    async with db.session() as session:
        in_one = [(await session.execute(NOW)).scalar_one() for _ in range(2)]
    session = db.read_session()
    try:
        alone = [(await session.execute(NOW)).scalar_one() for _ in range(2)]
    finally:
        await session.close()
    assert in_one[0] == in_one[1]
    assert alone[0] < alone[1]


async def test_a_read_session_leaves_its_connection_as_it_found_it(db: Database) -> None:
    session = db.read_session()
    try:
        await session.execute(PID)
    finally:
        await session.close()
    # The same pool serves writes: a connection back from a read session is in a transaction again.
    async with db.session() as session:
        in_one = [(await session.execute(NOW)).scalar_one() for _ in range(2)]
        level = await (await session.connection()).get_isolation_level()
    assert in_one[0] == in_one[1]
    assert level == "READ COMMITTED"


async def test_the_pool_hands_out_the_connection_that_served_last(db: Database) -> None:
    first, second = db.read_session(), db.read_session()
    try:
        # A session holds its connection until it closes: two sessions, two connections.
        pids = [(await session.execute(PID)).scalar_one() for session in (first, second)]
    finally:
        await first.close()
        await second.close()  # returned last
    assert pids[0] != pids[1]
    for _ in range(3):
        session = db.read_session()
        try:
            assert (await session.execute(PID)).scalar_one() == pids[1]
        finally:
            await session.close()
