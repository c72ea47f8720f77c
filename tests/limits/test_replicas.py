"""Two replicas on one PostgreSQL and one Redis count runs against one limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.documents import start_ok, start_run
from tests.support.cluster import cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import postgres_available, redis_available


async def test_two_replicas_share_a_key_s_limit_through_redis(tmp_path: Path) -> None:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")
    env = {
        "EXECUTE_RUNS": "false",
        "RATE_LIMIT_RUNS_PER_MINUTE_PER_KEY": "2",
        "RATE_LIMIT_RUNS_PER_MINUTE_PER_TENANT": "0",
    }
    async with cluster(tmp_path, replicas=2, env=env) as c:
        await c.wait_ready()
        a, b = c.replicas
        async with GraphQLHttpClient(a.base_url, c.key) as on_a, GraphQLHttpClient(b.base_url, c.key) as on_b:
            await start_ok(on_a, prompt="one")
            await start_ok(on_b, prompt="two")
            refused_b = await start_run(on_b, prompt="three")
            refused_a = await start_run(on_a, prompt="three")
    assert refused_b["__typename"] == "RateLimitedError", refused_b
    assert refused_a["__typename"] == "RateLimitedError", refused_a
