"""The pump's commit, alone: latency of a 1-event append as the pump makes it, against the path before.

    .venv/bin/python -m benchmarks.commit_latency [--samples 300] [--stores sqlite,postgres]

Times EventLog.append's path (persistence/repositories/events.append_committed: a transaction of its own,
committed) for one event, fenced by a lease as a running session's pump is, against a frozen copy of the
path it replaced (`before`: an ORM session, EventRepository.append_alone, the session's commit; on
SQLite three trips to aiosqlite's thread, on PostgreSQL the same three round trips through the ORM). On
SQLite (a temporary file database, migrated as the app's) and on PostgreSQL (a fresh database on
127.0.0.1:5432, dropped after), each quiet and then beside a busy-loop process on each core (bounded in
time, stopped after), the two paths interleaved sample by sample (ABBA, so neither always goes first).

Prints p50/p95 in ms per path and the ratios (after / before). The machine is shared and noisy: compare
the ratios of one invocation, not figures across invocations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa

from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import AgentSession, Event, utcnow
from persistence.repositories.events import append_committed
from persistence.repositories.leases import Fence, StaleLease
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import TenantRepository

Items = Sequence[tuple[str | None, str, dict[str, Any]]]
_T = TypeVar("_T")

# --- The path before (commit bf4c5f0's EventLog.append and EventRepository.append_alone), frozen here. ---
_SESSIONS = cast(sa.Table, AgentSession.__table__).c
_EVENTS_TABLE = cast(sa.Table, Event.__table__)
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
_TAKE_SEQS = (
    sa.update(cast(sa.Table, AgentSession.__table__))
    .where(_SESSIONS.id == sa.bindparam("session_id"))
    .values(
        last_seq=_SESSIONS.last_seq + sa.bindparam("count", type_=sa.Integer),
        updated_at=sa.bindparam("at", type_=_SESSIONS.updated_at.type),
    )
    .returning(_SESSIONS.last_seq)
)
_TAKE_SEQS_FENCED = _TAKE_SEQS.where(
    _SESSIONS.lease_owner == sa.bindparam("owner"), _SESSIONS.lease_token == sa.bindparam("token")
)


async def append_before(
    db: Database, session_id: str, items: Items, *, at: datetime, fence: Fence
) -> list[int]:
    async with db.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            params: dict[str, Any] = {
                "session_id": session_id,
                "count": len(items),
                "at": at,
                "run_ids": [run_id for run_id, _, _ in items],
                "kinds": [kind for _, kind, _ in items],
                "payloads": [json.dumps(payload) for _, _, payload in items],
                "owner": fence.owner,
                "token": fence.token,
            }
            seqs = sorted((await session.execute(_APPEND_PG_FENCED, params)).scalars())
            if not seqs:
                raise StaleLease(session_id, fence)
        else:
            take = {"session_id": session_id, "count": len(items), "at": at, "owner": fence.owner}
            result = await session.execute(_TAKE_SEQS_FENCED, {**take, "token": fence.token})
            last = result.scalar_one_or_none()
            if last is None:
                raise StaleLease(session_id, fence)
            first = last - len(items) + 1
            await session.execute(
                sa.insert(_EVENTS_TABLE),
                [
                    {
                        "session_id": session_id,
                        "seq": first + i,
                        "run_id": run_id,
                        "kind": kind,
                        "payload": payload,
                        "created_at": at,
                    }
                    for i, (run_id, kind, payload) in enumerate(items)
                ],
            )
            seqs = list(range(first, last + 1))
        await session.commit()
    return seqs


async def append_after(
    db: Database, session_id: str, items: Items, *, at: datetime, fence: Fence
) -> list[int]:
    return await append_committed(db.engine, session_id, items, at=at, fence=fence)


# --- The measurement. ---
Append = Callable[..., Awaitable[list[int]]]
PATHS: dict[str, Append] = {"before": append_before, "after": append_after}
# An AssistantMessage of a short answer, about as the CLI sends one.
PAYLOAD: dict[str, Any] = {
    "type": "assistant",
    "message": {
        "id": "msg_01",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "The answer is 42, as the scripted model says every time."}],
        "usage": {"input_tokens": 12, "output_tokens": 14},
    },
    "parent_tool_use_id": None,
    "session_id": "0f8b3c8e-5b0e-4d36-9c2a-8c1f2f1d9a10",
}


async def _fenced_session(db: Database) -> tuple[str, Fence]:
    session_id = str(uuid.uuid4())
    async with db.session() as session:
        tenant = await TenantRepository(session).get_or_create(f"bench-{session_id}")
        await SessionRepository(session).create(
            session_id=session_id, tenant_id=tenant.id, title=None, at=utcnow()
        )
        await session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(lease_owner="bench", lease_token=7)
        )
        await session.commit()
    return session_id, Fence("bench", 7)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(db: Database, samples: int) -> dict[str, list[float]]:
    session_id, fence = await _fenced_session(db)
    items = [("run-1", "assistant", PAYLOAD)]
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    expected = 0
    for name in PATHS:  # warm both (pool, prepared statements), not timed
        expected = (await PATHS[name](db, session_id, items, at=utcnow(), fence=fence))[-1]
    for i in range(samples):
        order = list(PATHS) if i % 4 in (0, 3) else list(reversed(PATHS))
        for name in order:
            # As the pump's commit comes: after the loop was idle a moment, not back to back.
            await asyncio.sleep(0.002)
            started = time.perf_counter()
            seqs = await PATHS[name](db, session_id, items, at=utcnow(), fence=fence)
            times[name].append((time.perf_counter() - started) * 1000)
            expected += 1
            assert seqs == [expected], (seqs, expected)
    return times


@contextmanager
def cpu_load(seconds: float) -> Iterator[None]:
    """A busy loop on each core, each ending by itself after `seconds` at the latest."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    processes = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


async def _store(store: str, directory: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    if store == "sqlite":
        url = f"sqlite+aiosqlite:///{directory / 'commit_latency.sqlite3'}"

        async def nothing() -> None:
            return None

        return url, nothing
    from tests.support.servers import create_postgres_database, drop_postgres_database

    url = await create_postgres_database("caga_commit_latency")

    async def drop() -> None:
        await drop_postgres_database(url)

    return url, drop


async def each_store_and_load(
    stores: list[str],
    load_seconds: float,
    measure: Callable[[Database], Awaitable[_T]],
    report: Callable[[str, str, _T], None],
) -> None:
    """`measure` on a migrated database of each store, quiet and then beside a busy loop on each core
    (`cpu_load`), each result handed to `report` with its store and condition."""
    with tempfile.TemporaryDirectory() as directory:
        for store in stores:
            url, drop = await _store(store, Path(directory))
            try:
                await upgrade_head(url)
                db = Database(url)
                try:
                    for condition in ("quiet", "loaded"):
                        if condition == "loaded":
                            with cpu_load(load_seconds):
                                result = await measure(db)
                        else:
                            result = await measure(db)
                        report(store, condition, result)
                finally:
                    await db.dispose()
            finally:
                await drop()


async def run(stores: list[str], samples: int, load_seconds: float) -> None:
    print(f"1-event fenced appends, {samples} samples per path and condition, ms (after/before ratio)")
    await each_store_and_load(stores, load_seconds, lambda db: _measure(db, samples), _report)


def _report(store: str, condition: str, times: dict[str, list[float]]) -> None:
    before, after = times["before"], times["after"]
    cells = []
    for label, q in (("p50", 0.5), ("p95", 0.95)):
        b, a = percentile(before, q), percentile(after, q)
        cells.append(f"{label} {b:6.3f} -> {a:6.3f} ({a / b:4.2f}x)")
    mean_ratio = statistics.fmean(after) / statistics.fmean(before)
    print(f"{store:9} {condition:7} " + "   ".join(cells) + f"   mean ratio {mean_ratio:4.2f}x", flush=True)


def command_line(description: str | None, run: Callable[[list[str], int, float], Awaitable[None]]) -> None:
    """`run(stores, samples, load_seconds)` with the options this benchmark and its siblings take."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--load-seconds", type=float, default=120.0, help="upper bound of each load phase")
    args = parser.parse_args()
    asyncio.run(run(args.stores.split(","), args.samples, args.load_seconds))


def main() -> None:
    command_line(__doc__, run)


if __name__ == "__main__":
    main()
