"""Several real API processes on one database and one fan-out, as production runs them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.auth import create_key
from api.scripted_model.server import scripted_model_cli_env
from persistence.database import Database
from persistence.migrations import upgrade_head
from tests.support.servers import (
    ApiServer,
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
)

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Cluster:
    """Replicas of the API; `key` is an API key of one tenant, valid on all of them."""

    replicas: list[ApiServer]
    key: str
    database_url: str
    redis: RedisServer | None

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until every replica's /readyz says its database and fan-out are reachable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            for replica in self.replicas:
                while True:
                    try:
                        if (await http.get(f"{replica.base_url}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if loop.time() > deadline:
                        raise AssertionError(f"replica {replica.base_url} not ready after {timeout}s")
                    await asyncio.sleep(0.1)

    async def metric(self, replica: ApiServer, name: str) -> float:
        """The sum of a Prometheus metric's samples on one replica."""
        async with httpx.AsyncClient(trust_env=False) as http:
            text = (await http.get(f"{replica.base_url}/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )


@asynccontextmanager
async def cluster(
    work_dir: Path,
    *,
    replicas: int = 2,
    embedded: bool = False,
    private_redis: bool = False,
    env: Mapping[str, str] | None = None,
    per_replica: Sequence[Mapping[str, str]] = (),
    database_url: str | None = None,
    command: Sequence[str] | None = None,
    model_url: str | None = None,
) -> AsyncIterator[Cluster]:
    """Start `replicas` API processes with the built-in scripted model, or, given `model_url`, with that
    model API as their upstream (a scripted model the caller runs: a benchmark's bare SDK uses the same).

    embedded: one process on SQLite + in-process fan-out. Otherwise a fresh PostgreSQL database (or
    `database_url`, an empty database the caller owns, e.g. on a private server) and the shared Redis
    (or a private redis-server the test may stop and start). `command` replaces the replicas'
    ``python -m api.cli`` prefix (a benchmark runs another revision's server that way).
    """
    data_dir = work_dir / "data"
    redis = RedisServer(work_dir / "redis") if private_redis and not embedded else None
    owns_database = database_url is None
    if embedded:
        database_url = f"sqlite+aiosqlite:///{data_dir / 'claude-agent-api.sqlite3'}"
    elif database_url is None:
        database_url = await create_postgres_database("caga_cluster")
    servers: list[ApiServer] = []
    try:
        base_env = {"DATA_DIR": str(data_dir), "CATCHUP_POLL_SECONDS": "2", **(env or {})}
        if model_url is not None:
            base_env |= scripted_model_cli_env(model_url)
        if not embedded:
            await upgrade_head(database_url)
            if redis is not None:
                redis.start()
            base_env |= {"DATABASE_URL": database_url, "REDIS_URL": redis.url if redis else SHARED_REDIS}
        count = 1 if embedded else replicas
        for index in range(count):
            extra = per_replica[index] if index < len(per_replica) else {}
            servers.append(
                ApiServer(
                    work_dir / f"replica-{index}",
                    env={**base_env, **extra},
                    extra_args=["--scripted-model"] if model_url is None else [],
                    command=command,
                )
            )
        await asyncio.gather(*(server.start() for server in servers))
        db = Database(database_url)
        try:
            key = await create_key(db, tenant_name="cluster-tenant", name="tests")
        finally:
            await db.dispose()
        yield Cluster(replicas=servers, key=key.secret, database_url=database_url, redis=redis)
    finally:
        await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)
        if redis is not None:
            redis.stop()
        if not embedded and owns_database:
            await drop_postgres_database(database_url)


def paced_scenario(steps: int, delay_ms: int) -> str:
    """A prompt whose run produces 3 durable events per step, `delay_ms` apart: text, a tool call
    (Glob, which needs no permission) and its result; then a final text."""
    script: list[dict[str, Any]] = [
        {
            "delay_ms": delay_ms,
            "content": [
                {"type": "text", "text": f"step {i}"},
                {"type": "tool_use", "name": "Glob", "input": {"pattern": f"*.{i}"}},
            ],
        }
        for i in range(steps)
    ]
    script.append({"content": [{"type": "text", "text": "all steps done"}]})
    return "[scenario]" + json.dumps({"steps": script})
