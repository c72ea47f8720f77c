"""MAX_LIVE_AGENTS: idle CLIs are a cache. When the budget is full, the least recently used idle one is
stopped for a new session's run (which resumes later from its transcript), and a run waits QUEUED while
every CLI in the budget is busy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.runtime import metrics
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import RUN, run_status, start_ok, wait_for_run, watch
from tests.support.graphql_ws import GraphQLWSClient


@pytest.fixture
async def one_agent_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    running = await start_stack("embedded", tmp_path, scripted_model, max_live_agents=1)
    try:
        yield running
    finally:
        await running.api.stop()


async def test_an_idle_cli_makes_room_and_its_session_resumes(one_agent_stack: Stack) -> None:
    manager = one_agent_stack.api.services.run_manager
    evicted_before = metrics.AGENTS_EVICTED._value.get()
    async with one_agent_stack.client() as client:
        first = await start_ok(client, prompt="remember: apples")
        assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
        second = await start_ok(client, prompt="[scenario:echo] another session")
        assert (await wait_for_run(client, second["run"]["id"]))["status"] == "COMPLETED"
        assert manager.live_agents() == 1
        assert first["session"]["id"] not in manager._actors
        # The evicted session takes its next turn in a new CLI that resumes its transcript.
        again = await start_ok(client, prompt="[scenario:echo] and now?", sessionId=first["session"]["id"])
        assert (await wait_for_run(client, again["run"]["id"]))["status"] == "COMPLETED"
    assert metrics.AGENTS_EVICTED._value.get() - evicted_before == 2
    assert manager.live_agents() == 1


async def test_a_run_waits_queued_while_every_cli_is_busy(one_agent_stack: Stack) -> None:
    async with (
        one_agent_stack.client() as client,
        GraphQLWSClient.connect(one_agent_stack.api.ws_url, token=one_agent_stack.key) as ws,
    ):
        slow = await start_ok(client, prompt="[scenario:slow]")
        sub = await watch(ws, slow["session"]["id"])
        waiting = await start_ok(client, prompt="[scenario:echo] me next")
        # The slow run holds the only CLI the budget allows: the other cannot start beside it.
        seen: list[dict[str, Any]] = []
        while "RUNNING" not in run_status(seen, slow["run"]["id"]):
            seen.append((await sub.next(timeout=60))["data"]["sessionEvents"])
        assert (await client.execute(RUN, {"id": waiting["run"]["id"]}))["run"]["status"] == "QUEUED"
        assert (await wait_for_run(client, slow["run"]["id"]))["status"] == "COMPLETED"
        assert (await wait_for_run(client, waiting["run"]["id"]))["status"] == "COMPLETED"
