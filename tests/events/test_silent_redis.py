"""A Redis that accepts connections but never answers (here: SIGSTOPped) must not throttle the event
log: appends queue their wake-ups in the outbox and go on at the database's pace."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import SESSION, start_ok, wait_for_run
from tests.events.helpers import RedisServer, free_loopback_port

pytestmark = pytest.mark.redis
EVENTS = 300


@pytest.fixture
async def frozen_redis_stack(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[tuple[Stack, RedisServer]]:
    redis = RedisServer(free_loopback_port())
    await redis.start()
    running = await start_stack("embedded", tmp_path, scripted_model, redis_url=redis.url)
    try:
        yield running, redis
    finally:
        proc = redis._proc
        if proc is not None and proc.returncode is None:
            os.kill(proc.pid, signal.SIGCONT)
        await running.api.stop()
        await redis.stop()


async def test_a_redis_that_never_answers_does_not_slow_the_log(
    frozen_redis_stack: tuple[Stack, RedisServer],
) -> None:
    stack, redis = frozen_redis_stack
    assert redis._proc is not None
    os.kill(redis._proc.pid, signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with stack.client() as client:
        started = await start_ok(client, prompt=f"[scenario:many:{EVENTS}]")
        # Before the outbox, each append waited ~1 s for its publish to time out: 300 s for this run.
        run = await wait_for_run(client, started["run"]["id"], timeout=90)
        took = loop.time() - began
        session = (await client.execute(SESSION, {"id": started["session"]["id"]}))["session"]
    assert run["status"] == "COMPLETED"
    assert session["lastSeq"] >= EVENTS
    print(f"{session['lastSeq']} events logged in {took:.1f} s with Redis frozen")
