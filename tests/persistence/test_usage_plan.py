"""The usage report and the daily budget read one range of ix_runs_tenant_id_created_at, and the report
sums in the database: its figures match the rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from persistence.database import Database
from persistence.models import AgentSession, Run, Tenant, utcnow
from persistence.repositories.usage import UsageDimension, UsageRepository

INDEX = "ix_runs_tenant_id_created_at"
DAYS = 30
RUNS_PER_DAY = 40


async def test_a_tenants_day_is_summed_from_the_index(db: Database) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    runs = []
    for day in range(DAYS):
        for n in range(RUNS_PER_DAY):
            tenant = tenants[n % 3]
            runs.append(
                {
                    "id": str(uuid.uuid4()),
                    "session_id": tenant,
                    "tenant_id": tenant,
                    "status": "FAILED" if n % 4 == 3 else "COMPLETED",
                    "prompt": "p",
                    "options": {"model": "m-a" if n % 2 else "m-b"},
                    "prompt_uuid": str(uuid.uuid4()),
                    "created_at": start + timedelta(days=day, minutes=n),
                    "interrupt_requested": False,
                    "cost_usd": 0.25 * (n % 5),
                    "usage": {"input_tokens": n, "output_tokens": 2 * n, "cache_read_input_tokens": 1},
                }
            )
    async with db.session() as session:
        session.add_all(Tenant(id=t, name=t, created_at=start) for t in tenants)
        await session.flush()
        session.add_all(
            AgentSession(id=t, tenant_id=t, title=None, status="IDLE", created_at=start, updated_at=start)
            for t in tenants
        )
        await session.flush()
        await session.execute(sa.insert(Run), runs)
        await session.commit()

    since, until = start + timedelta(days=3), start + timedelta(days=5)
    group_by = [UsageDimension.DAY, UsageDimension.MODEL, UsageDimension.STATUS]
    async with db.session() as session:
        buckets = await UsageRepository(session).buckets(
            tenants[0], since=since, until=until, group_by=group_by
        )
    mine = [r for r in runs if r["tenant_id"] == tenants[0] and since <= r["created_at"] < until]
    assert sum(b.run_count for b in buckets) == len(mine)
    assert sum(b.cost_usd for b in buckets) == pytest.approx(sum(r["cost_usd"] for r in mine))
    assert sum(b.tokens["output_tokens"] for b in buckets) == sum(r["usage"]["output_tokens"] for r in mine)
    assert sum(b.tokens["cache_read_input_tokens"] for b in buckets) == len(mine)
    assert sum(b.tokens["cache_creation_input_tokens"] for b in buckets) == 0
    assert {b.day for b in buckets} == {since.date(), (since + timedelta(days=1)).date()}
    assert {b.model for b in buckets} == {"m-a", "m-b"}
    first = [b for b in buckets if b.day == since.date() and b.model == "m-a" and b.status == "FAILED"]
    expected = [
        r
        for r in mine
        if r["created_at"].date() == since.date()
        and r["options"]["model"] == "m-a"
        and r["status"] == "FAILED"
    ]
    assert len(first) == 1
    assert first[0].run_count == len(expected) > 0

    statement = UsageRepository.summing(
        tenants[0], since=since, until=until, group_by=group_by, dialect=db.dialect
    )
    async with db.engine.connect() as connection:
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if db.dialect == "sqlite":
            await connection.execute(sa.text("ANALYZE"))
            rows = (await connection.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"))).all()
            plan = "\n".join(str(row[-1]) for row in rows)
        else:
            await connection.execute(sa.text("ANALYZE runs"))
            rows = (await connection.execute(sa.text(f"EXPLAIN {sql}"))).all()
            plan = "\n".join(str(row[0]) for row in rows)
    assert INDEX in plan, plan
