"""Engines and sessions for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes are used
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from persistence.sqlite_driver import one_trip_dbapi


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> Path | None:
    path = sa.make_url(url).database
    return Path(path) if path and path != ":memory:" else None


# orjson turns an integer beyond 64 bits into a float where the standard library keeps it exact; a run of 19
# digits is the shortest text that can hold one. ASCII digits only (a JSON number has no others), spelled
# out: re finds this form by scanning for its first character, about twice as fast as `\d{19}`, whose
# search cost more than orjson's parse of the same payload.
_LONG_DIGITS = re.compile("[0-9]" * 19)


def load_json(text: str | bytes) -> Any:
    """JSON columns as the standard library reads them, at orjson's speed: decoding a page of events'
    payloads was a few per cent of the events query's CPU. What orjson refuses or would read otherwise
    (NaN and Infinity, lone surrogates, integers past 64 bits) is read by
    `json.loads`, so the values are the same either way."""
    if _LONG_DIGITS.search(text if isinstance(text, str) else text.decode()) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An engine configured for how this service uses each database."""
    if is_sqlite(url):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One trip to aiosqlite's thread per statement rather than four (persistence/sqlite_driver.py).
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, module=one_trip_dbapi(), json_deserializer=load_json
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (subscriptions replaying the log) run beside the one writer;
            # busy_timeout turns writer contention into waiting instead of "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # Last in, first out: at a low request rate the connection that just served serves again, instead of
    # the one idle longest, which (idle past PING_AFTER_IDLE_SECONDS once the pool holds a few) was pinged
    # first: three more round trips (BEGIN, the ping, ROLLBACK) before the request's own statements.
    engine = create_async_engine(
        url, echo=echo, pool_size=10, max_overflow=20, pool_use_lifo=True, json_deserializer=load_json
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection idle longer than this is pinged before it is handed out. SQLAlchemy's pool_pre_ping
# pinged on every checkout: a round trip before each transaction, 1-3 ms of a follow-up's path on a
# loaded machine, for connections that had just been used. A connection used within the last second is
# trusted; if it died meanwhile, its first statement fails as a disconnect and SQLAlchemy invalidates
# the whole pool, so every other connection of before is replaced at its next checkout (what a failed
# ping does too). A restart of the database takes longer than this, so a connection that lived through
# one is pinged.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN = "caga_checked_in"


def _ping_when_idle(engine: AsyncEngine) -> None:
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # a new connection, or one that has just served
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # As pool_pre_ping does: replace this connection and every other one older than now.
            raise sa_exc.InvalidatePoolError() from exc


# What "the database cannot be reached right now" looks like, measured against a PostgreSQL that was
# stopped and restarted: a refused connect is a bare ConnectionRefusedError, a connection closed under a
# statement is an InterfaceError with connection_invalidated, a server still starting is
# CannotConnectNowError; SQLite's lock timeout is an OperationalError. Anything else is a bug or bad data.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.TimeoutError,  # the pool's
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def is_unavailable(error: BaseException) -> bool:
    """True when ``error`` means the database is unreachable for now: worth retrying, not worth a trace.

    SQLAlchemy wraps the driver's error (a plain DBAPIError whose cause is, say, asyncpg's
    CannotConnectNowError "the database system is shutting down"), so the causes are looked at too."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE):
            return True
        orig = getattr(current, "orig", None) if isinstance(current, sa_exc.DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _reading_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for sessions that only read: on PostgreSQL its connections run in autocommit.

    A transaction costs a query two round trips of its own, the BEGIN before its first statement and the
    ROLLBACK that returns the connection: timed in-process on the loaded two-core box, 2.5 ms of a
    `sessions` query's 11 ms mean, as much as its two statements. It buys a query nothing: under READ
    COMMITTED (PostgreSQL's default, and this service's) each statement reads its own snapshot inside a
    transaction or not. The same pool serves both; the isolation level is set at checkout and reset at
    checkin, without a round trip.
    SQLite starts no transaction for a SELECT anyway."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class Database:
    """The engine and a session factory. Repositories flush; the unit of work commits."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = async_sessionmaker(_reading_engine(self.engine), expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def read_session(self) -> AsyncSession:
        """A session for reads only (a query's): nothing it does is committed or rolled back, each statement
        stands alone (`_reading_engine`)."""
        return self.read_sessionmaker()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that rolls back on error; callers commit."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
