"""The migrations build exactly the schema the models describe, on PostgreSQL and on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from persistence.database import create_engine
from persistence.migrations import alembic_config, current_revision, head_revision, upgrade_head
from persistence.models import Base
from tests.support.servers import create_postgres_database, drop_postgres_database, postgres_available


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on loopback")
    url = await create_postgres_database("caga_migrations")
    try:
        yield url
    finally:
        await drop_postgres_database(url)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _model_diff(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


async def test_upgrade_head_matches_the_models(database_url: str) -> None:
    await upgrade_head(database_url)
    assert await current_revision(database_url) == head_revision(database_url)
    assert await _model_diff(database_url) == []


async def test_upgrading_twice_is_a_no_op_and_downgrade_round_trips(database_url: str) -> None:
    await upgrade_head(database_url)
    await upgrade_head(database_url)

    def down_and_up(connection: Connection) -> None:
        config = alembic_config(database_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        command.upgrade(config, "head")

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(down_and_up)
            await connection.commit()
    finally:
        await engine.dispose()
    assert await _model_diff(database_url) == []
