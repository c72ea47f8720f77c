"""usage and budget: what a dashboard charts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import strawberry

from api.errors import ValidationFailed
from graphql_schema.context import Info
from graphql_schema.usage.types import BudgetStatus, UsageBucket, UsageDimension, UsageFilter, UsageReport
from persistence.models import utcnow
from persistence.repositories.usage import UsageDimension as Dimension
from persistence.repositories.usage import UsageRepository

DEFAULT_DAYS = 30
# Bounds the buckets of a DAY report (days, models and statuses).
MAX_DAYS = 366


def _period(filter: UsageFilter | None) -> tuple[datetime, datetime]:
    to = filter.to if filter and filter.to else utcnow()
    try:
        since = filter.from_ if filter and filter.from_ else to - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        # `to` within the default period of the calendar's first day (found by the schema fuzzer).
        raise ValidationFailed("to is too early for a period ending there", field="filter.to") from None
    for name, value in (("from", since), ("to", to)):
        if value.tzinfo is None:
            raise ValidationFailed(f"{name} needs a time zone (e.g. Z)", field=f"filter.{name}")
    if since >= to:
        raise ValidationFailed("from must be before to", field="filter.from")
    if to - since > timedelta(days=MAX_DAYS):
        raise ValidationFailed(f"the period is at most {MAX_DAYS} days", field="filter.from")
    return since, to


@strawberry.type
class UsageQueries:
    @strawberry.field(
        description="What the caller's tenant's runs started in a period cost and used, summed per day, "
        f"model and/or status. The period is at most {MAX_DAYS} days."
    )
    async def usage(
        self,
        info: Info,
        filter: Annotated[
            UsageFilter | None, strawberry.argument(description="The period; absent: the last 30 days.")
        ] = None,
        group_by: Annotated[
            list[UsageDimension] | None,
            strawberry.argument(description="The bucket keys, each at most once; [] or absent: one bucket."),
        ] = None,
    ) -> UsageReport:
        principal = info.context.require_principal()
        since, to = _period(filter)
        dimensions = list(dict.fromkeys(group_by or []))
        async with info.context.services.db.session() as db:
            rows = await UsageRepository(db).buckets(
                principal.tenant_id,
                since=since,
                until=to,
                group_by=[Dimension(d.name) for d in dimensions],
            )
        buckets = [UsageBucket.from_row(row) for row in rows]
        total = UsageBucket(
            day=None,
            model=None,
            status=None,
            run_count=sum(b.run_count for b in buckets),
            cost_usd=sum(b.cost_usd for b in buckets),
            input_tokens=sum(b.input_tokens for b in buckets),
            output_tokens=sum(b.output_tokens for b in buckets),
            cache_read_input_tokens=sum(b.cache_read_input_tokens for b in buckets),
            cache_creation_input_tokens=sum(b.cache_creation_input_tokens for b in buckets),
        )
        return UsageReport(from_=since, to=to, group_by=dimensions, buckets=buckets, total=total)

    @strawberry.field(description="The operator's budgets for the caller's tenant, and today's spending.")
    async def budget(self, info: Info) -> BudgetStatus:
        principal = info.context.require_principal()
        budgets = info.context.services.run_control.budgets
        async with info.context.services.db.session() as db:
            status = await budgets.status(db, principal, utcnow())
        figures = budgets.policy.budgets_for(principal.tenant_name)
        return BudgetStatus(
            daily_budget_usd=status.budget_usd,
            spent_today_usd=status.spent_usd,
            resets_at=status.resets_at,
            max_run_budget_usd=figures.max_run_usd,
            default_run_budget_usd=figures.run_budget(None),
        )
