"""Fixtures: the scripted model, and the real API server on each storage mode.

`stack` is parametrized: `embedded` (SQLite + in-process fan-out) and `postgres` (PostgreSQL + Redis on
loopback). Every test that takes it runs on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from api.auth import create_key
from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env
from api.settings import Settings
from persistence.migrations import upgrade_head
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.inprocess import InProcessApi
from tests.support.servers import (
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

# The in-process servers log through structlog's default configuration, whose console renderer draws
# tracebacks with rich (schemathesis installs it), locals and all: ~40 ms each on the event loop the
# servers share with the test, seconds in a database outage's burst of them (handshakes then timed out).
# Plain tracebacks, as the server's own logging has (api/logging.py).
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
async def scripted_model() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer() as server:
        yield server


@dataclass
class Stack:
    """A running API server with two tenants' keys."""

    mode: str
    api: InProcessApi
    key: str
    other_key: str
    data_dir: Path

    @property
    def settings(self) -> Settings:
        return self.api.settings

    def client(self, key: str | None = None) -> GraphQLHttpClient:
        return GraphQLHttpClient(self.api.base_url, self.key if key is None else key)


def stack_settings(mode: str, data_dir: Path, database_url: str | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "log_format": "console",
        "catchup_poll_seconds": 2.0,
        "dispatch_poll_seconds": 1.0,
        "idle_client_seconds": 30.0,
        "max_concurrent_runs": 4,
        # Short, so the 4408 test is quick, but not so short that a loaded machine's slow handshake trips it
        # (seen: 4408 instead of the 1013 a database-outage test expected).
        "connection_init_timeout_seconds": 4.0,
    }
    if mode == "postgres":
        values.update(database_url=database_url, redis_url=SHARED_REDIS, auto_migrate=False)
    unknown = set(overrides) - set(Settings.model_fields)
    assert not unknown, f"not settings: {unknown}"
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def start_stack(
    mode: str,
    data_dir: Path,
    model: ScriptedModelServer,
    database_url: str | None = None,
    *,
    agent_env: dict[str, str] | None = None,
    **overrides: object,
) -> Stack:
    """A running API server; `agent_env` adds to (or blanks) what the agent CLI gets."""
    settings = stack_settings(mode, data_dir, database_url, **overrides)
    if mode == "postgres":
        await upgrade_head(settings.effective_database_url)
    env = {**scripted_model_cli_env(model.base_url), "CLAUDE_CODE_MAX_RETRIES": "0", **(agent_env or {})}
    api = InProcessApi(settings, agent_env=env)
    await api.start()
    db = api.services.db
    key = await create_key(db, tenant_name="tenant-a", name="tests")
    other = await create_key(db, tenant_name="tenant-b", name="tests")
    return Stack(mode=mode, api=api, key=key.secret, other_key=other.secret, data_dir=data_dir)


MODES = ["embedded", "postgres"]


def _skip_unavailable(mode: str) -> None:
    if mode == "postgres" and not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")


@pytest.fixture(scope="session", params=MODES)
async def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scripted_model: ScriptedModelServer,
) -> AsyncIterator[Stack]:
    mode = request.param
    async with running_stack(mode, tmp_path_factory.mktemp(f"stack-{mode}"), scripted_model) as running:
        yield running


@asynccontextmanager
async def running_stack(
    mode: str,
    data_dir: Path,
    scripted_model: ScriptedModelServer,
    database: str = "caga_tests",
    **overrides: object,
) -> AsyncIterator[Stack]:
    """start_stack() in `mode` (skipped where PostgreSQL or Redis is missing), on a PostgreSQL database
    of its own named after `database`, which it drops when the server has stopped."""
    _skip_unavailable(mode)
    database_url = await create_postgres_database(database) if mode == "postgres" else None
    running = await start_stack(mode, data_dir, scripted_model, database_url, **overrides)
    try:
        yield running
    finally:
        await running.api.stop()
        if database_url:
            await drop_postgres_database(database_url)


@pytest.fixture
async def special_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """An embedded stack with settings of the test's own (`@pytest.mark.parametrize('special_stack', …)`)."""
    running = await start_stack("embedded", tmp_path, scripted_model, **request.param)
    try:
        yield running
    finally:
        await running.api.stop()
