"""What /metrics says of this replica's capacity: live CLIs by state, the memory budget, the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.runtime import metrics
from persistence.database import Database
from persistence.repositories.runs import RunRepository

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager

MB = 1024 * 1024


def publish(manager: RunManager) -> None:
    """Point the capacity gauges at this replica's run manager (read when /metrics is scraped)."""
    settings = manager.settings
    metrics.LIVE_AGENTS_LIMIT.set(settings.effective_max_live_agents)
    metrics.MEMORY_BUDGET_BYTES.set(settings.effective_agent_memory_budget_mb * MB)
    metrics.LIVE_CLIS.labels(state="running").set_function(lambda: manager.agents_by_state()[0])
    metrics.LIVE_CLIS.labels(state="idle").set_function(lambda: manager.agents_by_state()[1])
    metrics.LIVE_CLIS.labels(state="warm").set_function(lambda: manager.warm_pool.ready)
    metrics.LIVE_CLIS.labels(state="starting").set_function(lambda: manager.warm_pool.starting)
    metrics.MEMORY_RESERVED_BYTES.set_function(lambda: manager.live_agents() * settings.agent_cli_mb * MB)


async def count_queue(db: Database) -> int:
    """The deployment's queued runs, for the queue depth gauge (one count per dispatch round)."""
    async with db.session() as session:
        queued = await RunRepository(session).count_queued()
    metrics.RUNS_QUEUED.set(queued)
    return queued
