"""Fixtures: one scripted model per session, and real Claude SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from api.scripted_model.server import ScriptedModelServer

from .agents import Agent, connected_agent


@pytest_asyncio.fixture(scope="session")
async def scripted_model() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer() as server:
        yield server


@pytest_asyncio.fixture(scope="session")
async def agent(
    scripted_model: ScriptedModelServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Agent]:
    """One client shared by most tests: a CLI start costs ~0.3-1 s, a turn ~50 ms."""
    async with connected_agent(scripted_model.base_url, tmp_path_factory.mktemp("agent")) as connected:
        yield connected


@pytest_asyncio.fixture(scope="session")
async def partial_agent(
    scripted_model: ScriptedModelServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Agent]:
    """A client with ``include_partial_messages=True``, for StreamEvent and pacing tests."""
    root = tmp_path_factory.mktemp("partial")
    async with connected_agent(scripted_model.base_url, root, include_partial_messages=True) as connected:
        yield connected
