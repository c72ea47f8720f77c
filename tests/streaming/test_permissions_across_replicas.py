"""A permission request decided on a replica that does not run the session: real processes, PostgreSQL
and Redis. The decision is written first and routed to the owner; a lost routing message only delays."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.events.bus import EventBus
from api.events.log import EventLog
from api.runtime.permissions import settle_in
from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.permissions import Decision
from tests.documents import INTERRUPT_RUN, collect_until_run_ends, run_status, start_ok, watch, workspace_of
from tests.graphql.test_permissions import CONTEXT_USAGE, decide, decided, requested, tool_results
from tests.support.cluster import cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient
from tests.support.servers import postgres_available, redis_available

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _needs_services() -> None:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")


async def test_decisions_from_the_other_replica_reach_the_one_running_the_session(tmp_path: Path) -> None:
    # Replica 1 executes no runs: every run is on replica 0, every mutation and watcher on replica 1.
    env = {"DISPATCH_POLL_SECONDS": "1"}
    async with cluster(tmp_path, env=env, per_replica=[{}, {"EXECUTE_RUNS": "false"}]) as c:
        runner, front = c.replicas
        data = tmp_path / "data"
        async with (
            GraphQLHttpClient(front.base_url, c.key) as client,
            GraphQLWSClient.connect(front.ws_url, token=c.key) as ws,
        ):
            # Allowed from the front replica: routed to the runner through the bus.
            allowed = await start_ok(client, prompt="[scenario:write-file]")
            sub = await watch(ws, allowed["session"]["id"])
            _, request = await requested(sub)
            answer = await decide(client, request["id"], "ALLOW")
            allowed_events = await collect_until_run_ends(sub, allowed["run"]["id"])
            # A read of the live agent is answered by the replica running it, through the bus.
            usage = (await client.execute(CONTEXT_USAGE, {"sessionId": allowed["session"]["id"]}))[
                "contextUsage"
            ]

            # Decided in the database alone, as if the routing message were lost: the runner's poll finds it.
            polled = await start_ok(client, prompt="[scenario:write-file]")
            sub = await watch(ws, polled["session"]["id"])
            _, silent = await requested(sub)
            db = Database(c.database_url)
            try:
                async with db.session() as session:
                    decision = Decision(status="DENIED", decided_by="test", at=utcnow(), message="by poll")
                    # An EventLog without a bus: the decision is committed and never announced.
                    _, records = await settle_in(
                        session, EventLog(db, EventBus(None)), silent["id"], decision
                    )
                    assert records
                    await session.commit()
            finally:
                await db.dispose()
            polled_events = await collect_until_run_ends(sub, polled["run"]["id"])

            # Interrupted from the front replica while a request waits: CANCELLED, and the payload says so.
            interrupted = await start_ok(client, prompt="[scenario:write-file]")
            sub = await watch(ws, interrupted["session"]["id"])
            _, waiting = await requested(sub)
            stopped = (await client.execute(INTERRUPT_RUN, {"runId": interrupted["run"]["id"]}))[
                "interruptRun"
            ]
            interrupted_events = await collect_until_run_ends(sub, interrupted["run"]["id"])

        assert answer["__typename"] == "DecidePermissionSuccess"
        assert (workspace_of(data, allowed["session"]["id"]) / "hello.txt").read_text() == "hello\n"
        assert run_status(allowed_events, allowed["run"]["id"])[-1] == "COMPLETED"
        assert allowed["run"]["id"] in runner.log_text()
        assert allowed["run"]["id"] not in front.log_text()
        assert usage is not None
        assert usage["maxTokens"] > 0

        assert not (workspace_of(data, polled["session"]["id"]) / "hello.txt").exists()
        assert "by poll" in str(tool_results(polled_events)[0]["content"])

        assert stopped["outcome"] == "INTERRUPTED"
        assert stopped["run"]["status"] == "INTERRUPTED"
        assert [d["status"] for d in decided(interrupted_events)] == ["CANCELLED"]
        assert waiting["status"] == "PENDING"
        assert not (workspace_of(data, interrupted["session"]["id"]) / "hello.txt").exists()
