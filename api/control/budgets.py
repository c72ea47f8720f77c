"""The tenant's daily budget, checked before a run is created.

A day is a UTC calendar day; a run's cost counts on the day it was created. The check reads what the
day's runs have cost so far, so runs still going when the budget runs out may overshoot it by their own
cost (each bounded by its maxBudgetUsd, see MAX_RUN_BUDGET_USD).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Principal
from api.errors import BudgetExceeded
from api.runtime.tool_policy import PolicyBook
from persistence.repositories.usage import UsageRepository


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class DailyBudgetStatus:
    """Where a tenant stands today: its budget (None: none), what it spent, when the day ends."""

    budget_usd: float | None
    spent_usd: float
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd


class DailyBudgets:
    def __init__(self, policy: PolicyBook) -> None:
        self.policy = policy

    async def status(self, db: AsyncSession, principal: Principal, now: datetime) -> DailyBudgetStatus:
        budget = self.policy.budgets_for(principal.tenant_name).daily_usd
        start = day_start(now)
        spent = await UsageRepository(db).cost_since(principal.tenant_id, start)
        return DailyBudgetStatus(budget_usd=budget, spent_usd=spent, resets_at=start + timedelta(days=1))

    async def check(self, db: AsyncSession, principal: Principal, now: datetime) -> None:
        """Raise BudgetExceeded when the tenant's runs of today have spent its daily budget."""
        if self.policy.budgets_for(principal.tenant_name).daily_usd is None:
            return
        status = await self.status(db, principal, now)
        if status.exhausted:
            assert status.budget_usd is not None
            raise BudgetExceeded(
                budget_usd=status.budget_usd, spent_usd=status.spent_usd, resets_at=status.resets_at
            )
