"""A tenant's sessions newest first come from ix_sessions_tenant_id_created_at_id, without a sort."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from persistence.database import Database
from persistence.models import Tenant, utcnow
from persistence.repositories.sessions import SessionQuery, SessionRepository

INDEX = "ix_sessions_tenant_id_created_at_id"


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
