"""A new session's CLI starts while startRun writes the session (api/runtime/early_start.py): a start that
is refused after its CLI started stops that CLI and leaves no folder behind, and the tenant's next new
sessions start their CLIs the usual way for a while."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, _skip_unavailable, start_stack
from tests.documents import start_ok, start_run, wait_for_run, workspace_of
from tests.support.servers import create_postgres_database, drop_postgres_database


@pytest.fixture(params=MODES)
async def bounded_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """One active run per tenant: a second new session of the tenant is refused inside the transaction,
    after its CLI started."""
    mode = request.param
    _skip_unavailable(mode)
    database_url = await create_postgres_database("caga_early") if mode == "postgres" else None
    running = await start_stack(
        mode,
        tmp_path,
        scripted_model,
        database_url,
        max_active_runs_per_tenant=1,
        rate_limit_requests_per_second=0,
    )
    try:
        yield running
    finally:
        await running.api.stop()
        if database_url:
            await drop_postgres_database(database_url)


async def until(condition: object, timeout: float = 30) -> None:
    """Until `condition()` holds (a CLI is stopped and its folders removed in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def test_a_refused_start_stops_its_cli_and_leaves_nothing(bounded_stack: Stack) -> None:
    manager = bounded_stack.api.services.run_manager
    async with bounded_stack.client() as client, bounded_stack.client(bounded_stack.other_key) as other:
        slow = await start_ok(client, prompt="[scenario:slow]")
        # A free replica: the run began in startRun's transaction, its CLI starting meanwhile.
        assert slow["run"]["status"] == "RUNNING"
        sessions_dir = workspace_of(bounded_stack.data_dir, slow["session"]["id"]).parents[1]

        refused = await start_run(client, prompt="[scenario:echo] one too many")
        assert refused["__typename"] == "RateLimitedError", refused
        # The refused start's CLI is stopped and its session's folders go: only the slow one's stays.
        await until(lambda: [p.name for p in sessions_dir.iterdir()] == [slow["session"]["id"]])
        await until(lambda: manager.live_agents() == 1)

        # Another tenant's new session still starts its CLI early.
        elsewhere = await start_ok(other, prompt="[scenario:echo] elsewhere")
        assert elsewhere["run"]["status"] == "RUNNING"

        assert (await wait_for_run(client, slow["run"]["id"]))["status"] == "COMPLETED"
        # The refused tenant's next new session waits for the commit before its CLI starts (a refused
        # caller must not make the replica start a CLI per request), and runs as ever.
        later = await start_ok(client, prompt="[scenario:echo] later")
        assert later["run"]["status"] == "QUEUED"
        assert (await wait_for_run(client, later["run"]["id"]))["status"] == "COMPLETED"
        assert (await wait_for_run(other, elsewhere["run"]["id"]))["status"] == "COMPLETED"
