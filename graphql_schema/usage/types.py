"""The usage report, the budget figures, and the error a spent budget answers with."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum

import strawberry

from api import errors
from graphql_schema.errors import Error
from graphql_schema.event_types import RunStatus
from persistence.repositories.usage import UsageBucket as UsageBucketRow


@strawberry.enum(description="What usage buckets are keyed by.")
class UsageDimension(Enum):
    DAY = strawberry.enum_value("DAY", description="The UTC calendar day the run was started.")
    MODEL = strawberry.enum_value(
        "MODEL", description="The model the run was started with (its own or DEFAULT_MODEL)."
    )
    STATUS = strawberry.enum_value("STATUS", description="Where the run is now (COMPLETED, FAILED…).")


@strawberry.input(description="Which runs the usage report counts: those started in [from, to).")
class UsageFilter:
    from_: datetime | None = strawberry.field(
        name="from",
        default=None,
        description="Runs started at or after this time; absent: 30 days before `to`.",
    )
    to: datetime | None = strawberry.field(
        default=None, description="Runs started before this time; absent: now."
    )


@strawberry.type(description="What a group of runs cost and used. Keys not grouped by are null.")
class UsageBucket:
    day: date | None = strawberry.field(description="The UTC day, when grouped by DAY.")
    model: str | None = strawberry.field(
        description="The model, when grouped by MODEL; null there: runs that named none and ran on the "
        "agent's default."
    )
    status: RunStatus | None = strawberry.field(description="The runs' status, when grouped by STATUS.")
    run_count: int = strawberry.field(description="How many runs.")
    cost_usd: float = strawberry.field(
        description="What they cost in US dollars: the sum of their Run.costUsd (runs still going count 0)."
    )
    input_tokens: int = strawberry.field(description="Input tokens not read from or written to the cache.")
    output_tokens: int = strawberry.field(description="Output tokens.")
    cache_read_input_tokens: int = strawberry.field(description="Input tokens read from the prompt cache.")
    cache_creation_input_tokens: int = strawberry.field(
        description="Input tokens written to the prompt cache."
    )

    @classmethod
    def from_row(cls, row: UsageBucketRow) -> UsageBucket:
        return cls(
            day=row.day,
            model=row.model,
            status=RunStatus(row.status) if row.status is not None else None,
            run_count=row.run_count,
            cost_usd=row.cost_usd,
            input_tokens=row.tokens["input_tokens"],
            output_tokens=row.tokens["output_tokens"],
            cache_read_input_tokens=row.tokens["cache_read_input_tokens"],
            cache_creation_input_tokens=row.tokens["cache_creation_input_tokens"],
        )


@strawberry.type(description="What the caller's tenant's runs of a period cost and used, in buckets.")
class UsageReport:
    from_: datetime = strawberry.field(name="from", description="The start of the period (inclusive).")
    to: datetime = strawberry.field(description="The end of the period (exclusive).")
    group_by: list[UsageDimension] = strawberry.field(description="What the buckets are keyed by.")
    buckets: list[UsageBucket] = strawberry.field(
        description="One per combination of keys that has runs, ordered by the keys (days ascending)."
    )
    total: UsageBucket = strawberry.field(description="All of the period's runs together; every key null.")


@strawberry.type(description="The operator's budgets for the caller's tenant, and what today has spent.")
class BudgetStatus:
    daily_budget_usd: float | None = strawberry.field(
        description="What the tenant's runs may cost per UTC day; null: no daily budget."
    )
    spent_today_usd: float = strawberry.field(
        description="What the runs started today (UTC) have cost so far."
    )
    resets_at: datetime = strawberry.field(description="When the day ends: the next midnight UTC.")
    max_run_budget_usd: float | None = strawberry.field(
        description="The largest maxBudgetUsd startRun accepts; null: no cap."
    )
    default_run_budget_usd: float | None = strawberry.field(
        description="The maxBudgetUsd of a run that asks for none; null: no limit."
    )


@strawberry.type(
    description="The tenant's runs have spent its daily budget: no run starts until it resets. Nothing "
    "was created."
)
class BudgetExceededError(Error):
    budget_usd: float = strawberry.field(description="The daily budget, in US dollars.")
    spent_usd: float = strawberry.field(description="What the tenant's runs of today have cost.")
    resets_at: datetime = strawberry.field(description="When runs may start again: the next midnight UTC.")


def budget_exceeded_error(exc: errors.BudgetExceeded) -> BudgetExceededError:
    return BudgetExceededError(
        code=exc.code,
        message=exc.message,
        budget_usd=exc.budget_usd,
        spent_usd=exc.spent_usd,
        resets_at=exc.resets_at,
    )
