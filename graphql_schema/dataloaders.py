"""Loaders: what nested fields read, batched per operation so a list costs a constant number of queries.

One `Loaders` per operation (`LoadersExtension` gives each operation a context of its own), never per
WebSocket: a socket lives for hours and its loaders would serve stale rows. Subscriptions get loaders
that batch but do not cache, since each event is resolved again long after the last.

A query reads through one database session for the whole operation (`Loaders.reading`), its root
fields and loaders in turn, closed when the operation ends: opening and closing a session (a pool
checkout, on PostgreSQL a pre-ping, and the rollback that returns the connection) for each root field and
each loader was an eighth of a read's CPU. That session only reads: on PostgreSQL it runs in autocommit,
without the BEGIN and ROLLBACK round trips around its statements (`Database.read_session`). Mutations and
subscriptions open a session per read as before (a mutation's reads must see what it just committed; a
subscription must not hold a connection for hours).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from persistence.database import Database
from persistence.models import AgentSession
from persistence.repositories.runs import ListedRun, RunRepository
from persistence.repositories.sessions import SessionRepository

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class RunsPage:
    """A page of a session's runs: `limit` rows after `after` (None: from the first)."""

    session_id: str
    after: tuple[datetime, str] | None
    limit: int


class Loaders:
    def __init__(
        self, db: Database, tenant_id: Callable[[], str], *, cache: bool = True, shared_session: bool = False
    ) -> None:
        self.db = db
        self._tenant_id = tenant_id
        self._shared_session = shared_session
        self._session: AsyncSession | None = None
        # The shared session serves one statement sequence at a time; root fields and loaders take turns.
        self._session_lock = asyncio.Lock()
        self.session: DataLoader[str, AgentSession | None] = DataLoader(self._sessions, cache=cache)
        self.runs_page: DataLoader[RunsPage, list[ListedRun]] = DataLoader(self._runs_pages, cache=cache)
        self.started_runs: DataLoader[str, list[ListedRun]] = DataLoader(self._started_runs, cache=cache)
        self.queue_position: DataLoader[tuple[datetime, str], int] = DataLoader(
            self._queue_positions, cache=cache
        )

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A database session to read with: the operation's own for a query, else a new one."""
        if not self._shared_session:
            async with self.db.session() as session:
                yield session
            return
        async with self._session_lock:
            if self._session is None:
                self._session = self.db.read_session()
            try:
                yield self._session
            except BaseException:
                # What failed must not leave an aborted transaction to the operation's next reads.
                await self._session.rollback()
                raise

    async def close(self) -> None:
        """Close the operation's shared session, if it opened one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _sessions(self, ids: list[str]) -> Sequence[AgentSession | None]:
        async with self.reading() as db:
            rows = await SessionRepository(db).get_many(ids, tenant_id=self._tenant_id())
        by_id = {row.id: row for row in rows}
        return [by_id.get(session_id) for session_id in ids]

    async def _runs_pages(self, keys: list[RunsPage]) -> Sequence[list[ListedRun]]:
        # First pages (the usual case) share one statement per page size; a page after a cursor is its
        # own query, since each session's cursor differs.
        found: dict[RunsPage, list[ListedRun]] = {}
        firsts: defaultdict[int, list[str]] = defaultdict(list)
        async with self.reading() as db:
            runs = RunRepository(db)
            for key in keys:
                if key.after is None:
                    firsts[key.limit].append(key.session_id)
                else:
                    found[key] = list(
                        await runs.list_for_session(key.session_id, after=key.after, limit=key.limit)
                    )
            for limit, session_ids in firsts.items():
                pages = await runs.first_pages(session_ids, limit=limit)
                for session_id, page in pages.items():
                    found[RunsPage(session_id, None, limit)] = page
        return [found[key] for key in keys]

    async def _started_runs(self, session_ids: list[str]) -> Sequence[list[ListedRun]]:
        async with self.reading() as db:
            found = await RunRepository(db).started_for_sessions(session_ids)
        return [found[session_id] for session_id in session_ids]

    async def _queue_positions(self, keys: list[tuple[datetime, str]]) -> Sequence[int]:
        async with self.reading() as db:
            found = await RunRepository(db).queue_positions(keys)
        return [found[run_id] for _, run_id in keys]


class LoadersExtension(SchemaExtension):
    """Gives each operation a context of its own with fresh loaders (the HTTP request's or the socket's
    context is shared by every operation on it)."""

    async def on_execute(self) -> AsyncIterator[None]:
        from graphql_schema.context import Context

        execution = self.execution_context
        if not isinstance(execution.context, Context):
            yield
            return
        kind = execution.operation_type
        operation = execution.context.for_operation(
            cache=kind is not OperationType.SUBSCRIPTION, shared_session=kind is OperationType.QUERY
        )
        execution.context = operation
        try:
            yield
        finally:
            await operation.loaders.close()
