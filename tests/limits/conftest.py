"""A stack with limits of the test's own, on each storage mode; it executes no runs (nothing spawns a CLI:
queued runs are all the limits need)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, _skip_unavailable, start_stack
from tests.support.servers import create_postgres_database, drop_postgres_database

NO_LIMITS = {
    "rate_limit_requests_per_second": 0,
    "rate_limit_runs_per_minute_per_key": 0,
    "rate_limit_runs_per_minute_per_tenant": 0,
    "max_active_runs_per_tenant": 0,
    "max_queued_runs_per_tenant": 0,
}


@pytest.fixture
def limits() -> dict[str, object]:
    """The limits of a test: `@pytest.mark.parametrize("limits", [{...}])` overrides this."""
    return {}


@pytest.fixture(params=MODES)
async def limited_stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    scripted_model: ScriptedModelServer,
    limits: dict[str, object],
) -> AsyncIterator[Stack]:
    """Every limit off but the test's `limits`."""
    mode = request.param
    _skip_unavailable(mode)
    database_url = await create_postgres_database("caga_limits") if mode == "postgres" else None
    running = await start_stack(
        mode, tmp_path, scripted_model, database_url, execute_runs=False, **{**NO_LIMITS, **limits}
    )
    try:
        yield running
    finally:
        await running.api.stop()
        if database_url:
            await drop_postgres_database(database_url)
