"""One two-replica cluster for the whole fault suite, on a PostgreSQL and a Redis of its own.

Both servers are private (their own ports, started and stopped here), so the scenarios can stop them;
the shared PostgreSQL and Redis are never touched. Replica 0 executes every run and replica 1 executes
none, so "the replica running the run" is known. Before each scenario, `healthy` brings back whatever the
previous one stopped, so one failure does not cascade.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.faults.harness import RECOVERIES, ResumingClient
from tests.support.cluster import Cluster, cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import ApiServer, PostgresServer, RedisServer, postgres_binary

RUN_TIMEOUT_SECONDS = 30

# The default leases notice an orphaned run within seconds; no retries in the CLI, so a model error is final.
CLUSTER_ENV = {
    "DISPATCH_POLL_SECONDS": "0.5",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    # What ends a run whose model stream stalls: the CLI's own stream-idle watchdog clamps its timeout to
    # at least 300 s. Every other scenario's run is far shorter.
    "RUN_TIMEOUT_SECONDS": str(RUN_TIMEOUT_SECONDS),
}


@dataclass
class FaultCluster:
    """The running cluster and its private servers."""

    cluster: Cluster
    postgres: PostgresServer

    @property
    def runner(self) -> ApiServer:
        """The replica that executes runs."""
        return self.cluster.replicas[0]

    @property
    def other(self) -> ApiServer:
        """The replica that only serves (executes no runs)."""
        return self.cluster.replicas[1]

    @property
    def redis(self) -> RedisServer:
        assert self.cluster.redis is not None
        return self.cluster.redis

    def client(self, replica: ApiServer | None = None) -> GraphQLHttpClient:
        return GraphQLHttpClient((replica or self.other).base_url, self.cluster.key)

    def watcher(self, session_id: str, *, first: ApiServer) -> ResumingClient:
        """A resuming client that starts on `first` and moves to the other replica when cut off."""
        order = [first, *(r for r in self.cluster.replicas if r is not first)]
        return ResumingClient([r.ws_url for r in order], self.cluster.key, session_id)


def _servers_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    for binary in ("initdb", "postgres", "pg_isready"):
        if postgres_binary(binary) is None:
            return f"{binary} is not installed"
    return None


# One cluster for the package: a replica start costs seconds, more on a loaded machine.
@pytest.fixture(scope="package")
async def faults(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultCluster]:
    missing = _servers_missing()
    if missing:
        pytest.skip(missing)
    postgres = PostgresServer()
    await asyncio.to_thread(postgres.start)
    try:
        url = await postgres.create_database("caga_faults")
        async with cluster(
            tmp_path_factory.mktemp("faults"),
            private_redis=True,
            database_url=url,
            env=CLUSTER_ENV,
            per_replica=[{}, {"EXECUTE_RUNS": "false"}],
        ) as running:
            yield FaultCluster(running, postgres)
    finally:
        await asyncio.to_thread(postgres.close)


@pytest.fixture
async def healthy(faults: FaultCluster) -> FaultCluster:
    """The cluster with every server up and every replica ready, whatever the last scenario did."""
    if not faults.postgres.running:
        await asyncio.to_thread(faults.postgres.start)
    if not faults.redis.running:
        await asyncio.to_thread(faults.redis.start)
    for replica in faults.cluster.replicas:
        if not replica.running:
            await replica.stop()
            await replica.start(timeout=120)
    await faults.cluster.wait_ready(timeout=60)
    return faults


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RECOVERIES:
        return
    terminalreporter.section("fault suite: time to recover")
    for r in RECOVERIES:
        terminalreporter.write_line(
            f"{r.scenario:<24} {r.seconds:6.2f} s ({r.measured}); run {r.outcome}, {r.events} events,"
            f" {r.reconnects} reconnect(s), longest silence {r.longest_silence:.2f} s"
        )
