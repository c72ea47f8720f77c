"""Log re-reads shared by a replica's subscriptions of one session (one catch-up per session, not per
subscriber).

A live subscription re-reads the log when it was quiet for CATCHUP_POLL_SECONDS, when the bus reports
RESYNC, and when it sees a hole. With a hundred idle watchers of a session that was a hundred reads of the
same rows every interval. Here a subscription asks for "everything after my last seq, read no earlier
than T"; any read of that session that started at or after T from a cursor at or before its last seq
answers it (a read covers every event committed before it started), so concurrent and recent requests
share one query:

- quiet: T is one interval ago. An event whose wake-up was lost just after a shared read started is found
  by the next interval's read, so such an event waits at most two intervals instead of one.
- RESYNC: T is when the bus marked the watcher (every watcher of a replica at once after a reconnect).
- a hole: T is when the hole was seen.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from api.events.db_retry import until_database_answers
from api.events.records import EventRecord

if TYPE_CHECKING:
    from api.events.log import EventLog


@dataclass(eq=False)
class _Read:
    after: int
    started: float
    task: asyncio.Task[list[EventRecord]]


@dataclass(eq=False)
class _Session:
    users: int = 0
    reads: list[_Read] = field(default_factory=list)


class SharedLogReads:
    """Per replica (one per EventLog): the recent and running catch-up reads of each watched session."""

    def __init__(self, event_log: EventLog, *, keep: int = 4) -> None:
        self._log = event_log
        self._keep = keep
        self._sessions: dict[str, _Session] = {}
        self.queries = 0  # log reads started, for tests and diagnostics

    def join(self, session_id: str) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _Session()
        state.users += 1

    def leave(self, session_id: str) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            return
        state.users -= 1
        if state.users <= 0:
            del self._sessions[session_id]
            for read in state.reads:
                read.task.cancel()

    async def after(
        self, session_id: str, last: int, *, not_before: float, page_size: int
    ) -> list[EventRecord]:
        """Every durable event with seq > last, from a read that started at or after ``not_before``
        (event-loop time)."""
        state = self._sessions.get(session_id)
        if state is None:  # not joined: nothing to share with
            return await self._read(session_id, last, page_size)
        chosen = next((r for r in reversed(state.reads) if r.started >= not_before and r.after <= last), None)
        if chosen is None or (chosen.task.done() and (chosen.task.cancelled() or chosen.task.exception())):
            chosen = _Read(
                last,
                asyncio.get_running_loop().time(),
                asyncio.create_task(self._read(session_id, last, page_size), name=f"catchup:{session_id}"),
            )
            state.reads.append(chosen)
            del state.reads[: -self._keep]
        records = await asyncio.shield(chosen.task)
        return [record for record in records if record.seq > last]

    async def _read(self, session_id: str, after_seq: int, page_size: int) -> list[EventRecord]:
        self.queries += 1
        found: list[EventRecord] = []
        cursor = after_seq
        while True:
            page = await until_database_answers(
                partial(self._log.read, session_id, cursor, page_size),
                what="session_events",
                session_id=session_id,
            )
            found.extend(page)
            if page:
                cursor = page[-1].seq
            if len(page) < page_size:
                return found
