"""A client that reads a run as over and sends the session's next turn at once gets it begun in startRun's
transaction (docs/architecture.md, decision 13), even while the run's actor is still writing that outcome:
other connections read the outcome as committed before the actor's commit returns to it (seen: a follow-up
QUEUED on a loaded machine; 30 follow-ups each sent as the last run read over: 1-3 QUEUED on SQLite, 12-23
on PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Update, event
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.util import await_only

from api.runtime.lifecycle import TERMINAL
from tests.conftest import Stack
from tests.documents import RUN, start_ok, wait_for_run


@asynccontextmanager
async def held_in_outcome_commit(run_id: str) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """(reached, release): the commit that writes `run_id`'s outcome waits, once it is done in the
    database (every other connection reads the run as over) and before it returns to the actor, for
    `release`; `reached` is set then. What a loaded machine stretches at random, here every time."""
    reached, release, resumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    writing: weakref.WeakSet[Session] = weakref.WeakSet()

    def on_execute(state: ORMExecuteState) -> None:
        if isinstance(state.statement, Update):
            params = state.statement.compile().params
            if params.get("status") in TERMINAL and run_id in params.values():
                writing.add(state.session)

    def on_commit(session: Session) -> None:
        if session in writing:
            writing.discard(session)
            reached.set()
            # Inside SQLAlchemy's greenlet: the actor's task waits here, the event loop goes on.
            await_only(release.wait())
            resumed.set()

    event.listen(Session, "do_orm_execute", on_execute)
    event.listen(Session, "after_commit", on_commit)
    try:
        yield reached, release
    finally:
        release.set()
        if reached.is_set():
            # Not while SQLAlchemy iterates the listeners for the held commit.
            await asyncio.wait_for(resumed.wait(), timeout=30)
        event.remove(Session, "do_orm_execute", on_execute)
        event.remove(Session, "after_commit", on_commit)


async def test_a_follow_up_sent_as_the_run_reads_over_begins_at_once(stack: Stack) -> None:
    # Long enough that the hold is in place before the run can end.
    slow = "[scenario]" + json.dumps(
        {"steps": [{"delay_ms": 300, "content": [{"type": "text", "text": "slow"}]}]}
    )
    async with stack.client() as client:
        first = await start_ok(client, prompt="first turn")
        session_id = first["session"]["id"]
        await wait_for_run(client, first["run"]["id"])
        second = await start_ok(client, prompt=slow, sessionId=session_id)
        assert second["run"]["status"] == "RUNNING"
        async with held_in_outcome_commit(second["run"]["id"]) as (reached, release):
            await asyncio.wait_for(reached.wait(), timeout=30)
            # Over for every client, while its actor's commit has not returned.
            assert (await client.execute(RUN, {"id": second["run"]["id"]}))["run"]["status"] == "COMPLETED"
            third = await start_ok(client, prompt="third turn", sessionId=session_id, onBusy="REJECT")
            assert third["run"]["status"] == "RUNNING"
            release.set()
        done = await wait_for_run(client, third["run"]["id"])
    assert done["status"] == "COMPLETED"
    assert done["result"]["result"] == "You said: third turn"
