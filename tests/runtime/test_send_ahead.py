"""A follow-up's prompt goes to its live CLI while startRun's transaction commits (SessionActor.send_ahead;
docs/architecture.md, decision 15). Its model calls wait at the gateway and nothing of its turn is logged
until the run is committed; a begin that fails stops that CLI and cuts the transcript back, so the session
is as it was and the run never shows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.runtime.session_actor import SessionActor
from api.scripted_model.server import ScriptedModelServer
from persistence.database import Database
from persistence.repositories.tenants import TenantRepository
from tests.conftest import MODES, Stack, running_stack
from tests.documents import START_RUN, start_ok, start_run, wait_for_run
from tests.runtime.test_early_start import until_waiting_for_a_lock
from tests.runtime.test_warm_pool import tenant_of
from tests.support.graphql_http import GraphQLHttpClient

EVENTS = """
query Events($sessionId: ID!) {
  events(sessionId: $sessionId, first: 1000) { seq runId }
}"""


@pytest.fixture(params=MODES)
async def bounded_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """One active run per tenant: a follow-up while another session of the tenant runs is refused inside
    startRun's transaction, after its prompt went to the CLI."""
    async with running_stack(
        request.param,
        tmp_path,
        scripted_model,
        "caga_ahead",
        max_active_runs_per_tenant=1,
        rate_limit_requests_per_second=0,
    ) as running:
        yield running


def transcript_of(data_dir: Path, session_id: str) -> Path:
    [path] = (data_dir / "tenants").glob(f"*/sessions/{session_id}/agent/projects/*/{session_id}.jsonl")
    return path


def actor_of(stack: Stack, session_id: str) -> SessionActor:
    return stack.api.services.run_manager._actors[session_id]


async def logged_runs(client: GraphQLHttpClient, session_id: str) -> set[str | None]:
    data = await client.execute(EVENTS, {"sessionId": session_id})
    return {event["runId"] for event in data["events"]}


async def session_with_an_idle_cli(stack: Stack, client: GraphQLHttpClient) -> tuple[str, bytes]:
    """A session whose first turn is over, its CLI live and idle here; and its transcript then."""
    first = await start_ok(client, prompt="[scenario:echo] first turn")
    session_id = first["session"]["id"]
    assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
    assert actor_of(stack, session_id).has_live_cli
    return session_id, transcript_of(stack.data_dir, session_id).read_bytes()


async def test_a_follow_up_refused_in_its_transaction_leaves_the_session_as_it_was(
    bounded_stack: Stack,
) -> None:
    stack = bounded_stack
    async with stack.client() as client:
        session_id, before = await session_with_an_idle_cli(stack, client)
        runs_before = await logged_runs(client, session_id)
        slow = await start_ok(client, prompt="[scenario:slow]")

        refused = await start_run(client, prompt="[scenario:echo] REFUSED PROMPT", sessionId=session_id)
        assert refused["__typename"] == "RateLimitedError", refused
        # The prompt had gone to the CLI (without it, a refusal leaves the CLI idle and alive): that CLI
        # is stopped, and the transcript is byte for byte what it was.
        assert not actor_of(stack, session_id).has_live_cli
        assert transcript_of(stack.data_dir, session_id).read_bytes() == before
        assert await logged_runs(client, session_id) == runs_before

        assert (await wait_for_run(client, slow["run"]["id"]))["status"] == "COMPLETED"
        # The session resumes where it was: its next turn knows nothing of the refused prompt.
        later = await start_ok(client, prompt="[scenario:echo] after the refusal", sessionId=session_id)
        assert (await wait_for_run(client, later["run"]["id"]))["status"] == "COMPLETED"
        after = transcript_of(stack.data_dir, session_id).read_bytes()
    assert after.startswith(before)
    assert b"after the refusal" in after
    assert b"REFUSED PROMPT" not in after


async def test_a_follow_up_that_begins_runs_on_the_same_cli(bounded_stack: Stack) -> None:
    stack = bounded_stack
    async with stack.client() as client:
        session_id, before = await session_with_an_idle_cli(stack, client)
        pump = actor_of(stack, session_id)._pump
        for n in range(2):
            follow = await start_ok(client, prompt=f"[scenario:echo] follow-up {n}", sessionId=session_id)
            assert follow["run"]["status"] == "RUNNING"
            # The session as the lease claim in startRun's transaction left it (not read again after).
            assert follow["session"]["status"] == "RUNNING"
            assert (await wait_for_run(client, follow["run"]["id"]))["status"] == "COMPLETED"
            assert actor_of(stack, session_id)._pump is pump
        events = (await client.execute(EVENTS, {"sessionId": session_id}))["events"]
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1))
    # Each run's events are together: its QUEUED and RUNNING from the transaction, then its turn.
    run_ids = [event["runId"] for event in events if event["runId"] is not None]
    assert run_ids == sorted(run_ids, key=run_ids.index)
    changes = [i for i in range(1, len(run_ids)) if run_ids[i] != run_ids[i - 1]]
    assert len(changes) == 2
    assert transcript_of(stack.data_dir, session_id).read_bytes().startswith(before)


@pytest.fixture
async def pg_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    async with running_stack(
        "postgres", tmp_path, scripted_model, "caga_ahead_pg", rate_limit_requests_per_second=0
    ) as running:
        yield running


async def test_a_begin_whose_database_connection_dies_is_undone(pg_stack: Stack) -> None:
    """The transaction's connection is killed while it waits for the tenant's row, the CLI's model call
    waiting at the gateway meanwhile: the run never exists, and the session is as before."""
    stack = pg_stack
    db = Database(stack.settings.effective_database_url)
    try:
        async with stack.client() as client:
            session_id, before = await session_with_an_idle_cli(stack, client)
            runs_before = await logged_runs(client, session_id)
            tenant_id = await tenant_of(stack, session_id)
            async with db.session() as holder:
                await TenantRepository(holder).lock(tenant_id)
                doomed_input = {"prompt": "[scenario:echo] DOOMED PROMPT", "sessionId": session_id}
                started = asyncio.create_task(client.execute_raw(START_RUN, {"input": doomed_input}))
                await until_waiting_for_a_lock(db)
                async with db.engine.connect() as killer:
                    await killer.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                answer = (await started).json()
                await holder.rollback()
            assert [error["message"] for error in answer["errors"]] == ["Unexpected error."], answer
            assert not actor_of(stack, session_id).has_live_cli
            assert transcript_of(stack.data_dir, session_id).read_bytes() == before
            assert await logged_runs(client, session_id) == runs_before
            async with db.session() as session:
                doomed = await session.execute(
                    sa.text("SELECT count(*) FROM runs WHERE prompt LIKE '%DOOMED%'")
                )
                assert doomed.scalar_one() == 0

            later = await start_ok(client, prompt="[scenario:echo] after the failure", sessionId=session_id)
            assert (await wait_for_run(client, later["run"]["id"]))["status"] == "COMPLETED"
            after = transcript_of(stack.data_dir, session_id).read_bytes()
    finally:
        await db.dispose()
    assert after.startswith(before)
    assert b"DOOMED PROMPT" not in after
