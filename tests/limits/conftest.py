"""A stack with limits of the test's own, on each storage mode; it executes no runs (nothing spawns a CLI:
queued runs are all the limits need)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, running_stack

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
    async with running_stack(
        request.param, tmp_path, scripted_model, "caga_limits", execute_runs=False, **{**NO_LIMITS, **limits}
    ) as running:
        yield running
