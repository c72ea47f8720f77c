"""Lease faults with the real server and the real CLI: a holder whose lease moved on is refused and
stops; a holder that cannot renew stops its CLI before its lease can lapse, and writes nothing; a run
whose replica was SIGKILLed reads FAILED soon after, and the session's next turn runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from api.runtime.leases import orphan_error
from api.scripted_model.server import ScriptedModelServer
from persistence.database import Database
from persistence.models import AgentSession
from persistence.repositories.runs import RunRepository
from tests.conftest import Stack, start_stack
from tests.documents import RUN, SESSION, start_ok, wait_for_run, watch
from tests.graphql.test_failures import cli_pids
from tests.support.cluster import cluster, paced_scenario
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient, Subscription
from tests.support.leases import take_over
from tests.support.servers import (
    ApiServer,
    PostgresServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

pytestmark = pytest.mark.timeout(240)

EVENTS_AFTER = """query($sessionId: ID!, $afterSeq: Int) {
  events(sessionId: $sessionId, afterSeq: $afterSeq, first: 1000) {
    seq payload { __typename ... on RunStatusChanged { status } } } }"""


def _needs_services() -> None:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")


@pytest.fixture(params=["embedded", "postgres"])
async def fenced_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """A stack whose lease renewal is far off (40 s): within a test, only a refused write can tell the
    holder that its lease moved on."""
    database_url = None
    if request.param == "postgres":
        _needs_services()
        database_url = await create_postgres_database("caga_fenced")
    stack = await start_stack(
        request.param, tmp_path, scripted_model, database_url, lease_seconds=100.0, lease_renew_seconds=40.0
    )
    try:
        yield stack
    finally:
        await stack.api.stop()
        if database_url:
            await drop_postgres_database(database_url)


async def until_agent_speaks(sub: Subscription) -> None:
    """Until the CLI is up and the run has written a few events of its own."""
    seen = 0
    while seen < 3:
        event = (await sub.next(timeout=60))["data"]["sessionEvents"]
        if event["payload"]["__typename"] in {"SystemMessage", "AssistantMessage", "UserMessage"}:
            seen += 1


async def until_no_cli(session_id: str, timeout: float = 20) -> float:
    """Poll until the session has no CLI process; returns the wall-clock time it was first seen gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while cli_pids(session_id):
        assert loop.time() < deadline, f"the session's CLI still runs after {timeout}s"
        await asyncio.sleep(0.05)
    return time.time()


async def test_a_holder_whose_lease_moved_on_is_refused_and_stops_its_cli(fenced_stack: Stack) -> None:
    stack = fenced_stack
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt=paced_scenario(steps=100, delay_ms=200))
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        await until_agent_speaks(await watch(ws, session_id))
        assert cli_pids(session_id)
        # Another replica takes the session over (as after this one's lease lapsed).
        await take_over(stack.api.services.db, session_id)
        taken_at = int((await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"])
        failed = await wait_for_run(client, run_id, timeout=60)
        await until_no_cli(session_id)
        after = (await client.execute(EVENTS_AFTER, {"sessionId": session_id, "afterSeq": taken_at}))[
            "events"
        ]
    assert failed["status"] == "FAILED"
    assert failed["error"] == orphan_error(stack.settings.replica_id)
    # The old holder's next append was refused: nothing of the run after the take-over but the reaper's
    # FAILED (the paced run writes every 200 ms, for 20 s more).
    assert [e["payload"] for e in after] == [{"__typename": "RunStatusChanged", "status": "FAILED"}]


async def _lease_expiry(url: str, session_id: str) -> datetime:
    db = Database(url)
    try:
        async with db.session() as session:
            row = await session.get(AgentSession, session_id)
            assert row is not None
            assert row.lease_expires_at is not None
            return row.lease_expires_at
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_replica_that_cannot_renew_stops_its_cli_before_the_lease_lapses(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    _needs_services()
    pg = PostgresServer()
    await asyncio.to_thread(pg.start)
    stack: Stack | None = None
    try:
        url = await pg.create_database("lease_renewal")
        stack = await start_stack("postgres", tmp_path, scripted_model, url)
        assert (stack.settings.lease_seconds, stack.settings.lease_renew_seconds) == (6.0, 2.0)
        async with stack.client() as client:
            async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
                started = await start_ok(client, prompt=paced_scenario(steps=150, delay_ms=200))
                session_id, run_id = started["session"]["id"], started["run"]["id"]
                await until_agent_speaks(await watch(ws, session_id))
            # The lease as last renewed before the outage (a renewal racing the stop only extends it).
            expires = await _lease_expiry(url, session_id)
            await asyncio.to_thread(pg.stop)
            stopped = time.time()
            gone = await until_no_cli(session_id)
            # PostgreSQL runs on this machine: its clock is this clock.
            assert gone < expires.timestamp(), (
                f"the CLI ran {gone - expires.timestamp():.2f}s past the lease's expiry"
            )
            print(f"\nrenewal failure: CLI stopped {gone - stopped:.2f}s after the database went away, "
                  f"{expires.timestamp() - gone:.2f}s before the lease could lapse")  # fmt: skip
            # Back only once the lease has lapsed: the holder, having given the session up, must not
            # write its outcome even though it could now (the database is the truth, the lease its).
            await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.5)
            await asyncio.to_thread(pg.start)
            failed = await wait_for_run(client, run_id, timeout=60)
            # The cut-off holder wrote nothing (not even "the database was unavailable"): the reaper did.
            assert failed["status"] == "FAILED"
            assert failed["error"] == orphan_error(stack.settings.replica_id)
            again = await start_ok(client, prompt="still there?", sessionId=session_id)
            done = await wait_for_run(client, again["run"]["id"], timeout=60)
            assert done["status"] == "COMPLETED"
            # Its CLI idles now, writing nothing: only the lease keeper can notice the next outage.
            assert cli_pids(session_id)
            expires = await _lease_expiry(url, session_id)
            await asyncio.to_thread(pg.stop)
            stopped = time.time()
            gone = await until_no_cli(session_id)
            assert gone < expires.timestamp(), (
                f"the idle CLI ran {gone - expires.timestamp():.2f}s past the lease's expiry"
            )
            print(f"renewal failure, idle CLI: stopped {gone - stopped:.2f}s after the database went away, "
                  f"{expires.timestamp() - gone:.2f}s before the lease could lapse")  # fmt: skip
    finally:
        if stack is not None:
            await stack.api.stop()
        await asyncio.to_thread(pg.close)


async def test_a_sigkilled_replicas_run_reads_failed_within_seconds_and_the_survivor_runs_the_next_turn(
    tmp_path: Path,
) -> None:
    _needs_services()
    # Both replicas run agents; the first run lands on either, so the one running it is the one killed.
    async with cluster(tmp_path) as c:
        await c.wait_ready()
        first, second = c.replicas
        async with (
            GraphQLHttpClient(second.base_url, c.key) as client,
            GraphQLWSClient.connect(second.ws_url, token=c.key) as ws,
        ):
            # The run goes where the dispatcher takes it: find which replica's CLI runs it.
            started = await start_ok(client, prompt=paced_scenario(steps=100, delay_ms=100))
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            await until_agent_speaks(await watch(ws, session_id))
            runner = first if await _runs_on(c.database_url, run_id, first) else second
            survivor = second if runner is first else first
        async with (
            GraphQLHttpClient(survivor.base_url, c.key) as client,
            GraphQLWSClient.connect(survivor.ws_url, token=c.key),
        ):
            loop = asyncio.get_running_loop()
            runner.kill()
            killed = loop.time()
            failed = await wait_for_run(client, run_id, timeout=60)
            took = loop.time() - killed
            print(f"\nSIGKILL: the run read FAILED {took:.2f}s after its replica died")
            assert failed["status"] == "FAILED"
            assert "stopped responding" in failed["error"]
            again = await start_ok(client, prompt="still me?", sessionId=session_id)
            done = await wait_for_run(client, again["run"]["id"], timeout=60)
            run = (await client.execute(RUN, {"id": again["run"]["id"]}))["run"]
    assert done["status"] == "COMPLETED"
    assert run["result"]["result"] == "You said: still me?"
    # 6 s lease, renewed every 2 s, reaped within 1 s: about 5-7 s; the bound leaves room for a loaded box.
    assert took < 15, took


async def _runs_on(database_url: str, run_id: str, replica: ApiServer) -> bool:
    """Whether `replica` took the run (a replica id names its process: host-pid-random)."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            run = await RunRepository(session).get(run_id)
    finally:
        await db.dispose()
    assert run is not None
    assert run.replica is not None
    return f"-{replica.pid}-" in run.replica


async def test_an_embedded_server_killed_mid_run_reports_the_run_failed_once_restarted(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, embedded=True) as c:
        (server,) = c.replicas
        async with (
            GraphQLHttpClient(server.base_url, c.key) as client,
            GraphQLWSClient.connect(server.ws_url, token=c.key) as ws,
        ):
            started = await start_ok(client, prompt=paced_scenario(steps=100, delay_ms=100))
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            await until_agent_speaks(await watch(ws, session_id))
        loop = asyncio.get_running_loop()
        server.kill()
        killed = loop.time()
        await server.start()
        restarted = loop.time() - killed
        async with GraphQLHttpClient(server.base_url, c.key) as client:
            failed = await wait_for_run(client, run_id, timeout=60)
            took = loop.time() - killed
            print(f"\nembedded SIGKILL: restarted in {restarted:.2f}s, the run read FAILED {took:.2f}s after")
            assert failed["status"] == "FAILED"
            assert "stopped responding" in failed["error"]
            again = await start_ok(client, prompt="still me?", sessionId=session_id)
            done = await wait_for_run(client, again["run"]["id"], timeout=60)
    assert done["status"] == "COMPLETED"
    assert done["result"]["result"] == "You said: still me?"
    # The lease (6 s, in the database's clock) lapses, then the restarted server's reaper settles it.
    assert took < restarted + 15, (took, restarted)
