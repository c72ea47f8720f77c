"""A new session's CLI starts while startRun writes the session (api/runtime/early_start.py): a start that
is refused after its CLI started stops that CLI and leaves no folder behind, and the tenant's next new
sessions start their CLIs the usual way for a while."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.scripted_model.server import ScriptedModelServer
from persistence.database import Database
from persistence.repositories.tenants import TenantRepository
from tests.conftest import MODES, Stack, running_stack
from tests.documents import start_ok, start_run, wait_for_run, workspace_of
from tests.runtime.test_warm_pool import tenant_of


@pytest.fixture(params=MODES)
async def bounded_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """One active run per tenant: a second new session of the tenant is refused inside the transaction,
    after its CLI started."""
    async with running_stack(
        request.param,
        tmp_path,
        scripted_model,
        "caga_early",
        max_active_runs_per_tenant=1,
        rate_limit_requests_per_second=0,
    ) as running:
        yield running


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


@pytest.fixture
async def short_lease_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    async with running_stack(
        "postgres",
        tmp_path,
        scripted_model,
        "caga_early_lease",
        lease_seconds=LEASE_SECONDS,
        lease_renew_seconds=1.0,
        rate_limit_requests_per_second=0,
    ) as running:
        yield running


LEASE_SECONDS = 3.0


async def test_a_start_that_waits_for_the_tenants_row_keeps_its_lease(short_lease_stack: Stack) -> None:
    """In a burst, startRuns wait in turn for their tenant's row. The new session's lease is claimed
    after that wait: one claimed before it was near its end by the commit, and the keeper gave it up
    as unrenewable, failing the run (seen in benchmarks.burst)."""
    stack = short_lease_stack
    db = Database(stack.settings.effective_database_url)
    try:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:echo] first")
            await wait_for_run(client, first["run"]["id"])
            tenant_id = await tenant_of(stack, first["session"]["id"])
            async with db.session() as holder:
                await TenantRepository(holder).lock(tenant_id)
                # A run long enough for the lease keeper to come round while it streams.
                started = asyncio.create_task(start_ok(client, prompt="[scenario:slow]"))
                await until_waiting_for_a_lock(db)
                # The startRun waits for the row longer than a lease lasts.
                await asyncio.sleep(LEASE_SECONDS)
                await holder.rollback()
            waited = await started
            assert waited["run"]["status"] == "RUNNING"
            finished = await wait_for_run(client, waited["run"]["id"])
    finally:
        await db.dispose()
    assert finished["status"] == "COMPLETED", finished


async def until_waiting_for_a_lock(db: Database, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with db.session() as session:
            waiting = await session.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            return
        assert loop.time() < deadline, "no startRun waited for the tenant's row"
        await asyncio.sleep(0.02)


@pytest.fixture(params=MODES)
async def quiet_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """A dispatcher that only runs when woken: its periodic poll must not land in what is counted."""
    async with running_stack(
        request.param, tmp_path, scripted_model, "caga_early_quiet", dispatch_poll_seconds=600
    ) as running:
        yield running


async def test_a_new_sessions_first_run_reads_nothing_beside_startruns_transaction(
    quiet_stack: Stack,
) -> None:
    """The run is begun in startRun's transaction, which reads what the run's CLI needs: no dispatcher
    round, no read of the tenant's hook events of its own, no read of the log's end by the session's
    actor, each a transaction more while the CLI starts on the same cores. In that transaction one
    statement claims the new session's lease, marks it RUNNING and takes its events' seqs."""
    db = quiet_stack.api.services.db
    seen: list[tuple[str, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        task = asyncio.current_task()
        seen.append((task.get_name() if task is not None else "", " ".join(statement.split())))

    async with quiet_stack.client() as client:
        # The tenant's first new session: its CLI waits for a read of the hook events.
        first = await start_ok(client, prompt="[scenario:echo] first")
        assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
        sa.event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            second = await start_ok(client, prompt="[scenario:echo] second")
            during_start = list(seen)
            assert second["run"]["status"] == "RUNNING"
            assert (await wait_for_run(client, second["run"]["id"]))["status"] == "COMPLETED"
        finally:
            sa.event.remove(db.engine.sync_engine, "before_cursor_execute", record)

    dispatcher = [s for task, s in seen if task == "run-dispatch"]
    hook_event_reads = [s for _, s in seen if "FROM webhooks" in s]
    log_end_reads = [s for _, s in seen if s.startswith("SELECT sessions.last_seq")]
    assert (dispatcher, len(hook_event_reads), log_end_reads) == ([], 1, [])
    session_updates = [s for _, s in during_start if s.startswith("UPDATE sessions")]
    assert len(session_updates) == 1, session_updates
