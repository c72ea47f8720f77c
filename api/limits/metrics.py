"""Prometheus metrics of the limits (listed in docs/operations.md)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

REFUSED: Final = Counter(
    "agent_rate_limited", "Requests and startRun calls refused by a limit, by limit.", ["limit"]
)
FAILED_OPEN: Final = Counter(
    "agent_rate_limit_failed_open", "Limit checks allowed without counting because Redis did not answer."
)
