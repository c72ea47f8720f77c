"""A database outage mid-run: the run ends with a clear reason, the server keeps serving, nothing leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.runtime.leases import orphan_error
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import (
    EVENTS,
    RUN,
    SESSION,
    collect_until_run_ends,
    start_ok,
    until_no_runs_executing,
    wait_for_run,
    watch,
)
from tests.support.cluster import paced_scenario
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import ConnectionClosedWithCode, GraphQLWSClient
from tests.support.servers import (
    PostgresServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
)

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable on loopback")


@pytest.fixture
async def own_database_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    url = await create_postgres_database("caga_outage")
    running = await start_stack("postgres", tmp_path, scripted_model, url)
    try:
        yield running
    finally:
        await running.api.stop()
        await drop_postgres_database(url)


async def _until_mid_run(client: GraphQLHttpClient, session_id: str) -> None:
    """Until the agent has answered at least once (its first tool call is in the log)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        events = (await client.execute(EVENTS, {"sessionId": session_id, "first": 1000}))["events"]
        if any(e["payload"]["__typename"] == "UserMessage" for e in events):
            return
        assert loop.time() < deadline, "the run never got going"
        await asyncio.sleep(0.1)


async def _database_reachable(name: str, reachable: bool) -> None:
    """Cut off (or restore) one database of the shared server, as an outage would: no new connections,
    every open one dropped. The shared server itself keeps running."""
    admin = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


async def test_a_database_outage_mid_run_fails_the_run_clearly_and_the_next_turn_works(
    own_database_stack: Stack,
) -> None:
    stack = own_database_stack
    name = stack.settings.effective_database_url.rsplit("/", 1)[-1]
    async with stack.client() as client:
        started = await start_ok(client, prompt=paced_scenario(steps=40, delay_ms=100))
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        await _until_mid_run(client, session_id)

        await _database_reachable(name, False)
        try:
            async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
                # A key this replica has not verified yet: one it has is trusted for AUTH_CACHE_SECONDS
                # without the database.
                during = await http.post(
                    "/graphql",
                    json={"query": "{ sessions { edges { cursor } } }"},
                    headers={"Authorization": f"Bearer {stack.other_key}"},
                )
                ready = await http.get("/readyz")
            # The outage itself lasts a moment; the run goes on producing messages meanwhile.
            await asyncio.sleep(2.0)
        finally:
            await _database_reachable(name, True)

        ended = await wait_for_run(client, run_id, timeout=90)
        again = await start_ok(client, prompt="are we back?", sessionId=session_id)
        done = await wait_for_run(client, again["run"]["id"], timeout=60)
    assert during.status_code == 503
    assert ready.status_code == 503
    assert ended["status"] == "FAILED"
    # Which reason depends on the outage's length: a replica that could still have held its lease records
    # the failure itself once the database is back; one that had to give the lease up (it cannot know
    # whether another replica took over) stops its CLI, and the reaper records the lost lease.
    assert ended["error"] in {
        "the database was unavailable, so the run could not be recorded",
        orphan_error(stack.settings.replica_id),
    }, ended["error"]
    assert done["status"] == "COMPLETED"
    await until_no_runs_executing(stack.api.services.run_manager)


@pytest.fixture
async def private_postgres_stack(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[tuple[Stack, PostgresServer]]:
    """A stack on a PostgreSQL server of its own, which the test may stop and start."""
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        url = await server.create_database("caga_restart")
        running = await start_stack("postgres", tmp_path, scripted_model, url)
        try:
            yield running, server
        finally:
            await running.api.stop()
    finally:
        await asyncio.to_thread(server.close)


async def test_live_subscriptions_ride_out_a_database_restart(
    private_postgres_stack: tuple[Stack, PostgresServer],
) -> None:
    stack, server = private_postgres_stack
    async with (
        stack.client() as client,
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws,
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as late_ws,
    ):
        started = await start_ok(client, prompt=paced_scenario(steps=40, delay_ms=100))
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        sub = await watch(ws, session_id)
        head = [(await sub.next(timeout=30))["data"]["sessionEvents"] for _ in range(6)]

        await asyncio.to_thread(server.stop)
        # A watcher that subscribes during the outage waits for the database too.
        late = await watch(late_ws, session_id)
        # A socket that cannot be authenticated now is told to come back: 1013, which clients retry.
        # (A key the server verified moments ago is still trusted from its cache: a key it never saw.)
        with pytest.raises(ConnectionClosedWithCode) as refused:
            await GraphQLWSClient.open(stack.api.ws_url, token=stack.other_key)
        assert refused.value.code == 1013
        # The outage itself lasts a few seconds; the run goes on producing messages meanwhile.
        await asyncio.sleep(3.0)
        await asyncio.to_thread(server.start)
        loop = asyncio.get_running_loop()
        back = loop.time()

        tail = await collect_until_run_ends(sub, run_id, timeout=90)
        recovered_after = loop.time() - back
        late_events = await collect_until_run_ends(late, run_id, timeout=90)
        last_seq = int((await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"])
        run = (await client.execute(RUN, {"id": run_id}))["run"]
    seqs = [event["seq"] for event in head + tail]
    assert seqs == list(range(1, last_seq + 1)), seqs
    assert [event["seq"] for event in late_events] == list(range(1, last_seq + 1))
    # The watchers saw how the run ended, whatever the outage made of it.
    assert tail[-1]["payload"]["status"] == run["status"]
    assert run["status"] in {"FAILED", "COMPLETED"}
    print(f"run ended {run['status']}; the watcher saw it {recovered_after:.2f} s after PostgreSQL was back")
