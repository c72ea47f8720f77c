"""A list with nested fields costs a constant number of SQL statements, whatever its length
(loaders per operation; Saleor's count_queries)."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from api.auth import Principal, authenticate, create_key
from graphql_schema.context import Context
from graphql_schema.schema import build_schema
from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository
from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run, watch
from tests.support.graphql_ws import GraphQLWSClient

SESSIONS = """
query List($first: Int) {
  sessions(first: $first) {
    edges {
      node {
        id
        runs(first: 10) { edges { node { id status session { id } } } pageInfo { hasNextPage } }
        checkpoints { id runId }
        forkedFrom { id }
      }
    }
  }
}
"""

_counting: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("counting", default=None)


@contextmanager
def count_queries(db: Database) -> Iterator[list[str]]:
    """The statements this task (and the tasks it starts) sends; the server's own loops are left out."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen = _counting.get()
        if seen is not None:
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    token = _counting.set(statements)
    try:
        yield statements
    finally:
        _counting.reset(token)
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def tenant_with_sessions(db: Database, sessions: int, runs: int) -> Principal:
    """A new tenant with `sessions` sessions of `runs` runs each, all but the last started."""
    key = await create_key(db, tenant_name=f"counted-{uuid.uuid4().hex[:8]}", name=None)
    start = utcnow()
    async with db.session() as session:
        for s in range(sessions):
            row = await SessionRepository(session).create(
                session_id=str(uuid.uuid4()), tenant_id=key.tenant_id, title=f"s{s}", at=start
            )
            for r in range(runs):
                at = start + timedelta(milliseconds=s * 100 + r)
                run = await RunRepository(session).create(
                    run_id=str(uuid.uuid4()),
                    session_id=row.id,
                    tenant_id=key.tenant_id,
                    prompt=f"p{r}",
                    prompt_uuid=str(uuid.uuid4()),
                    options={},
                    api_key_id=key.key_id,
                    at=at,
                )
                # The last run never started (aborted while queued): a live dispatcher must not take it.
                started = r < runs - 1
                await RunRepository(session).transition(
                    run.id,
                    from_statuses=("QUEUED",),
                    values={
                        "status": "COMPLETED" if started else "INTERRUPTED",
                        "started_at": at if started else None,
                        "finished_at": at,
                    },
                )
        await session.commit()
    principal = await authenticate(db, key.secret)
    assert principal is not None
    return principal


async def test_sessions_with_runs_and_checkpoints_cost_the_same_for_5_or_20(stack: Stack) -> None:
    services = stack.api.services
    principal = await tenant_with_sessions(services.db, sessions=20, runs=3)
    schema = build_schema(stack.settings)
    counts, pages = [], []
    for first in (5, 20):
        with count_queries(services.db) as statements:
            result = await schema.execute(
                SESSIONS, {"first": first}, context_value=Context(services, principal)
            )
        assert result.errors is None, result.errors
        assert result.data is not None
        counts.append(len(statements))
        pages.append(result.data["sessions"]["edges"])
    # The page of sessions, the first page of runs of all of them, their checkpoints, and the runs'
    # sessions in one batch; forkedFrom of a session not forked reads nothing.
    assert counts == [4, 4], counts
    assert [len(page) for page in pages] == [5, 20]
    for edge in pages[1]:
        node = edge["node"]
        assert len(node["runs"]["edges"]) == 3
        assert {run["node"]["session"]["id"] for run in node["runs"]["edges"]} == {node["id"]}
        assert len(node["checkpoints"]) == 2


async def test_operations_on_one_websocket_do_not_share_loaders(stack: Stack) -> None:
    """A socket's context lives for hours: each operation must read afresh."""
    query = "query($id: ID!) { session(id: $id) { runs { edges { node { id } } } checkpoints { id } } }"
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        first = await start_ok(client, prompt="one")
        session_id = first["session"]["id"]
        before = await ws.execute(query, {"id": session_id})
        await start_ok(client, prompt="two", sessionId=session_id)
        after = await ws.execute(query, {"id": session_id})
        for edge in after["data"]["session"]["runs"]["edges"]:
            await wait_for_run(client, edge["node"]["id"])
    assert len(before["data"]["session"]["runs"]["edges"]) == 1
    assert len(after["data"]["session"]["runs"]["edges"]) == 2


async def test_a_session_events_subscription_checks_the_tenant_with_its_first_read(stack: Stack) -> None:
    """Its start reads the session's tenant with the replay's first page: no read of the session of its
    own (a transaction more, on every turn of a client that subscribes per turn)."""
    engine = stack.api.services.db.engine.sync_engine
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt="watch me")
        await wait_for_run(client, started["run"]["id"])
        event.listen(engine, "before_cursor_execute", record)
        try:
            sub = await watch(ws, started["session"]["id"])
            first = await sub.next(timeout=30)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        await sub.complete()

    assert first["data"]["sessionEvents"]["seq"] == 1
    assert [s for s in seen if s.startswith("SELECT sessions.")] == []
    assert len([s for s in seen if "FROM events" in s]) == 1
