"""A fresh, migrated database for each test, on SQLite and on PostgreSQL (skipped where it is not running)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence.database import Database
from persistence.migrations import upgrade_head
from tests.support.servers import create_postgres_database, drop_postgres_database, postgres_available


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'persistence.sqlite3'}"
    elif not postgres_available():
        pytest.skip("PostgreSQL is not reachable on loopback")
    else:
        url = await create_postgres_database("caga_persistence")
    await upgrade_head(url)
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()
        if request.param == "postgres":
            await drop_postgres_database(url)


@pytest.fixture
async def bare_postgres() -> AsyncIterator[Database]:
    """An empty PostgreSQL database, not migrated, for tests of the engine and its pool alone."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on loopback")
    url = await create_postgres_database("caga_engine")
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()
        await drop_postgres_database(url)
