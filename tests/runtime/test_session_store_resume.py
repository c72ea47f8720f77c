"""SESSION_STORE=database on PostgreSQL + Redis: a session resumes on a replica that has none of its
files, its fork too, and rewindFiles is refused with a typed error. The real CLI in its sandbox and
the scripted model, whose `recall` scenario answers with the prompts of the history it was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import ERROR_FIELDS, start_ok, wait_for_run
from tests.graphql.test_sessions import FORK
from tests.support.servers import (
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

pytestmark = pytest.mark.timeout(300)

REWIND = (
    """
mutation Rewind($input: RewindFilesInput!) {
  rewindFiles(input: $input) {
    __typename
    ... on RewindFilesSuccess { filesChanged applied }
    ... on CheckpointUnavailableError { checkpointId reason }
"""
    + ERROR_FIELDS.replace("  ... on ValidationError { field }\n", "").replace(
        "  ... on RateLimitedError { retryAfterSeconds }\n", ""
    )
    + "  }\n}\n"
)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    if not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")
    url = await create_postgres_database("caga_store_resume")
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@asynccontextmanager
async def replica(
    data_dir: Path, model: ScriptedModelServer, database_url: str, session_store: str = "database"
) -> AsyncIterator[Stack]:
    """One replica with a DATA_DIR of its own: nothing on disk is shared with the others."""
    stack = await start_stack("postgres", data_dir, model, database_url, session_store=session_store)
    try:
        yield stack
    finally:
        await stack.api.stop()


async def _answer(stack: Stack, **fields: Any) -> tuple[dict[str, Any], str]:
    async with stack.client() as client:
        started = await start_ok(client, **fields)
        run = await wait_for_run(client, started["run"]["id"], timeout=180)
    assert run["status"] == "COMPLETED", run
    return started, run["result"]["result"]


def _transcripts(data_dir: Path, session_id: str) -> list[Path]:
    return list((data_dir / "tenants").glob(f"*/sessions/*/agent/projects/*/{session_id}.jsonl"))


async def test_a_session_resumes_on_a_replica_without_its_files(
    tmp_path: Path, scripted_model: ScriptedModelServer, database_url: str
) -> None:
    first_dir, second_dir, third_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    async with replica(first_dir, scripted_model, database_url) as first:
        started, answer = await _answer(first, prompt="the first prompt [scenario:recall]")
        session_id = started["session"]["id"]
        assert answer == "Earlier prompts (0): (none)"
    assert _transcripts(first_dir, session_id)

    # Replica one is gone, and replica two has never seen the session: only the database has it.
    async with replica(second_dir, scripted_model, database_url) as second:
        assert _transcripts(second_dir, session_id) == []
        _, answer = await _answer(second, prompt="the second prompt [scenario:recall]", sessionId=session_id)
        assert answer == "Earlier prompts (1): the first prompt [scenario:recall]"

        async with second.client() as client:
            refused = (
                await client.execute(
                    REWIND,
                    {"input": {"sessionId": session_id, "checkpointId": started["run"]["checkpointId"]}},
                )
            )["rewindFiles"]
            assert refused["__typename"] == "PolicyViolationError", refused
            assert refused["rule"] == "session_store"
            assert "SESSION_STORE=files" in refused["message"]
            forked = (await client.execute(FORK, {"input": {"sessionId": session_id}}))["forkSession"]
            assert forked["__typename"] == "ForkSessionSuccess", forked
            fork_id = forked["session"]["id"]

    # A third replica takes the fork's first turn from the copy its parent's conversation left in the
    # database, and the parent's next turn, each with its whole history.
    async with replica(third_dir, scripted_model, database_url) as third:
        _, answer = await _answer(third, prompt="in the fork [scenario:recall]", sessionId=fork_id)
        assert answer == (
            "Earlier prompts (2): the first prompt [scenario:recall] | the second prompt [scenario:recall]"
        )
        _, answer = await _answer(third, prompt="the third prompt [scenario:recall]", sessionId=session_id)
        assert answer == (
            "Earlier prompts (2): the first prompt [scenario:recall] | the second prompt [scenario:recall]"
        )


async def test_without_the_store_a_replica_without_the_files_starts_the_conversation_afresh(
    tmp_path: Path, scripted_model: ScriptedModelServer, database_url: str
) -> None:
    # The control for the test above: what the recall scenario answers when nothing carries the history.
    async with replica(tmp_path / "a", scripted_model, database_url, "files") as first:
        started, _ = await _answer(first, prompt="the first prompt [scenario:recall]")
    async with replica(tmp_path / "b", scripted_model, database_url, "files") as second:
        _, answer = await _answer(
            second, prompt="the second prompt [scenario:recall]", sessionId=started["session"]["id"]
        )
    assert answer == "Earlier prompts (0): (none)"
