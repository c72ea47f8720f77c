"""The memory budget of one replica's agent CLIs: how much memory they may take, and how many that is.

Running, idle and warm (pooled) CLIs all count. The budget is AGENT_MEMORY_BUDGET_MB, by default half of
the memory this process may use (its cgroup's limit when it has one, else the machine's), and each CLI is
reckoned at AGENT_CLI_MB, its measured size while it streams plus its sandbox's processes. MAX_LIVE_AGENTS,
when set, is an explicit cap instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# Where cgroups keep this process's memory limit: v2 (unified) first, then v1.
_CGROUP_V2 = Path("/sys/fs/cgroup/memory.max")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
_MEMINFO = Path("/proc/meminfo")
# cgroup v1 reports "no limit" as a huge page-aligned number rather than "max".
_V1_UNLIMITED = 1 << 60
# The share of the memory the CLIs may take by default: the rest is for the server itself, the
# database client, the page cache and the CLIs' tools (a Bash command's own processes are not counted).
DEFAULT_BUDGET_SHARE = 0.5
FALLBACK_MEMORY_MB = 4096


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_limit_mb(v2: Path = _CGROUP_V2, v1: Path = _CGROUP_V1) -> int | None:
    """This process's cgroup memory limit in MB, or None when it has none (or it cannot be read)."""
    for path in (v2, v1):
        limit = _read_int(path)
        if limit is not None and 0 < limit < _V1_UNLIMITED:
            return limit // (1024 * 1024)
    return None


def mem_total_mb(meminfo: Path = _MEMINFO) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_memory_mb() -> int:
    """The memory this process may use: its cgroup's limit when lower than the machine's, else MemTotal."""
    total = mem_total_mb()
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        except (ValueError, OSError):
            total = FALLBACK_MEMORY_MB
    limit = cgroup_limit_mb()
    return min(total, limit) if limit is not None else total


def default_budget_mb(memory_mb: int | None = None) -> int:
    return int((machine_memory_mb() if memory_mb is None else memory_mb) * DEFAULT_BUDGET_SHARE)


def agents_within(budget_mb: int, cli_mb: int) -> int:
    """How many CLIs a budget holds; at least one, or nothing could ever run."""
    return max(1, budget_mb // cli_mb)
