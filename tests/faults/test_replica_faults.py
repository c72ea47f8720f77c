"""The replica running a run dies (SIGKILL) or is told to stop (SIGTERM) while a client watches it there."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import FaultCluster
from tests.faults.harness import assert_lossless_and_final, record
from tests.faults.scenarios import start_watched

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


async def test_sigkill_of_the_running_replica(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.runner)
        await watched.mid_run()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        healthy.runner.kill()
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert watcher.interruptions, "the client was never cut off"
    assert run["status"] == "FAILED"
    assert "stopped responding" in run["error"]
    assert watcher.final_at is not None
    recovered = watcher.final_at - killed_at
    record("replica SIGKILL", recovered, "kill -> final at the client", watcher, run)
    # The orphan is noticed after its lease expires (3 s here); generous for a loaded machine.
    assert recovered < 90


async def test_sigterm_of_the_running_replica(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.runner)
        await watched.mid_run()
        loop = asyncio.get_running_loop()
        signalled_at = loop.time()
        healthy.runner.terminate()
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
        await healthy.runner.wait(timeout=60)
    watcher = watched.watcher
    assert watcher.interruptions, "the client was never cut off"
    assert watcher.final_at is not None
    recovered = watcher.final_at - signalled_at
    record("replica SIGTERM", recovered, "SIGTERM -> final at the client", watcher, run)
    if run["status"] == "FAILED":
        assert run["error"] == "the server shut down during the run"
    assert recovered < 60
