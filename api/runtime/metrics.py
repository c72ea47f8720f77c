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
