"""A tenant's sessions newest first come from ix_sessions_tenant_id_created_at_id, without a sort."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import Tenant, utcnow
from persistence.repositories.sessions import SessionQuery, SessionRepository
from tests.support.servers import create_postgres_database, drop_postgres_database, postgres_available

INDEX = "ix_sessions_tenant_id_created_at_id"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'plan.sqlite3'}"
    elif not postgres_available():
        pytest.skip("PostgreSQL is not reachable on loopback")
    else:
        url = await create_postgres_database("caga_plan")
    await upgrade_head(url)
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()
        if request.param == "postgres":
            await drop_postgres_database(url)


async def test_the_newest_sessions_of_a_tenant_are_read_from_the_index(db: Database) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    start = utcnow()
    async with db.session() as session:
        session.add_all(Tenant(id=t, name=t, created_at=start) for t in tenants)
        await session.flush()
        for n in range(600):
            await SessionRepository(session).create(
                session_id=str(uuid.uuid4()),
                tenant_id=tenants[n % 3],
                title=None,
                at=start + timedelta(seconds=n),
            )
        await session.commit()
    statement = SessionRepository.listing(SessionQuery(tenant_id=tenants[0]), after=None, limit=21)
    async with db.engine.connect() as connection:
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if db.dialect == "sqlite":
            await connection.execute(sa.text("ANALYZE"))
            rows = (await connection.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"))).all()
            plan = "\n".join(str(row[-1]) for row in rows)
        else:
            await connection.execute(sa.text("ANALYZE sessions"))
            rows = (await connection.execute(sa.text(f"EXPLAIN {sql}"))).all()
            plan = "\n".join(str(row[0]) for row in rows)
    assert INDEX in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite's sort
    assert "Sort" not in plan, plan  # PostgreSQL's
