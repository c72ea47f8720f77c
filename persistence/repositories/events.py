"""The per-session event log: append with gapless seq allocation, read by cursor."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from persistence.models import AgentSession, Event
from persistence.repositories.leases import Fence, StaleLease
from persistence.sqlite_driver import run_committed

# The `events` query's statements, built once with their values as parameters (building them and their
# cache keys on every read was a noticeable share of its CPU), and with the tables' columns rather than
# the mapped classes' attributes: a statement of the ORM's goes through its compile and result setup on
# every execution even when it loads no object.
_SESSIONS = cast(sa.Table, AgentSession.__table__).c
_EVENTS = cast(sa.Table, Event.__table__).c
_TENANTS_SESSION = sa.select(_SESSIONS.id).where(
    _SESSIONS.id == sa.bindparam("session_id"), _SESSIONS.tenant_id == sa.bindparam("tenant_id")
)
_PAGE: sa.Select[Any] = (
    sa.select(
        _EVENTS.session_id, _EVENTS.seq, _EVENTS.run_id, _EVENTS.kind, _EVENTS.payload, _EVENTS.created_at
    )
    .where(_EVENTS.session_id == sa.bindparam("session_id"), _EVENTS.seq > sa.bindparam("after_seq"))
    .order_by(_EVENTS.seq)
    .limit(sa.bindparam("limit"))
)
# A row of _PAGE: (session_id, seq, run_id, kind, payload, created_at).
LogRow = sa.Row[str, int, str | None, str, Any, datetime]
# The page only if the session is the tenant's: the check rides along with the page (PostgreSQL runs the
# EXISTS once, as an InitPlan), so a page that has events costs one round trip, not two.
_TENANTS_PAGE: sa.Select[Any] = _PAGE.where(sa.exists(_TENANTS_SESSION))
_INSERT = cast(sa.Table, Event.__table__).insert()


# The pump's append on PostgreSQL (append_committed): the seq allocation (fenced or not) and
# the inserts as one statement. Items come as arrays, so the text, and the server's prepared statement,
# is the same whatever a batch's size.
_APPEND_ONE_STATEMENT = """
WITH taken AS (
    UPDATE sessions SET last_seq = last_seq + :count, updated_at = :at
    WHERE id = :session_id{fence}
    RETURNING last_seq
)
INSERT INTO events (session_id, seq, run_id, kind, payload, created_at)
SELECT :session_id, taken.last_seq - :count + item.n, item.run_id, item.kind, CAST(item.payload AS JSONB), :at
FROM taken, unnest(CAST(:run_ids AS VARCHAR[]), CAST(:kinds AS VARCHAR[]), CAST(:payloads AS TEXT[]))
    WITH ORDINALITY AS item(run_id, kind, payload, n)
RETURNING seq
"""
_APPEND_PG = sa.text(_APPEND_ONE_STATEMENT.format(fence=""))
_APPEND_PG_FENCED = sa.text(
    _APPEND_ONE_STATEMENT.format(fence=" AND lease_owner = :owner AND lease_token = :token")
)
# append_committed's statements on SQLite, as sqlite3 runs them on aiosqlite's thread (the values are
# processed by the columns' own types first: the rows are those SQLAlchemy's INSERT would write).
_TAKE_SEQS_SQLITE = (
    "UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ?{fence} RETURNING last_seq"
)
_TAKE_SEQS_SQLITE_PLAIN = _TAKE_SEQS_SQLITE.format(fence="")
_TAKE_SEQS_SQLITE_FENCED = _TAKE_SEQS_SQLITE.format(fence=" AND lease_owner = ? AND lease_token = ?")
_INSERT_SQLITE = (
    "INSERT INTO events (session_id, seq, run_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)

Items = Sequence[tuple[str | None, str, dict[str, Any]]]


def _processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any]:
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)


@functools.lru_cache(maxsize=16)
def _sqlite_processors(dialect: sa.Dialect) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """How the events' payload and created_at columns write a value on this dialect (the sessions'
    updated_at is of created_at's type)."""
    return _processor(_EVENTS.payload, dialect), _processor(_EVENTS.created_at, dialect)


async def append_committed(
    engine: AsyncEngine, session_id: str, items: Items, *, at: datetime, fence: Fence | None = None
) -> list[int]:
    """As EventRepository.append, in a transaction of its own, committed before it returns: the seqs taken,
    in the items' order. For the pump's commits, one or more per turn, on the path of a turn's first
    answer: no ORM unit of work, and as few hand-offs as each driver allows.

    A writer cancelled before its commit went out writes nothing, so a run's outcome written after its
    pump was cancelled (SessionActor._disconnect_within) is the log's last event. Outside a transaction,
    a statement already sent when its writer was cancelled could land after that outcome
    (tests/streaming/test_lossless.py, a replica shut down mid-run).

    On PostgreSQL one statement (the fenced or plain seq allocation and the inserts): BEGIN, the
    statement, COMMIT. The session row's lock is held from the statement to the commit. On SQLite the
    UPDATE … RETURNING, the INSERT and the COMMIT in one trip to aiosqlite's thread
    (persistence/sqlite_driver.run_committed, which keeps the cancellation's guarantee); the UPDATE takes
    the database's write lock, held to the commit."""
    if not items:
        return []
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return await _append_pg(connection, session_id, items, at=at, fence=fence)
        return await _append_sqlite(connection, session_id, items, at=at, fence=fence)


async def _append_pg(
    connection: AsyncConnection, session_id: str, items: Items, *, at: datetime, fence: Fence | None
) -> list[int]:
    params: dict[str, Any] = {
        "session_id": session_id,
        "count": len(items),
        "at": at,
        "run_ids": [run_id for run_id, _, _ in items],
        "kinds": [kind for _, kind, _ in items],
        # As the JSONB column's own bind processing writes them (json.dumps).
        "payloads": [json.dumps(payload) for _, _, payload in items],
    }
    statement = _APPEND_PG
    if fence is not None:
        params.update(owner=fence.owner, token=fence.token)
        statement = _APPEND_PG_FENCED
    seqs = sorted((await connection.execute(statement, params)).scalars())
    if not seqs:
        if fence is not None:
            raise StaleLease(session_id, fence)
        raise sa.exc.NoResultFound(f"no session {session_id}")
    await connection.commit()
    return seqs


async def _append_sqlite(
    connection: AsyncConnection, session_id: str, items: Items, *, at: datetime, fence: Fence | None
) -> list[int]:
    process_payload, process_time = _sqlite_processors(connection.dialect)
    written_at = process_time(at)
    count = len(items)
    if fence is None:
        take: tuple[str, tuple[Any, ...]] = (_TAKE_SEQS_SQLITE_PLAIN, (count, written_at, session_id))
    else:
        take = (_TAKE_SEQS_SQLITE_FENCED, (count, written_at, session_id, fence.owner, fence.token))
    # Encoded here rather than on the thread, which holds the database's write lock while it runs.
    values = [(run_id, kind, process_payload(payload)) for run_id, kind, payload in items]

    def work(sqlite: sqlite3.Connection) -> int:
        try:
            taken = sqlite.execute(*take).fetchall()
            if not taken:
                if fence is not None:
                    raise StaleLease(session_id, fence)
                raise sa.exc.NoResultFound(f"no session {session_id}")
            first = taken[0][0] - count + 1
            sqlite.executemany(
                _INSERT_SQLITE,
                [(session_id, first + n, *value, written_at) for n, value in enumerate(values)],
            )
        except sqlite3.Error as exc:
            # As SQLAlchemy raises a driver's error (is_unavailable reads these).
            raise sa.exc.DBAPIError.instance(_INSERT_SQLITE, None, exc, sqlite3.Error) from exc
        return cast(int, taken[0][0])

    last = await run_committed(connection, work)
    return list(range(last - count + 1, last + 1))


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(
        self,
        session_id: str,
        items: Sequence[tuple[str | None, str, dict[str, Any]]],
        *,
        at: datetime,
        fence: Fence | None = None,
    ) -> list[Event]:
        """Append `(run_id, kind, payload)` items with the next seqs, in one statement pair.

        The UPDATE … RETURNING takes the session row's lock until commit, so two writers cannot
        interleave: seqs are gapless and committed in order. With a `fence` (a lease holder's write)
        the same UPDATE checks the lease's token, and StaleLease means nothing was written.
        """
        if not items:
            return []
        last = await self._take_seqs(session_id, len(items), at, fence)
        return await self.insert_numbered(session_id, items, last=last, at=at)

    async def _take_seqs(self, session_id: str, count: int, at: datetime, fence: Fence | None) -> int:
        """Take `count` seqs from the session's row (locking it until commit); the last one taken.

        Through the ORM's UPDATE, which also brings a session object the caller's unit of work loaded
        up to date (what it answers may show the new lastSeq)."""
        condition = AgentSession.id == session_id
        if fence is not None:
            condition = sa.and_(condition, fence.matches())
        result = await self.session.execute(
            sa.update(AgentSession)
            .where(condition)
            .values(last_seq=AgentSession.last_seq + count, updated_at=at)
            .returning(AgentSession.last_seq)
        )
        last: int | None = result.scalar_one_or_none()
        if last is None:
            if fence is not None:
                raise StaleLease(session_id, fence)
            raise sa.exc.NoResultFound(f"no session {session_id}")
        return last

    async def insert_numbered(
        self,
        session_id: str,
        items: Sequence[tuple[str | None, str, dict[str, Any]]],
        *,
        last: int,
        at: datetime,
    ) -> list[Event]:
        """Insert events whose seqs the caller took from the session's row in this transaction (`last`:
        the last one taken). A Core INSERT, at once: the events returned are not in the unit of work,
        whose flush of them cost more CPU than the statement."""
        first = last - len(items) + 1
        rows = [
            {
                "session_id": session_id,
                "seq": first + i,
                "run_id": run_id,
                "kind": kind,
                "payload": payload,
                "created_at": at,
            }
            for i, (run_id, kind, payload) in enumerate(items)
        ]
        await self.session.execute(_INSERT, rows)
        return [Event(**row) for row in rows]

    async def list_after(self, session_id: str, after_seq: int, limit: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq)
            .order_by(Event.seq)
            .limit(limit)
        )
        return result.scalars().all()

    async def page_of_tenant(
        self, session_id: str, after_seq: int, limit: int, *, tenant_id: str
    ) -> Sequence[LogRow] | None:
        """Up to `limit` events with seq > `after_seq` as plain rows (session_id, seq, run_id, kind,
        payload, created_at), or None when the session does not exist or belongs to another tenant.

        For the `events` query: the check and the page in one statement, and rows rather than ORM objects
        (a page of 100 is read-only; building and tracking 100 objects was a noticeable share of the
        query's CPU). Only an empty page asks whether the session is there at all: a second statement,
        at the end of a log or for someone else's session."""
        identity = {"session_id": session_id, "tenant_id": tenant_id}
        result = await self.session.execute(
            _TENANTS_PAGE, {**identity, "after_seq": after_seq, "limit": limit}
        )
        rows = cast(Sequence[LogRow], result.all())
        if not rows and (await self.session.execute(_TENANTS_SESSION, identity)).first() is None:
            return None
        return rows

    async def list_range(self, session_id: str, after_seq: int, up_to_seq: int) -> Sequence[Event]:
        result = await self.session.execute(
            sa.select(Event)
            .where(Event.session_id == session_id, Event.seq > after_seq, Event.seq <= up_to_seq)
            .order_by(Event.seq)
        )
        return result.scalars().all()
