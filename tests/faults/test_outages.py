"""Redis or PostgreSQL goes away for a few seconds while a run goes on and a client watches it elsewhere.

The client watches on the replica that does not run the run, so every live event crosses the fan-out.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import FaultCluster
from tests.faults.harness import assert_lossless_and_final, record
from tests.faults.scenarios import log_head, start_watched
from tests.support.cluster import paced_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

OUTAGE_SECONDS = 5.0


async def test_redis_stopped_for_five_seconds(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        # ~90 events, over 3 s or more: on a quiet machine the run may end during the outage, and then what
        # is measured is how soon the client catches up afterwards.
        prompt = paced_scenario(steps=30, delay_ms=100)
        watched = await start_watched(healthy, client, first=healthy.other, prompt=prompt)
        await watched.mid_run()
        await asyncio.to_thread(healthy.redis.stop)
        # The outage itself (the fault, not a wait for something).
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(healthy.redis.start)
        back_at = asyncio.get_running_loop().time()
        head = await log_head(client, watched.session_id)
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    recovered = max(0.0, watcher.arrival_of(head) - back_at)
    record("Redis down 5 s", recovered, "Redis back -> client at the log's head", watcher, run)
    # Redis carries only wake-ups; the log is in PostgreSQL, so the run itself is unaffected.
    assert run["status"] == "COMPLETED"
    assert recovered < 60


async def test_postgresql_stopped_and_restarted(healthy: FaultCluster) -> None:
    async with healthy.client() as client:
        watched = await start_watched(healthy, client, first=healthy.other)
        await watched.mid_run()
        await asyncio.to_thread(healthy.postgres.stop)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(healthy.postgres.start)
        back_at = asyncio.get_running_loop().time()
        await watched.final()
        run = await assert_lossless_and_final(watched.watcher, client, watched.run_id)
    watcher = watched.watcher
    assert watcher.final_at is not None
    recovered = max(0.0, watcher.final_at - back_at)
    measured = "PostgreSQL back -> final at the client"
    record("PostgreSQL down 5 s", recovered, measured, watcher, run)
    assert recovered < 90
