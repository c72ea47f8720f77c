"""rewindFiles on a replica that does not run the session: real processes, PostgreSQL and Redis. A live
session's replica does the rewind; a session whose agent stopped is taken by a replica that can run it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from persistence.database import Database
from persistence.repositories.sessions import SessionRepository
from tests.documents import start_ok, wait_for_run, workspace_of
from tests.graphql.test_sessions import rewind, write_script
from tests.support.cluster import cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import postgres_available, redis_available

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _needs_services() -> None:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")


async def _lease_released(database_url: str, session_id: str, timeout: float = 60) -> None:
    db = Database(database_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            async with db.session() as session:
                row = await SessionRepository(session).get(session_id)
            assert row is not None
            if row.lease_owner is None:
                return
            assert loop.time() < deadline, f"the session's lease is still held by {row.lease_owner}"
            await asyncio.sleep(0.2)
    finally:
        await db.dispose()


async def test_a_rewind_from_a_replica_that_runs_no_agents(tmp_path: Path) -> None:
    # Replica 1 executes nothing: every rewind it is asked for is done by replica 0.
    env = {"DISPATCH_POLL_SECONDS": "1"}
    per_replica = [{"IDLE_CLIENT_SECONDS": "3"}, {"EXECUTE_RUNS": "false"}]
    async with cluster(tmp_path, env=env, per_replica=per_replica) as c:
        _runner, front = c.replicas
        async with GraphQLHttpClient(front.base_url, c.key) as client:
            options = {"permissionMode": "ACCEPT_EDITS"}
            first = await start_ok(client, prompt="[scenario:write-file]", **options)
            session_id = first["session"]["id"]
            assert (await wait_for_run(client, first["run"]["id"], timeout=120))["status"] == "COMPLETED"
            hello = workspace_of(tmp_path / "data", session_id) / "hello.txt"
            second = await start_ok(
                client, prompt=write_script(hello, "second\n"), sessionId=session_id, **options
            )
            assert (await wait_for_run(client, second["run"]["id"], timeout=120))["status"] == "COMPLETED"

            # Live on the runner: the command is routed there through the bus.
            preview = await rewind(client, session_id, second["run"]["checkpointId"], dryRun=True)
            assert preview["filesChanged"] == ["hello.txt"]
            assert hello.read_text() == "second\n"

            # Its agent stopped (idle): the runner takes the session again for the rewind.
            await _lease_released(c.database_url, session_id)
            done = await rewind(client, session_id, second["run"]["checkpointId"])
            assert done["__typename"] == "RewindFilesSuccess", done
            assert hello.read_text() == "hello\n"
