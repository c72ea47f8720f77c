"""startRun's transaction for a follow-up begun on its live CLI, alone: its CPU and latency, then and now.

    .venv/bin/python -m benchmarks.start_transaction [--samples 300] [--stores sqlite,postgres]

A follow-up's prompt goes to its CLI before its run is committed (SessionActor.send_ahead), so the CPU of
the transaction that writes the run is taken from the agent's own turn on a small machine: about 10 ms of
a 50 ms follow-up on SQLite, measured at stop 12 (issue 10). This times the statements RunControl's
_write_run makes for such a run, as the repositories make them now (`after`: statements built once with
their values as parameters; the run, its two events and the audit entry written with Core INSERTs; the
session's row answered by the lease claim instead of read again), against a frozen copy of the path
before (`before`: statements built on every call, ORM objects flushed, the session read again).

Both paths run the same statements in the same order on a real database (SQLite in a temporary file, or
a fresh PostgreSQL database on 127.0.0.1:5432, dropped after), migrated as the app's, quiet and then
beside a busy loop on each core (bounded in time, stopped after), interleaved sample by sample (ABBA).
What is printed: p50 of the CPU the process spent (the driver's thread included) and of the wall time,
per path, and the ratios (after / before). Compare the ratios of one invocation, not figures across
invocations: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from api.auth import Principal
from benchmarks.commit_latency import command_line, each_store_and_load, percentile
from persistence.database import Database
from persistence.models import AgentSession, AuditEntry, Event, Run, Webhook, utcnow
from persistence.repositories.audit import AuditRepository
from persistence.repositories.events import EventRepository
from persistence.repositories.leases import LeaseRepository, db_later, db_now
from persistence.repositories.runs import ACTIVE_STATUSES, RunRepository
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import ApiKeyRepository, TenantRepository
from persistence.repositories.webhooks import WebhookRepository

REPLICA = "bench-replica"
TTL_SECONDS = 30.0
OPTIONS: dict[str, Any] = {"model": "claude-sonnet-4-5", "permissionMode": "default", "maxTurns": 20}
STATUSES = ("QUEUED", "RUNNING")


async def _before(db: Database, principal: Principal, session_id: str, now: datetime) -> str:
    """The follow-up's transaction as commit 8d3e4a6 made it (RunControl._write_run and the repositories),
    frozen here."""
    async with db.session() as session:
        rows = (
            await session.execute(
                sa.select(AgentSession, Run.id)
                .outerjoin(Run, sa.and_(Run.session_id == AgentSession.id, Run.status.in_(ACTIVE_STATUSES)))
                .where(AgentSession.id == session_id, AgentSession.tenant_id == principal.tenant_id)
                .order_by(Run.created_at, Run.id)
                .execution_options(populate_existing=True)
            )
        ).all()
        row = rows[0][0]
        run = Run(
            id=str(uuid.uuid4()),
            session_id=row.id,
            tenant_id=principal.tenant_id,
            status="RUNNING",
            prompt="And now in one word?",
            prompt_uuid=str(uuid.uuid4()),
            options=OPTIONS,
            api_key_id=principal.api_key_id,
            created_at=now,
            replica=REPLICA,
            started_at=now,
        )
        session.add(run)
        await session.flush()
        await TenantRepository(session).lock(principal.tenant_id)
        queued = sa.func.coalesce(sa.func.sum(sa.case((Run.status == "QUEUED", 1), else_=0)), 0)
        (
            await session.execute(
                sa.select(queued, sa.func.count())
                .select_from(Run)
                .where(Run.tenant_id == principal.tenant_id, Run.status.in_(ACTIVE_STATUSES))
            )
        ).one()
        dialect = session.get_bind().dialect.name
        lapsed = sa.or_(
            AgentSession.lease_expires_at.is_(None), AgentSession.lease_expires_at < db_now(dialect)
        )
        claimable = sa.or_(AgentSession.lease_owner.is_(None), AgentSession.lease_owner == REPLICA, lapsed)
        ours_and_live = sa.and_(AgentSession.lease_owner == REPLICA, sa.not_(lapsed))
        claimed = (
            await session.execute(
                sa.update(AgentSession)
                .where(AgentSession.id == row.id, claimable)
                .values(
                    lease_owner=REPLICA,
                    lease_expires_at=db_later(dialect, TTL_SECONDS),
                    lease_token=sa.case(
                        (ours_and_live, AgentSession.lease_token), else_=AgentSession.lease_token + 1
                    ),
                )
                .execution_options(synchronize_session=False)
                .values(status="RUNNING", updated_at=now, last_seq=AgentSession.last_seq + len(STATUSES))
                .returning(AgentSession.lease_token, AgentSession.last_seq)
            )
        ).one()
        first = int(claimed[1]) - len(STATUSES) + 1
        session.add_all(
            [
                Event(
                    session_id=row.id,
                    seq=first + i,
                    run_id=run.id,
                    kind="RUN_STATUS",
                    payload={"status": status},
                    created_at=now,
                )
                for i, status in enumerate(STATUSES)
            ]
        )
        (
            await session.execute(sa.select(Webhook.events).where(Webhook.tenant_id == principal.tenant_id))
        ).all()
        session.add(
            AuditEntry(
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                action="run.follow_up",
                target_type="Run",
                target_id=run.id,
                details={"sessionId": row.id, "onBusy": "QUEUE", "promptChars": 20},
                at=utcnow(),
            )
        )
        await session.flush()
        fresh = await session.get(AgentSession, row.id, populate_existing=True)
        await session.commit()
    assert fresh is not None
    assert fresh.status == "RUNNING"
    return run.id


async def _after(db: Database, principal: Principal, session_id: str, now: datetime) -> str:
    """The follow-up's transaction as RunControl._write_run makes it now, through the repositories."""
    async with db.session() as session:
        runs = RunRepository(session)
        found = await runs.session_and_active_runs(session_id, tenant_id=principal.tenant_id)
        assert found is not None
        row, _ = found
        run = await runs.create(
            run_id=str(uuid.uuid4()),
            session_id=row.id,
            tenant_id=principal.tenant_id,
            prompt="And now in one word?",
            prompt_uuid=str(uuid.uuid4()),
            options=OPTIONS,
            api_key_id=principal.api_key_id,
            at=now,
            started_on=REPLICA,
        )
        await TenantRepository(session).lock(principal.tenant_id)
        await runs.count_queued_and_active_for_tenant(principal.tenant_id)
        claimed = await LeaseRepository(session).claim_to_run(
            row.id, REPLICA, ttl_seconds=TTL_SECONDS, at=now, seqs=len(STATUSES)
        )
        assert claimed is not None
        await EventRepository(session).insert_numbered(
            row.id,
            [(run.id, "RUN_STATUS", {"status": status}) for status in STATUSES],
            last=claimed.last_seq,
            at=now,
        )
        await WebhookRepository(session).events_of_tenant(principal.tenant_id)
        await AuditRepository(session).add(
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="run.follow_up",
            target_type="Run",
            target_id=run.id,
            details={"sessionId": row.id, "onBusy": "QUEUE", "promptChars": 20},
            at=utcnow(),
        )
        fresh = claimed.session
        await session.commit()
    assert fresh.status == "RUNNING"
    return run.id


Path_ = Callable[[Database, Principal, str, datetime], Awaitable[str]]
PATHS: dict[str, Path_] = {"before": _before, "after": _after}


async def _principal_and_session(db: Database) -> tuple[Principal, str]:
    async with db.session() as session:
        tenant = await TenantRepository(session).get_or_create(f"bench-{uuid.uuid4()}")
        key = await ApiKeyRepository(session).create(
            tenant_id=tenant.id, name="bench", prefix=uuid.uuid4().hex[:12], key_hash="-"
        )
        row = await SessionRepository(session).create(
            session_id=str(uuid.uuid4()), tenant_id=tenant.id, title="bench", at=utcnow()
        )
        await session.commit()
    return Principal(tenant_id=tenant.id, tenant_name=tenant.name, api_key_id=key.id), row.id


async def _finish(db: Database, run_id: str) -> None:
    """The run ends, as its turn would, so the next follow-up finds the session idle."""
    async with db.session() as session:
        await session.execute(sa.update(Run).where(Run.id == run_id).values(status="SUCCEEDED"))
        await session.execute(sa.update(AgentSession).values(status="IDLE"))
        await session.commit()


async def _measure(db: Database, samples: int) -> dict[str, tuple[list[float], list[float]]]:
    principal, session_id = await _principal_and_session(db)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in PATHS}
    for name in PATHS:  # warm both (pool, statement caches), not timed
        await _finish(db, await PATHS[name](db, principal, session_id, utcnow()))
    for i in range(samples):
        order = list(PATHS) if i % 4 in (0, 3) else list(reversed(PATHS))
        for name in order:
            # As a follow-up comes: after the loop was idle a moment, not back to back.
            await asyncio.sleep(0.002)
            cpu, wall = time.process_time(), time.perf_counter()
            run_id = await PATHS[name](db, principal, session_id, utcnow())
            times[name][0].append((time.process_time() - cpu) * 1000)
            times[name][1].append((time.perf_counter() - wall) * 1000)
            await _finish(db, run_id)
    return times


def _report(store: str, condition: str, times: dict[str, tuple[list[float], list[float]]]) -> None:
    cells = []
    for label, index in (("cpu", 0), ("wall", 1)):
        before, after = times["before"][index], times["after"][index]
        b, a = percentile(before, 0.5), percentile(after, 0.5)
        mean = statistics.fmean(after) / statistics.fmean(before)
        cells.append(f"{label} p50 {b:6.3f} -> {a:6.3f} ms ({a / b:4.2f}x, mean {mean:4.2f}x)")
    print(f"{store:9} {condition:7} " + "   ".join(cells), flush=True)


async def run(stores: list[str], samples: int, load_seconds: float) -> None:
    print(f"startRun's transaction for a follow-up begun here, {samples} samples per path and condition")
    await each_store_and_load(stores, load_seconds, lambda db: _measure(db, samples), _report)


def main() -> None:
    command_line(__doc__, run)


if __name__ == "__main__":
    main()
