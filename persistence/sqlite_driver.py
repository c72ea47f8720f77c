"""SQLAlchemy's aiosqlite adapter, with each statement taking one trip to aiosqlite's thread instead of four.

aiosqlite runs every call on its connection's own thread; SQLAlchemy's adapter makes four such calls per
statement (open a cursor, execute, fetch all, close the cursor), each a queue put, a thread wake-up and a
future resolved back on the event loop. Under read load those hand-offs were about a sixth of the
server's CPU on the embedded store. Here the cursor is opened, executed, drained and closed in one call
on that thread, and the adapter keeps what SQLAlchemy reads afterwards (description, rowcount,
lastrowid, the rows).

A rollback or commit with no transaction open (what every read leaves when its session returns the
connection to the pool) takes no trip at all: sqlite3 would do nothing with it.

The statements, their parameters, transactions and errors are the ones the stock adapter sends and
raises; server-side (streaming) cursors are left to the stock adapter. It reaches into aiosqlite's
`_execute` and `_conn`, as SQLAlchemy's own adapter does for its isolation level.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT

_T = TypeVar("_T")

# description, rowcount, lastrowid, rows
_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(connection: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement runs (and whose sqlite3 cursor opens and closes) in one call
    on aiosqlite's thread."""

    __slots__ = ("_outcome",)

    def __init__(self, adapt_connection: Any) -> None:  # no call to aiosqlite here: no cursor to open
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._outcome: _Outcome = (None, -1, None, [])

    @property
    def description(self) -> Any:
        return self._outcome[0]

    @property
    def rowcount(self) -> int:
        return self._outcome[1]

    @property
    def lastrowid(self) -> int:
        return self._outcome[2]  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None

    async def _async_soft_close(self) -> None:
        return None  # the sqlite3 cursor is closed already; the rows and description stay here

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            self._outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters
            )
            self._rows = collections.deque(self._outcome[3])
            return self

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            run = connection._execute(  # type: ignore[no-untyped-call]
                _run_many, connection._conn, operation, seq_of_parameters
            )
            self._outcome = await run
            return self


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor

    def _idle(self) -> bool:
        # sqlite3 reads its autocommit flag without a thread check; sqlite3's own rollback and commit do
        # nothing when it is set (no transaction open: what a read leaves), so neither needs the trip.
        raw: sqlite3.Connection | None = getattr(self._connection, "_connection", None)
        return raw is not None and not raw.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """Pass as `module=` to create_async_engine for a sqlite+aiosqlite URL."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)


class _Abandoned(Exception):
    """The caller was cancelled before the thread reached the commit: rolled back instead."""


async def run_committed(connection: AsyncConnection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """`work` on the connection's sqlite3 connection, then its commit, in one trip to aiosqlite's thread
    (one thread hand-off instead of one per statement and one for the commit); rolled back if `work` raises.

    A caller cancelled before the thread reached the commit writes nothing, as with a commit of its own
    that had not gone out yet: the cancellation marks the work abandoned, and the thread checks that
    mark after `work` and rolls back. So what another connection writes after the cancellation lands
    after this work or without it, never before it: either `work` took the database's write lock first
    (the other writer waits for this commit or rollback), or it waits for the other writer's commit,
    which goes out a thread trip after the cancellation at the earliest, when the mark is set already
    (the cancelled task receives its CancelledError at the loop's next turn and sets it there).

    `connection` must not be in a transaction of SQLAlchemy's (nothing executed on it yet)."""
    raw = await connection.get_raw_connection()
    adapter = cast(OneTripConnection, raw.dbapi_connection)
    driver = cast(aiosqlite.Connection, raw.driver_connection)
    abandoned = threading.Event()

    def run() -> _T:
        sqlite = driver._conn
        try:
            result = work(sqlite)
            if abandoned.is_set():
                raise _Abandoned
        except BaseException:
            sqlite.rollback()
            raise
        sqlite.commit()
        return result

    async with adapter._execute_mutex:
        try:
            return cast(_T, await driver._execute(run))  # type: ignore[no-untyped-call]
        except asyncio.CancelledError:
            abandoned.set()
            raise
