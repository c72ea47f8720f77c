"""Steps every scenario takes: start a paced run, watch it with a resuming client, wait until mid-run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tests.documents import SESSION, start_ok
from tests.faults.conftest import FaultCluster
from tests.faults.harness import ResumingClient
from tests.support.cluster import paced_scenario
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import ApiServer


@dataclass
class Watched:
    """A run under way and the client resuming on it."""

    session_id: str
    run_id: str
    watcher: ResumingClient
    reading: asyncio.Task[dict[str, Any]]

    async def mid_run(self, events: int = 6) -> None:
        """Until the client holds `events` events of the run (fails at once if reading already failed)."""
        waiting = asyncio.ensure_future(self.watcher.until_events(events))
        await asyncio.wait({waiting, self.reading}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            self.reading.result()  # raises what ended the reading
            raise AssertionError(f"the run ended before {events} events: {self.watcher.events[-3:]}")
        waiting.result()

    async def final(self) -> dict[str, Any]:
        return await self.reading


async def start_watched(
    faults: FaultCluster,
    client: GraphQLHttpClient,
    *,
    first: ApiServer,
    prompt: str | None = None,
    timeout: float = 120,
) -> Watched:
    """Start a run (by default 40 paced steps, ~120 events over several seconds) and watch it from `first`."""
    started = await start_ok(client, prompt=prompt or paced_scenario(steps=40, delay_ms=100))
    session_id, run_id = started["session"]["id"], started["run"]["id"]
    watcher = faults.watcher(session_id, first=first)
    reading = asyncio.create_task(watcher.until_final(run_id, timeout=timeout))
    return Watched(session_id, run_id, watcher, reading)


async def log_head(client: GraphQLHttpClient, session_id: str, *, timeout: float = 60) -> int:
    """The session's lastSeq, asked until a replica can answer (right after an outage it may not yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.execute_raw(SESSION, {"id": session_id})
        if response.status_code == 200 and not response.json().get("errors"):
            return int(response.json()["data"]["session"]["lastSeq"])
        assert loop.time() < deadline, f"no replica answered after {timeout}s: {response.text[:300]}"
        await asyncio.sleep(0.2)
