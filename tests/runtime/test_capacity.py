"""The memory budget's arithmetic, and what /metrics tells an operator about capacity after a run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.runtime.agent_budget import agents_within, cgroup_limit_mb, default_budget_mb, mem_total_mb
from api.settings import Settings
from tests.conftest import Stack
from tests.documents import collect_until_run_ends, start_ok, watch
from tests.graphql.test_permissions import decide, requested
from tests.support.graphql_ws import GraphQLWSClient

MB = 1024 * 1024


def test_the_cgroup_limit_is_read_from_v2_then_v1(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    assert cgroup_limit_mb(v2, v1) is None
    v2.write_text("max\n")
    v1.write_text(f"{(1 << 63) - 4096}\n")
    # "max" (v2) and the page-aligned maximum (v1) both mean no limit.
    assert cgroup_limit_mb(v2, v1) is None
    v1.write_text(f"{2048 * MB}\n")
    assert cgroup_limit_mb(v2, v1) == 2048
    v2.write_text(f"{1024 * MB}\n")
    assert cgroup_limit_mb(v2, v1) == 1024


def test_mem_total_and_the_default_budget(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684544 kB\nMemFree:        16000000 kB\n")
    assert mem_total_mb(meminfo) == 24106
    assert default_budget_mb(24106) == 12053
    assert agents_within(12053, 300) == 40
    # A budget smaller than one CLI still lets one run, or nothing ever would.
    assert agents_within(100, 300) == 1


def test_the_budget_sets_the_live_agent_cap_unless_max_live_agents_does() -> None:
    assert Settings(agent_memory_budget_mb=1000, agent_cli_mb=250).effective_max_live_agents == 4
    assert Settings(agent_memory_budget_mb=1000, max_live_agents=7).effective_max_live_agents == 7
    derived = Settings()
    assert derived.effective_max_live_agents == agents_within(
        derived.effective_agent_memory_budget_mb, derived.agent_cli_mb
    )


def _sample(text: str, name: str, labels: str = "") -> float | None:
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


@pytest.mark.timeout(180)
async def test_metrics_show_permission_waits_queue_live_clis_and_the_budget(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
        before = (await http.get("/metrics")).text
    waits_before = _sample(before, "agent_permission_wait_seconds_count", 'status="ALLOWED"') or 0.0
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt="[scenario:write-file]")
        sub = await watch(ws, started["session"]["id"])
        _, request = await requested(sub)
        assert (await decide(client, request["id"], "ALLOW"))["__typename"] == "DecidePermissionSuccess"
        await collect_until_run_ends(sub, started["run"]["id"])
    async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
        text = (await http.get("/metrics")).text
    assert _sample(text, "agent_permission_wait_seconds_count", 'status="ALLOWED"') == waits_before + 1
    assert _sample(text, "agent_runs_queued") is not None
    # The session keeps its CLI after the run (idle), and this replica's budget is what settings say.
    idle = _sample(text, "agent_live_clis", 'state="idle"')
    assert idle is not None
    assert idle >= 1
    assert _sample(text, "agent_live_clis", 'state="running"') is not None
    assert _sample(text, "agent_live_clis", 'state="warm"') == 0
    assert _sample(text, "agent_live_clis", 'state="starting"') == 0
    assert _sample(text, "agent_memory_budget_bytes") == stack.settings.effective_agent_memory_budget_mb * MB
    reserved = _sample(text, "agent_memory_reserved_bytes")
    assert reserved is not None
    assert reserved >= stack.settings.agent_cli_mb * MB
