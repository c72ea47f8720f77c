"""The agent side breaks: its CLI is killed, or the model answers an error, stalls or sends garbage.

The run must end FAILED with a reason, as its last event, and the client must hold every event once.
"Time to recover" here is from the fault (the kill) or, for the model's faults, from the run going RUNNING
to the client holding the verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from tests.faults.conftest import RUN_TIMEOUT_SECONDS, FaultCluster
from tests.faults.harness import assert_lossless_and_final, cli_pids, record
from tests.faults.scenarios import start_watched

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

RUN_TO_VERDICT = "RUNNING -> FAILED at the client"


def _then_error(status: int) -> str:
    """Three tool-calling steps, then the model answers HTTP `status`."""
    steps: list[dict[str, object]] = [
        {"delay_ms": 50, "content": [{"type": "tool_use", "name": "Glob", "input": {"pattern": f"*.{i}"}}]}
        for i in range(3)
    ]
    steps.append({"error": {"status": status}})
    return "[scenario]" + json.dumps({"steps": steps})


async def test_the_cli_killed(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.runner)
        await watched.mid_run()
        pids = cli_pids(watched.session_id)
        assert pids, "the agent CLI process was not found"
        killed_at = asyncio.get_running_loop().time()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert run["status"] == "FAILED"
    assert watcher.final_at is not None
    recovered = watcher.final_at - killed_at
    record("CLI SIGKILL", recovered, "kill -> FAILED at the client", watcher, run)
    assert recovered < 60


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_the_model_answers_an_error_mid_run(healthy: FaultCluster, status: int) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.runner, prompt=_then_error(status))
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert run["status"] == "FAILED"
    assert f"model API status {status}" in run["error"]
    # The steps before the error happened: three tool calls and their results are in the log.
    tool_calls = [e for e in watcher.events if e["payload"]["__typename"] == "AssistantMessage"]
    assert len(tool_calls) >= 3
    assert watcher.final_at is not None
    took = watcher.final_at - watcher.run_started_at
    record(f"model HTTP {status}", took, RUN_TO_VERDICT, watcher, run)
    assert took < 60


async def test_the_model_stream_is_malformed(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.runner, prompt="[scenario:malformed]")
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert run["status"] == "FAILED"
    assert "JSON" in run["error"], run["error"]
    assert watcher.final_at is not None
    took = watcher.final_at - watcher.run_started_at
    record("model stream malformed", took, RUN_TO_VERDICT, watcher, run)
    assert took < 60


async def test_the_model_stream_stalls(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(
            healthy, client, first=healthy.runner, prompt="[scenario:stall]", timeout=RUN_TIMEOUT_SECONDS + 90
        )
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert run["status"] == "FAILED"
    assert run["error"] == "the run exceeded its time limit"
    assert watcher.final_at is not None
    took = watcher.final_at - watcher.run_started_at
    record("model stream stall", took, RUN_TO_VERDICT, watcher, run)
    assert took < RUN_TIMEOUT_SECONDS + 60
