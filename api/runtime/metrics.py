"""Prometheus metrics of runs."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

RUNS_STARTED: Final = Counter("agent_runs_started", "Runs this replica started executing.")
RUNS_FINISHED: Final = Counter("agent_runs_finished", "Runs this replica finished, by status.", ["status"])
RUN_SECONDS: Final = Histogram(
    "agent_run_duration_seconds",
    "Wall time of a run on this replica, from RUNNING to its end.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
RUNS_RUNNING: Final = Gauge("agent_runs_running", "Runs executing on this replica now.")
LIVE_SESSIONS: Final = Gauge("agent_live_sessions", "Sessions with a live agent CLI on this replica.")
AGENTS_EVICTED: Final = Counter(
    "agent_clis_evicted", "Idle agent CLIs stopped to make room for another session's (MAX_LIVE_AGENTS)."
)
LIVE_AGENTS_LIMIT: Final = Gauge("agent_live_clis_limit", "MAX_LIVE_AGENTS in force on this replica.")
LIVE_CLIS: Final = Gauge(
    "agent_live_clis",
    "Agent CLIs alive on this replica, by state: running (a run executes), idle (kept for the session's "
    "next turn), warm (pooled, ready for a new session) and starting (being started for the pool).",
    ["state"],
)
MEMORY_BUDGET_BYTES: Final = Gauge(
    "agent_memory_budget_bytes", "AGENT_MEMORY_BUDGET_MB in force on this replica, in bytes."
)
MEMORY_RESERVED_BYTES: Final = Gauge(
    "agent_memory_reserved_bytes",
    "What this replica's live agent CLIs take against the budget: their number times AGENT_CLI_MB.",
)
RUNS_QUEUED: Final = Gauge(
    "agent_runs_queued", "Runs waiting QUEUED in the deployment, as this replica's dispatcher last counted."
)
WARM_POOL_USED: Final = Counter(
    "agent_warm_pool_used", "New sessions whose first run took a CLI from this replica's warm pool."
)
WARM_POOL_STARTED: Final = Counter(
    "agent_warm_pool_started", "CLIs this replica's warm pool started, by outcome.", ["outcome"]
)
PERMISSION_WAIT_SECONDS: Final = Histogram(
    "agent_permission_wait_seconds",
    "From a permission request to its decision, by how it was decided (ALLOWED, DENIED, EXPIRED, CANCELLED).",
    ["status"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900),
)
SANDBOX_LEFTOVERS_KILLED: Final = Counter(
    "agent_sandbox_leftovers_killed",
    "Sandbox processes killed after their CLI had stopped (bubblewrap killed during its setup leaves its "
    "sandbox's first process waiting forever).",
)
