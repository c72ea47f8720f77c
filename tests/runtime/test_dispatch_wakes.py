"""What a run's end wakes in the dispatcher (RunManager._dispatch_loop): a round for the runs waiting for
its slot or its session, and nothing when none was waiting at the last count (every follow-up turn's end
would pay for the round's reads). The dispatcher here polls once a minute, so what the tests see is what
the wake-ups did, not the poll."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from api.runtime.run_manager import RunManager
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, running_stack
from tests.documents import start_ok, wait_for_run
from tests.support.servers import RedisServer

POLL_SECONDS = 60.0


@pytest.fixture(params=MODES)
async def quiet_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """A dispatcher that polls once a minute; on PostgreSQL with a Redis of its own, since every replica
    on a Redis is woken by any replica's queued run (the control channel), other tests' included."""
    with ExitStack() as resources:
        overrides: dict[str, object] = {"dispatch_poll_seconds": POLL_SECONDS}
        if request.param == "postgres":
            overrides["redis_url"] = resources.enter_context(RedisServer(tmp_path / "redis")).url
        async with running_stack(
            request.param, tmp_path / "stack", scripted_model, "caga_dispatch", **overrides
        ) as running:
            yield running


def count_rounds(manager: RunManager, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[rounds]: how many dispatch rounds began from now (each begins with _poll_interrupts, called in
    the step that took the wake-up, before any await)."""
    rounds = [0]
    poll_interrupts: Callable[[], Coroutine[Any, Any, None]] = manager._poll_interrupts

    def counted() -> Coroutine[Any, Any, None]:
        rounds[0] += 1
        return poll_interrupts()

    monkeypatch.setattr(manager, "_poll_interrupts", counted)
    return rounds


async def wake_taken(manager: RunManager, session_id: str | None = None) -> None:
    """Until the dispatcher has taken its last wake-up (it clears the event in the step where it decides
    on the round, so a round, if any, is counted by then); with `session_id`, after that session's actor
    is done with its run (it wakes the dispatcher as it is, after the run reads over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (session_id is not None and manager._actors[session_id].busy) or manager._wake.is_set():
        assert loop.time() < deadline, "the dispatcher did not wake"
        await asyncio.sleep(0.01)


async def until_counted(manager: RunManager, queued: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while manager._queued_seen != queued:
        assert loop.time() < deadline, f"the dispatcher counted {manager._queued_seen} queued, not {queued}"
        await asyncio.sleep(0.01)


async def test_a_run_waiting_for_its_session_begins_as_the_run_before_it_ends(quiet_stack: Stack) -> None:
    stack = quiet_stack
    manager = stack.api.services.run_manager
    slow = "[scenario]" + json.dumps(
        {"steps": [{"delay_ms": 1000, "content": [{"type": "text", "text": "slow"}]}]}
    )
    async with stack.client() as client:
        first = await start_ok(client, prompt=slow)
        session_id = first["session"]["id"]
        follow = await start_ok(client, prompt="next", sessionId=session_id, onBusy="ENQUEUE")
        assert follow["run"]["status"] == "QUEUED"
        # Announced, and counted while the session was busy: from here only the first run's end can
        # begin it before the poll.
        await until_counted(manager, 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
        done = await wait_for_run(client, follow["run"]["id"], timeout=POLL_SECONDS / 3)
        waited = loop.time() - started
    assert done["status"] == "COMPLETED"
    assert done["result"]["result"] == "You said: next"
    assert waited < POLL_SECONDS / 3


async def test_a_run_ending_with_nothing_queued_costs_no_dispatch_round(
    quiet_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = quiet_stack
    manager = stack.api.services.run_manager
    async with stack.client() as client:
        first = await start_ok(client, prompt="first turn")
        session_id = first["session"]["id"]
        assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
        # The rounds of the server's start and of the session's new CLI (install_warm) are over.
        await wake_taken(manager, session_id)
        assert manager._queued_seen == 0
        rounds = count_rounds(manager, monkeypatch)
        for turn in range(3):
            # Begun in startRun (nothing announced), so its end alone wakes the dispatcher.
            follow = await start_ok(client, prompt=f"turn {turn}", sessionId=session_id)
            assert follow["run"]["status"] == "RUNNING"
            assert (await wait_for_run(client, follow["run"]["id"]))["status"] == "COMPLETED"
            await wake_taken(manager, session_id)
        assert rounds == [0]
        # Whereas a nudge (what a queued run sends) still makes a round.
        manager.nudge()
        await wake_taken(manager)
        assert rounds == [1]
