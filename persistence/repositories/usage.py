"""What a tenant's runs cost and used, summed in the database (GROUP BY), on PostgreSQL and SQLite alike.

Runs count by the time they were created (startRun), on ix_runs_tenant_id_created_at: a tenant's runs of
a period are one range of that index, whatever the other tenants do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import Run

# The token counts a run's usage holds (the Messages API's names), summed per bucket.
TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class UsageDimension(StrEnum):
    DAY = "DAY"
    MODEL = "MODEL"
    STATUS = "STATUS"


@dataclass(frozen=True)
class UsageBucket:
    """The runs that share one value of each grouped dimension (the others are None)."""

    day: date | None
    model: str | None
    status: str | None
    run_count: int
    cost_usd: float
    tokens: dict[str, int]


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def buckets(
        self,
        tenant_id: str,
        *,
        since: datetime,
        until: datetime,
        group_by: Sequence[UsageDimension],
    ) -> list[UsageBucket]:
        """The tenant's runs created in [since, until), summed per group, in the order of the keys."""
        dialect = self.session.get_bind().dialect.name
        statement = self.summing(tenant_id, since=since, until=until, group_by=group_by, dialect=dialect)
        rows = (await self.session.execute(statement)).mappings().all()
        keys = set(group_by)
        return [
            UsageBucket(
                day=_as_date(row["day"]) if UsageDimension.DAY in keys else None,
                model=row["model"] if UsageDimension.MODEL in keys else None,
                status=row["status"] if UsageDimension.STATUS in keys else None,
                run_count=int(row["run_count"]),
                cost_usd=float(row["cost_usd"] or 0.0),
                tokens={key: int(row[key] or 0) for key in TOKEN_KEYS},
            )
            for row in rows
            # Without groups an empty range still answers one row of zeros: no bucket for it.
            if row["run_count"]
        ]

    @staticmethod
    def summing(
        tenant_id: str,
        *,
        since: datetime,
        until: datetime,
        group_by: Sequence[UsageDimension],
        dialect: str = "sqlite",
    ) -> sa.Select[Any]:
        """The statement of `buckets`: one range of ix_runs_tenant_id_created_at, grouped."""
        keys = [_key(dimension, dialect).label(dimension.value.lower()) for dimension in group_by]
        sums = [sa.func.count().label("run_count"), sa.func.sum(Run.cost_usd).label("cost_usd")]
        sums += [sa.func.sum(Run.usage[key].as_integer()).label(key) for key in TOKEN_KEYS]
        statement = sa.select(*keys, *sums).where(
            Run.tenant_id == tenant_id, Run.created_at >= since, Run.created_at < until
        )
        if keys:
            statement = statement.group_by(*keys).order_by(*keys)
        return statement

    async def cost_since(self, tenant_id: str, since: datetime) -> float:
        """What the tenant's runs created since then have cost so far (runs still going count as 0)."""
        result = await self.session.execute(
            sa.select(sa.func.sum(Run.cost_usd)).where(Run.tenant_id == tenant_id, Run.created_at >= since)
        )
        return float(result.scalar_one() or 0.0)


def _key(dimension: UsageDimension, dialect: str) -> sa.ColumnElement[Any]:
    if dimension is UsageDimension.STATUS:
        return Run.status.expression
    if dimension is UsageDimension.MODEL:
        # The model the run was started with (the caller's or DEFAULT_MODEL); null: the agent's default.
        model: sa.ColumnElement[Any] = Run.options["model"].as_string()
        return model
    if dialect == "postgresql":
        # The UTC calendar day, whatever the connection's time zone.
        return sa.cast(sa.func.timezone("UTC", Run.created_at), sa.Date)
    # SQLite keeps UTCDateTime as "YYYY-MM-DD HH:MM:SS.ffffff" in UTC.
    day: sa.ColumnElement[Any] = sa.func.date(Run.created_at)
    return day


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
